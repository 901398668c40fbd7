"""Shard files of a document store, read through a memory map, and the int8 per-token quantisation they may hold.

A shard is a safetensors file: one (tokens, dim) tensor per field, documents packed back to back, and a
`lengths` vector. An int8 shard holds, beside each field, `<field>.scale`: one float32 scale per token (symmetric
quantisation of each token vector). Shards are mapped, not loaded: the operating system reads the pages a gather
touches, so opening a store of millions of documents costs nothing and a gather reads only its rows.
"""

from __future__ import annotations

import json
import mmap
import struct
from pathlib import Path

import numpy as np
import torch

from micebench.errors import MicebenchError

#: safetensors dtype -> (numpy dtype used to read the bytes, torch dtype they hold); bf16 is read as raw int16
DTYPES: dict[str, tuple[np.dtype, torch.dtype]] = {
    "F32": (np.dtype("<f4"), torch.float32),
    "F16": (np.dtype("<f2"), torch.float16),
    "BF16": (np.dtype("<i2"), torch.bfloat16),
    "I8": (np.dtype("i1"), torch.int8),
    "I32": (np.dtype("<i4"), torch.int32),
    "I64": (np.dtype("<i8"), torch.int64),
}
#: torch dtype -> numpy dtype of the same bytes
NUMPY_OF = {torch_dtype: np_dtype for np_dtype, torch_dtype in DTYPES.values()}
#: how a quantised field's scales are named and stored
SCALE_SUFFIX = ".scale"
SCALE_DTYPE = torch.float32
_MAX_HEADER = 100_000_000


def scale_name(field: str) -> str:
    """Name of the per-token scales of a quantised field."""
    return field + SCALE_SUFFIX


def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 quantisation of each row of a (tokens, dim) tensor: int8 values and one float32 scale per row."""
    x = x.float()
    scale = x.abs().amax(dim=-1) / 127.0
    values = torch.round(x / scale.clamp_min(torch.finfo(torch.float32).tiny)[:, None]).clamp_(-127, 127)
    return values.to(torch.int8), scale


def read_header(path: Path) -> tuple[dict, int, int]:
    """The safetensors header of `path`, where its data starts, and the file size; a one-line error if broken."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise MicebenchError(f"truncated store shard {path}: {size} bytes")
            (length,) = struct.unpack("<Q", head)
            if length > min(size - 8, _MAX_HEADER):
                raise MicebenchError(f"truncated or corrupt store shard {path}: header of {length} bytes, file {size}")
            header = json.loads(handle.read(length))
    except OSError as error:
        raise MicebenchError(f"cannot read store shard {path}: {error.strerror or error}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise MicebenchError(f"corrupt store shard {path}: unreadable header") from None
    if not isinstance(header, dict):
        raise MicebenchError(f"corrupt store shard {path}: unreadable header")
    return header, 8 + length, size


class Shard:
    """One shard file mapped read-only: each tensor is a numpy view of the map, read from disk only where touched."""

    def __init__(self, path: Path, names: list[str], docs: int | None = None, tokens: int | None = None):
        self.path = path
        header, start, size = read_header(path)
        try:
            with open(path, "rb") as handle:
                self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as error:
            raise MicebenchError(f"cannot map store shard {path}: {error}") from None
        if hasattr(self._map, "madvise"):  # gathers read scattered rows: no read-ahead of neighbouring pages
            self._map.madvise(mmap.MADV_RANDOM)
        self.arrays = {name: self._array(header, name, start, size) for name in names}
        self.torch_dtypes = {name: DTYPES[header[name]["dtype"]][1] for name in names}
        lengths = self._array(header, "lengths", start, size)
        if lengths.ndim != 1 or (docs is not None and len(lengths) != docs):
            raise MicebenchError(f"corrupt store shard {path}: {len(lengths)} lengths, the manifest records {docs}")
        rows = int(lengths.sum()) if tokens is None else tokens
        for name, array in self.arrays.items():
            if array.shape[0] != rows:
                raise MicebenchError(f"corrupt store shard {path}: {name} has {array.shape[0]} rows, expected {rows}")
        self.lengths = lengths

    def _array(self, header: dict, name: str, start: int, size: int) -> np.ndarray:
        """The tensor `name` as a read-only numpy view of the map, after checking it lies inside the file."""
        entry = header.get(name)
        if not isinstance(entry, dict) or entry.get("dtype") not in DTYPES:
            raise MicebenchError(f"corrupt store shard {self.path}: no readable tensor {name!r}")
        dtype = DTYPES[entry["dtype"]][0]
        shape = tuple(int(n) for n in entry.get("shape", ()))
        begin, end = (int(n) for n in entry.get("data_offsets", (0, -1)))
        count = int(np.prod(shape, dtype=np.int64))
        if end - begin != count * dtype.itemsize or begin < 0:
            raise MicebenchError(f"corrupt store shard {self.path}: tensor {name!r} has inconsistent offsets")
        if start + end > size:
            raise MicebenchError(
                f"truncated store shard {self.path}: {size} bytes, tensor {name!r} ends at byte {start + end}"
            )
        return np.frombuffer(self._map, dtype=dtype, count=count, offset=start + begin).reshape(shape)
