"""Reading a document store (`DocumentStore`), and the packed in-memory tensors latency timings gather from."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from micebench.errors import MicebenchError
from micebench.store.codecs import StoreCodec
from micebench.store.manifest import open_index, read_manifest, shard_file
from micebench.store.shards import SCALE_DTYPE, scale_name


class PackedTensors:
    """Per-token tensors of many documents packed back to back, with a vectorised padded gather."""

    def __init__(self, tensors: dict[str, torch.Tensor], lengths: torch.Tensor):
        self.tensors = tensors
        self.device = lengths.device
        self.lengths = lengths.long()
        self.offsets = torch.cumsum(self.lengths, 0) - self.lengths
        self._buffers: dict[str, torch.Tensor] = {}

    def gather(self, rows: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Padded (B, Lmax, dim) tensors per field and the (B, Lmax) attention mask for rows `rows`.

        The tensors are views of buffers reused by the next call (no fresh allocation, which costs more than
        the copy itself for large batches): use them before gathering again.
        """
        lengths = self.lengths[rows]
        width = int(lengths.max())
        steps = torch.arange(width, device=self.device)
        mask = steps[None, :] < lengths[:, None]
        flat = (self.offsets[rows][:, None] + steps[None, :]).where(mask, 0).reshape(-1)
        out = {}
        for name, tensor in self.tensors.items():
            buffer = self._buffers.get(name)
            if buffer is None or buffer.shape[0] < len(flat):
                buffer = self._buffers[name] = torch.empty(
                    (len(flat), tensor.shape[1]), dtype=tensor.dtype, device=tensor.device
                )
            view = buffer[: len(flat)]
            torch.index_select(tensor, 0, flat, out=view)
            out[name] = view.view(len(rows), width, -1)
        return out, mask.long()


class DocumentStore:
    """Serves padded per-token tensors for any batch of doc ids, reading only those documents from the shards.

    Opening reads the manifest and maps the doc-id index; each shard is checked and memory-mapped on first use.
    `gather` copies the byte ranges of the requested rows out of the maps in one join per field (only their pages
    are read), pads them with zeros, and converts them to `dtype` (dequantising an int8 store, decoding the codes of
    a pq or residual store on the scoring device); on CUDA through a reused pinned buffer, copied without blocking.
    """

    def __init__(
        self,
        folder: str | Path,
        kind: str,
        fingerprint: str,
        mode: str | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
    ):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        found = (self.manifest.get("kind"), self.manifest.get("mode"))
        if found[0] != kind or (mode is not None and found[1] != mode):
            raise MicebenchError(
                f"store {self.folder} holds {found[0]}/{found[1]}, not {kind}/{mode}: "
                "build it with `micebench precompute`"
            )
        if self.manifest.get("fingerprint") != fingerprint:
            raise MicebenchError(
                f"store {self.folder} was built by another model (fingerprint {self.manifest.get('fingerprint')}, "
                f"this model {fingerprint})"
            )
        self.fields: list[str] = list(self.manifest["fields"])
        self.device = torch.device(device)
        #: the codebooks of a pq or residual store, on the scoring device (None for plain dtypes and int8)
        self.codec: StoreCodec | None = None
        if "codec" in self.manifest:
            self.codec = StoreCodec.load(self.folder, self.manifest["codec"]).to(self.device)
            self.stored_dtype = torch.uint8
            self._dtypes = {name: spec[0] for name, spec in self.codec.stored().items()}
            self._expected = {name: spec[1] for name, spec in self.codec.stored().items()}
        else:
            self.stored_dtype = getattr(torch, self.manifest["dtype"])
            self._dtypes = {f: self.stored_dtype for f in self.fields}
            self._expected = {}
        self.quantized = self.codec is None and self.stored_dtype == torch.int8
        if self.quantized:
            self._dtypes |= {scale_name(f): SCALE_DTYPE for f in self.fields}
        compressed = self.quantized or self.codec is not None
        self.dtype: torch.dtype = dtype or (torch.float32 if compressed else self.stored_dtype)
        self.entries: list[dict[str, Any]] = list(self.manifest["shards"])
        self._check_sizes()
        self.index = open_index(self.folder, self.manifest)
        self._names = list(self._dtypes)
        shards = len(self.entries)
        #: per tensor name, each shard's bytes (None until the shard is first used)
        self._views: dict[str, list[memoryview | None]] = {name: [None] * shards for name in self._names}
        self._shapes: dict[str, tuple[int, ...]] = {}  # per-token shape of each tensor: (dim,) or () for scales
        self._tokens = np.full(shards, -1, dtype=np.int64)  # rows of each shard's tensors (-1: not mapped yet)
        self._buffers: dict[str, torch.Tensor] = {}
        self._zeros = memoryview(b"")
        self._copied: Any = None  # CUDA event of the last copy out of the pinned buffers

    def _check_sizes(self) -> None:
        """Every shard exists and has the size the manifest records (a cheap test for truncated files)."""
        for entry in self.entries:
            path = self.folder / entry["file"]
            if not path.is_file():
                raise MicebenchError(f"store shard missing: {path}")
            size = path.stat().st_size
            if "bytes" in entry and size != entry["bytes"]:
                raise MicebenchError(
                    f"truncated or corrupt store shard {path}: {size} bytes, expected {entry['bytes']}"
                )

    @property
    def docnos(self) -> list[str]:
        """Doc ids in storage order (reads the whole index)."""
        return self.index.docnos()

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, docno: str) -> bool:
        return bool(self.index.lookup([docno])[0] >= 0)

    def missing(self, docnos: Sequence[str]) -> list[str]:
        """The ids of `docnos` the store does not hold, in order."""
        return self.index.absent(docnos)

    def token_lengths(self, positions: torch.Tensor) -> np.ndarray:
        """Stored tokens of each document at store rows `positions` (what a gather of them pads to)."""
        return self.index.rows["length"][positions.numpy()].astype(np.int64)

    def positions(self, docnos: Sequence[str]) -> torch.Tensor:
        """Store rows of `docnos` (a CPU LongTensor for `gather`); a one-line error for an absent document."""
        rows = self.index.lookup(docnos)
        absent = self.index.absent(docnos, rows)
        if absent:
            raise MicebenchError(
                f"document {absent[0]!r} is not in the store {self.folder} ({len(absent)} of {len(docnos)} "
                "missing; add them with `micebench precompute --extend`)"
            )
        return torch.from_numpy(rows)

    def _open(self, number: int) -> None:
        """Check shard `number` (against the manifest and the other shards) and map it, on first use."""
        shard = shard_file(self.folder, self.entries[number], self._names)
        for name in self._names:
            expected = self._raw(name)
            shape = shard.shapes[name][1:]
            known = self._shapes.setdefault(name, self._expected.get(name, shape))
            if shard.dtypes[name] != expected or known != shape:
                raise MicebenchError(
                    f"corrupt store shard {shard.path}: {name} is {shard.dtypes[name]} {shape}, "
                    f"expected {expected} {self._shapes[name]}"
                )
        for name, view in shard.views().items():
            if name in self._views:
                self._views[name][number] = view
        self._tokens[number] = shard.shapes[self._names[0]][0]

    def _raw(self, name: str) -> torch.dtype:
        """The dtype tensor `name` is stored in."""
        return self._dtypes[name]

    def _buffer(self, key: str, size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A reused flat buffer of at least `size` elements (grown by doubling), pinned when it feeds a GPU."""
        buffer = self._buffers.get(key)
        if buffer is None or buffer.numel() < size:
            pin = device.type == "cpu" and self.device.type == "cuda"
            length = max(size, 2 * buffer.numel() if buffer is not None else 0)
            buffer = self._buffers[key] = torch.empty(length, dtype=dtype, device=device, pin_memory=pin)
        return buffer[:size]

    def _pad(self, size: int) -> memoryview:
        """`size` zero bytes."""
        if len(self._zeros) < size:
            self._zeros = memoryview(bytes(max(size, 2 * len(self._zeros), 1 << 16)))
        return self._zeros[:size]

    def _read(self, name: str, shard: list[int], start: np.ndarray, length: np.ndarray, width: int) -> torch.Tensor:
        """Tensor `name` of the requested documents, each zero-padded to `width` tokens: (B, width, *shape).

        One slice of the mapped shard per document, joined in one copy (a numpy concatenate or a torch gather
        over many arrays costs several times more per document).
        """
        row = int(np.prod(self._shapes[name], dtype=np.int64)) * self._raw(name).itemsize
        begin = start * row
        end = begin + length * row
        pad = (width - length) * row
        views, zero = self._views[name], self._pad(int(pad.max(initial=0)))
        parts = []
        for s, b, e, p in zip(shard, begin.tolist(), end.tolist(), pad.tolist(), strict=True):
            parts.append(views[s][b:e])
            if p:
                parts.append(zero[:p])
        data = bytearray().join(parts)
        shape = (len(shard), width, *self._shapes[name])
        flat = torch.frombuffer(data, dtype=self._raw(name)) if data else torch.empty(0, dtype=self._raw(name))
        return flat.view(shape)

    def gather(self, rows: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Padded (B, Lmax, dim) tensors per field and the (B, Lmax) attention mask for store rows `rows`.

        The tensors may be views of buffers reused by the next call: use them before gathering again.
        """
        picked = self.index.rows[np.asarray(rows.cpu() if torch.is_tensor(rows) else rows, dtype=np.int64)]
        shard, start, length = picked["shard"].astype(np.int64), picked["start"], picked["length"].astype(np.int64)
        for number in np.unique(shard).tolist() or [0]:  # an empty batch still needs one shard's shapes
            if self._tokens[number] < 0:
                self._open(number)
        if np.any(start + length > self._tokens[shard]):
            raise MicebenchError(f"corrupt document store {self.folder}: its index points outside a shard")
        width = int(length.max(initial=0))
        mask = torch.from_numpy((np.arange(width)[None, :] < length[:, None]).astype(np.int64))
        if self._copied is not None:  # the previous batch may still be leaving the pinned buffers
            self._copied.synchronize()
        host = {name: self._read(name, shard.tolist(), start, length, width) for name in self._names}
        if self.device.type == "cuda":
            host = {name: self._to_device(name, t) for name, t in host.items()}
            self._copied = torch.cuda.Event()
            self._copied.record(torch.cuda.current_stream(self.device))  # the stream the copies went to
            mask = mask.to(self.device, non_blocking=True)
        if self.codec is not None:
            return {f: self._decode(f, host, mask, length) for f in self.fields}, mask
        return {f: self._convert(f, host) for f in self.fields}, mask

    def _decode(self, field: str, parts: dict[str, torch.Tensor], mask: torch.Tensor, length: np.ndarray) -> Any:
        """A gathered field of a codec store decoded on the scoring device (padding positions zero, as stored
        vectors would be), in `self.dtype`."""
        assert self.codec is not None
        x = self.codec.decode(field, parts)
        if len(length) and length.min() != length.max():
            x = x * mask.unsqueeze(-1).to(x.dtype)
        return x if x.dtype == self.dtype else x.to(self.dtype)

    def _to_device(self, name: str, host: torch.Tensor) -> torch.Tensor:
        """Copy a gathered batch to the GPU through a reused pinned buffer, without blocking."""
        pinned = self._buffer(f"pinned:{name}", host.numel(), host.dtype, torch.device("cpu"))
        pinned.copy_(host.reshape(-1))
        device = self._buffer(f"device:{name}", host.numel(), host.dtype, self.device)
        return device.copy_(pinned, non_blocking=True).view(host.shape)

    def _convert(self, field: str, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """A gathered field in `self.dtype` (dequantised for int8), on the device it was gathered to."""
        raw = tensors[field]
        if self.dtype == raw.dtype:
            return raw
        out = self._buffer(f"out:{field}", raw.numel(), self.dtype, raw.device).view(raw.shape)
        out.copy_(raw)
        if self.quantized:
            out.mul_(tensors[scale_name(field)].unsqueeze(-1))
        return out
