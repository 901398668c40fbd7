"""Shard files of a document store, memory-mapped, and the int8 per-token quantisation they may hold.

A shard is a safetensors file: one (tokens, dim) tensor per field, documents packed back to back, and a
`lengths` vector. An int8 shard holds, beside each field, `<field>.scale`: one float32 scale per token (symmetric
quantisation of each token vector). Shards are never loaded: their header is read and checked, the file is
memory-mapped with random-access advice (no read-ahead), and a gather copies the byte ranges of the requested
documents only.

Resident memory follows the page-cache folios behind the pages a gather touches: recent kernels map a whole
large folio on a fault (up to 2 MB), and a file just written, or read sequentially, sits in large folios. So the
writer flushes each shard and drops it from the page cache (`release`), and headers are read without read-ahead;
later reads through the random-access map then bring in single pages.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from pathlib import Path

import numpy as np
import torch

from micebench.errors import MicebenchError

#: safetensors dtype -> torch dtype
DTYPES: dict[str, torch.dtype] = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "I16": torch.int16,
    "I32": torch.int32,
    "I64": torch.int64,
}
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


def _advise_random(fd: int) -> None:
    """No read-ahead for this file: reads bring in the pages asked for, not large folios around them."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)


def release(path: Path) -> None:
    """Flush a freshly written file to disk and drop its pages from the page cache (durable, and read back later
    in single pages instead of the large folios the write left)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_header(path: Path) -> tuple[dict, int, int]:
    """The safetensors header of `path`, where its data starts, and the file size; a one-line error if broken."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as error:
        raise MicebenchError(f"cannot read store shard {path}: {error.strerror or error}") from None
    try:
        _advise_random(fd)
        size = os.fstat(fd).st_size
        head = os.pread(fd, 8, 0)
        if len(head) < 8:
            raise MicebenchError(f"truncated store shard {path}: {size} bytes")
        (length,) = struct.unpack("<Q", head)
        if length > min(size - 8, _MAX_HEADER):
            raise MicebenchError(f"truncated or corrupt store shard {path}: header of {length} bytes, file {size}")
        header = json.loads(os.pread(fd, length, 8))
    except OSError as error:
        raise MicebenchError(f"cannot read store shard {path}: {error.strerror or error}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise MicebenchError(f"corrupt store shard {path}: unreadable header") from None
    finally:
        os.close(fd)
    if not isinstance(header, dict):
        raise MicebenchError(f"corrupt store shard {path}: unreadable header")
    return header, 8 + length, size


class ShardFile:
    """A shard's header, checked against the file: where each tensor's bytes start, its dtype and its shape."""

    def __init__(self, path: Path, names: list[str], docs: int | None = None, tokens: int | None = None):
        self.path = path
        header, start, size = read_header(path)
        self.offsets: dict[str, int] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.dtypes: dict[str, torch.dtype] = {}
        for name in [*names, "lengths"]:
            self._locate(header, name, start, size)
        count = self.shapes["lengths"][0] if len(self.shapes["lengths"]) == 1 else -1
        if count < 0 or self.dtypes["lengths"] != torch.int32 or (docs is not None and count != docs):
            raise MicebenchError(f"corrupt store shard {path}: {count} document lengths, the manifest records {docs}")
        rows = int(self.lengths().sum()) if tokens is None else tokens
        for name in names:
            if self.shapes[name][0] != rows:
                raise MicebenchError(f"corrupt store shard {path}: {name} has {self.shapes[name][0]} rows, not {rows}")

    def _locate(self, header: dict, name: str, start: int, size: int) -> None:
        """Record where tensor `name` lies, after checking that its entry is sound and inside the file."""
        entry = header.get(name)
        if not isinstance(entry, dict) or entry.get("dtype") not in DTYPES:
            raise MicebenchError(f"corrupt store shard {self.path}: no readable tensor {name!r}")
        dtype = DTYPES[entry["dtype"]]
        shape = tuple(int(n) for n in entry.get("shape", ()))
        begin, end = (int(n) for n in entry.get("data_offsets", (0, -1)))
        if end - begin != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize or begin < 0 or not shape:
            raise MicebenchError(f"corrupt store shard {self.path}: tensor {name!r} has inconsistent offsets")
        if start + end > size:
            raise MicebenchError(
                f"truncated store shard {self.path}: {size} bytes, tensor {name!r} ends at byte {start + end}"
            )
        self.offsets[name], self.shapes[name], self.dtypes[name] = start + begin, shape, dtype

    def lengths(self) -> np.ndarray:
        """The number of stored tokens of each document of the shard."""
        count = self.shapes["lengths"][0]
        fd = os.open(self.path, os.O_RDONLY)
        try:
            _advise_random(fd)
            data = os.pread(fd, 4 * count, self.offsets["lengths"])
        finally:
            os.close(fd)
        if len(data) != 4 * count:
            raise MicebenchError(f"truncated store shard {self.path}: the document lengths are cut off")
        return np.frombuffer(data, dtype="<i4")

    def views(self) -> dict[str, memoryview]:
        """Each tensor's bytes through a read-only, random-access memory map of the file (nothing is read yet)."""
        try:
            with open(self.path, "rb") as handle:
                mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as error:
            raise MicebenchError(f"cannot map store shard {self.path}: {error}") from None
        if hasattr(mapped, "madvise"):
            mapped.madvise(mmap.MADV_RANDOM)
        whole = memoryview(mapped)
        return {
            name: whole[start : start + int(np.prod(self.shapes[name], dtype=np.int64)) * self.dtypes[name].itemsize]
            for name, start in self.offsets.items()
        }
