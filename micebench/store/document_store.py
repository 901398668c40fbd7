"""A document store: per-token vectors of documents, keyed by doc id, in sharded safetensors files.

Layout of a store folder (format 2)::

    manifest.json                kind, mode, model fingerprint, dtype, fields, shards, sources, index files
    index-keys-<g>.npy           doc ids, sorted          \
    index-order-<g>.npy          store row of each id      > the doc-id index, memory-mapped (see index.py)
    index-rows-<g>.npy           shard, offset, length     /
    shard-00000.safetensors      one (tokens, dim) tensor per field, documents packed back to back, + "lengths"
                                 (int8 stores: + one float32 scale per token and field, "<field>.scale")

Opening a store reads the manifest and maps the index; shards are memory-mapped on first use and a gather copies
only the requested rows (one padded batch per field, no per-token Python loop). A new store is written under a
temporary name and renamed when complete; an extension writes new shards and then swaps the manifest atomically,
so readers see either the old or the new set of documents. Stores of format 1 (`docnos.json`, shards loaded
whole) are still read.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from micebench.atomic import atomic_write_text
from micebench.errors import MicebenchError
from micebench.store.index import DocIndex, row_table
from micebench.store.shards import SCALE_DTYPE, ShardFile, quantize, release, scale_name

MANIFEST = "manifest.json"
FORMAT = 2
#: manifest keys an extension must share with the store it extends
_EXTEND_KEYS = ("kind", "mode", "fingerprint", "dtype", "fields")


def dtype_name(dtype: torch.dtype) -> str:
    """'float16' for torch.float16: how manifests name dtypes."""
    return str(dtype).replace("torch.", "")


def shard_name(number: int) -> str:
    """File name of shard `number`."""
    return f"shard-{number:05d}.safetensors"


def same_device(a: torch.device | str, b: torch.device | str) -> bool:
    """Whether two devices are one, reading a bare "cuda" as the current CUDA device (torch says cuda != cuda:0)."""
    return _normalised(torch.device(a)) == _normalised(torch.device(b))


def _normalised(device: torch.device) -> torch.device:
    """`device` with the current CUDA index filled in."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of a complete store; a one-line error for anything else."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise MicebenchError(f"not a document store (no {MANIFEST}): {folder}")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise MicebenchError(f"corrupt document store manifest: {path}") from None
    if not isinstance(manifest, dict) or manifest.get("status") != "complete":
        raise MicebenchError(f"document store is incomplete: {folder}")
    check_manifest_types(manifest, path)
    if manifest.get("format", 1) > FORMAT:
        raise MicebenchError(f"document store {folder} has format {manifest['format']}: upgrade micebench to read it")
    return manifest


#: the manifest fields a reader uses: their type and whether every complete store has them
MANIFEST_FIELDS = {
    "format": ("int", False),
    "kind": ("str", False),
    "mode": ("str | None", False),
    "fingerprint": ("str", False),
    "fields": ("list[str]", True),
    "dtype": ("str", True),
    "shards": ("list", True),
    "num_docs": ("int", False),
    "num_tokens": ("int", False),
}
#: per shard entry: type and whether required
SHARD_FIELDS = {"file": ("str", True), "bytes": ("int", False), "docs": ("int", False), "tokens": ("int", False)}


def check_manifest_types(manifest: dict[str, Any], path: Path) -> None:
    """Every manifest field a reader uses typed (counts >= 0): a damaged manifest is one line naming the field."""
    from micebench.fieldtypes import type_problem

    def damaged(field: str, problem: str) -> MicebenchError:
        return MicebenchError(f"damaged store manifest: {path}: {field} {problem}")

    def check(table: dict[str, Any], specs: dict[str, tuple[str, bool]], prefix: str) -> None:
        for field, (annotation, required) in specs.items():
            if field not in table:
                if required:
                    raise damaged(prefix + field, "is missing")
                continue
            value = table[field]
            problem = "must be a list" if annotation == "list" and not isinstance(value, list) else None
            problem = problem or (type_problem(value, annotation) if annotation != "list" else None)
            if problem is None and annotation == "int" and value < 0:
                problem = f"must be at least 0 (got {value!r})"
            if problem:
                raise damaged(prefix + field, problem)

    check(manifest, MANIFEST_FIELDS, "")
    for i, entry in enumerate(manifest["shards"]):
        if not isinstance(entry, dict):
            raise damaged(f"shards[{i}]", f"must be an object (got {entry!r})")
        check(entry, SHARD_FIELDS, f"shards[{i}].")
    if manifest.get("format", 1) >= 2 and not isinstance(manifest.get("index"), dict):
        raise damaged("index", f"must be an object (got {manifest.get('index')!r})")


def open_index(folder: Path, manifest: dict[str, Any]) -> DocIndex:
    """The doc-id index of a store: memory-mapped (format 2) or built from `docnos.json` and the shards (format 1)."""
    if manifest.get("format", 1) >= 2:
        return DocIndex.load(folder, manifest["index"])
    try:
        docnos = json.loads((folder / "docnos.json").read_text())
    except (OSError, ValueError):
        raise MicebenchError(f"corrupt document store {folder}: unreadable docnos.json") from None
    lengths = [shard_file(folder, entry, []).lengths() for entry in manifest["shards"]]
    return DocIndex.build(docnos, row_table(range(len(lengths)), lengths))


def shard_file(folder: Path, entry: dict[str, Any], names: list[str]) -> ShardFile:
    """The header of one shard of a manifest, checked against what the manifest records."""
    return ShardFile(folder / entry["file"], names, docs=entry.get("docs"), tokens=entry.get("tokens"))


class StoreWriter:
    """Writes a store chunk by chunk, resumably; `finish` makes it visible atomically.

    A new store is written into `.<name>.partial/` and renamed when complete. With `extend`, documents are added
    to an existing store (same kind, mode, fingerprint, dtype and fields): its new shards go next to the old ones
    and `finish` swaps in a manifest and index that include them. Each chunk of documents becomes one shard file
    plus a small JSON record (in the partial folder) written after it, so a crash loses at most the chunk in
    progress and `resume` skips the recorded ones. Under torchrun each rank writes its own chunks (chunk i goes to
    rank i mod world) and rank 0 assembles the manifest, in chunk order, so the store is the same as one built by
    a single process. An int8 `dtype` stores each token vector quantised (int8 values + a float32 scale).
    """

    def __init__(
        self,
        folder: str | Path,
        meta: dict[str, Any],
        fields: Sequence[str],
        dtype: torch.dtype,
        overwrite: bool = False,
        resume: bool = False,
        rank: int = 0,
        extend: bool = False,
        options: dict[str, Any] | None = None,
    ):
        self.folder = Path(folder)
        self.partial = self.folder.parent / f".{self.folder.name}.partial"
        self.meta, self.fields, self.dtype, self.rank = meta, list(fields), dtype, rank
        self.overwrite, self.resume = overwrite, resume
        self.base: dict[str, Any] | None = None
        if extend and overwrite:
            raise MicebenchError("--extend adds documents to a store and --overwrite rebuilds it: use one of them")
        if self.folder.exists() and not self.folder.is_dir():
            raise MicebenchError(f"store path {self.folder} is a file, not a store folder: choose another --output")
        if self.folder.exists():
            if extend:
                self.base = read_manifest(self.folder)
                self._check_extends(self.base)
            elif not overwrite:
                raise MicebenchError(
                    f"store already exists: {self.folder} (use --extend to add documents or --overwrite to rebuild it)"
                )
        self.first_shard = len(self.base["shards"]) if self.base else 0
        self.shard_dir = self.folder if self.base else self.partial
        self.key = json.loads(
            json.dumps(
                {
                    "fingerprint": meta.get("fingerprint"),
                    "mode": meta.get("mode"),
                    "fields": self.fields,
                    "dtype": dtype_name(dtype),
                    "dataset": meta.get("dataset"),
                    "extends": {"docs": self.base["num_docs"], "shards": self.first_shard} if self.base else None,
                    **(options or {}),
                },
                default=str,
            )
        )
        self._prepared = False
        if rank == 0:
            self._check_partial()

    @property
    def quantized(self) -> bool:
        return self.dtype == torch.int8

    def _check_extends(self, base: dict[str, Any]) -> None:
        """Refuse to extend a store built by another model, mode, dtype or set of fields."""
        ours = {key: self.meta.get(key) for key in ("kind", "mode", "fingerprint")}
        ours |= {"dtype": dtype_name(self.dtype), "fields": self.fields}
        for key in _EXTEND_KEYS:
            if base.get(key) != ours[key]:
                raise MicebenchError(
                    f"cannot extend {self.folder}: its {key} is {base.get(key)!r}, this precompute's is {ours[key]!r}"
                )

    def _check_partial(self) -> None:
        """Before any work: an unfinished precompute is continued only with `resume` and the same settings."""
        record = self.partial / "partial.json"
        if not self.partial.exists():
            return
        if self.resume:
            try:
                started = json.loads(record.read_text())
            except (OSError, ValueError):
                started = {}
            differ = sorted(k for k in {**started, **self.key} if started.get(k) != self.key.get(k))
            if differ:
                raise MicebenchError(
                    f"cannot resume {self.folder}: it was started with another model or mode, or other options "
                    f"(different: {', '.join(differ)})"
                )
        elif not (self.overwrite and self.base is None):
            extra = "" if self.base else " or --overwrite"
            raise MicebenchError(
                f"an unfinished precompute exists for {self.folder} (use --resume to continue it{extra})"
            )

    def prepare(self) -> None:
        """Rank 0, before the first chunk: create the partial folder and record what it is building."""
        if self._prepared or self.rank != 0:
            return
        if self.partial.exists() and not self.resume:
            shutil.rmtree(self.partial)  # --overwrite of an unfinished build (checked in _check_partial)
        self.partial.mkdir(parents=True, exist_ok=True)
        record = self.partial / "partial.json"
        if not record.is_file():
            atomic_write_text(record, json.dumps(self.key), durable=True)
        self._prepared = True

    def chunk_records(self) -> list[dict[str, Any]]:
        """The recorded (finished) chunks, in chunk order."""
        return [json.loads(p.read_text()) for p in sorted(self.partial.glob("chunk-*.json"))]

    def done_chunks(self) -> set[int]:
        return {int(p.stem.split("-")[1]) for p in self.partial.glob("chunk-*.json")}

    def write_chunk(
        self, index: int, docnos: Sequence[str], lengths: Sequence[int], tensors: dict[str, list[torch.Tensor]]
    ) -> None:
        """One shard: `tensors[field]` are (tokens, dim) pieces, documents back to back, in `docnos` order."""
        from safetensors.torch import save_file

        self.prepare()
        name = shard_name(self.first_shard + index)
        packed: dict[str, torch.Tensor] = {}
        for field in self.fields:
            x = torch.cat([t.detach() for t in tensors[field]])
            if self.quantized:
                values, scales = quantize(x)
                packed[field] = values.cpu().contiguous()
                packed[scale_name(field)] = scales.to("cpu", SCALE_DTYPE).contiguous()
            else:
                packed[field] = x.to("cpu", self.dtype).contiguous()
        packed["lengths"] = torch.tensor(list(lengths), dtype=torch.int32)
        tmp = self.shard_dir / f".{name}.tmp"
        save_file(packed, str(tmp))
        release(tmp)  # durable before it is recorded, and out of the page cache (see shards.py)
        os.replace(tmp, self.shard_dir / name)
        chunk = {
            "file": name,
            "docs": len(docnos),
            "docnos": list(docnos),
            "tokens": int(packed["lengths"].sum()),
            "bytes": (self.shard_dir / name).stat().st_size,
        }
        atomic_write_text(self.partial / f"chunk-{index:05d}.json", json.dumps(chunk), durable=True)

    def discard(self) -> None:
        """Remove an unfinished precompute that has nothing worth resuming (rank 0)."""
        if self.rank != 0 or self.done_chunks():
            return
        shutil.rmtree(self.partial, ignore_errors=True)
        for tmp in self.shard_dir.glob(".shard-*.tmp"):
            tmp.unlink(missing_ok=True)

    def finish(self, source: dict[str, Any] | None = None) -> Path:
        """Rank 0, once every chunk is written: index, manifest, and the rename (or manifest swap) into place.

        `source` records what this precompute encoded (dataset, first stage, ...); the manifest keeps one per
        build or extension under `sources`.
        """
        self.prepare()
        chunks = self.chunk_records()
        docnos = [d for c in chunks for d in c["docnos"]]
        lengths = [shard_file(self.shard_dir, c, []).lengths() for c in chunks]
        rows = row_table(range(self.first_shard, self.first_shard + len(chunks)), lengths)
        shards = [{k: c[k] for k in ("file", "docs", "tokens", "bytes")} for c in chunks]
        sources = [source] if source else []
        if self.base is None:
            if not docnos:
                raise MicebenchError("no documents were encoded")
            return self._finish_new(DocIndex.build(docnos, rows), shards, sources)
        return self._finish_extension(docnos, rows, shards, sources)

    def _totals(self, index: DocIndex, shards: list[dict], generation: int, files: dict[str, str]) -> dict[str, Any]:
        """The manifest entries that follow from the documents a store holds."""
        total = sum(s.get("bytes", 0) for s in shards)
        return {
            "format": FORMAT,
            "num_docs": len(index),
            "num_tokens": int(index.rows["length"].sum(dtype=np.int64)),
            "bytes": total,
            "bytes_per_doc": total / len(index),
            "index": files,
            "generation": generation,
            "shards": shards,
        }

    def _finish_new(self, index: DocIndex, shards: list[dict], sources: list[dict]) -> Path:
        """Write the index and manifest into the partial folder and rename it into place."""
        files = index.save(self.partial, 0)
        manifest = {**self.meta, "fields": self.fields, "dtype": dtype_name(self.dtype)}
        if self.quantized:
            manifest["quantization"] = {"scheme": "int8, symmetric per token vector", "scale": dtype_name(SCALE_DTYPE)}
        manifest |= self._totals(index, shards, 0, files) | {"sources": sources, "status": "complete"}
        self._drop_records()
        (self.partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if self.folder.exists():
            shutil.rmtree(self.folder)
        os.replace(self.partial, self.folder)
        return self.folder

    def _finish_extension(self, docnos: list[str], rows: np.ndarray, shards: list[dict], sources: list[dict]) -> Path:
        """New index files next to the old ones, then the manifest swapped atomically, then the old index removed."""
        base = self.base
        manifest = {**base, "sources": base.get("sources", []) + sources}
        if docnos:  # else nothing was missing: only the candidate set is recorded
            index = open_index(self.folder, base).extended(docnos, rows)
            generation = base.get("generation", 0) + 1
            manifest |= self._totals(index, base["shards"] + shards, generation, index.save(self.folder, generation))
            manifest["bytes"] = base.get("bytes", 0) + sum(s["bytes"] for s in shards)
            manifest["bytes_per_doc"] = manifest["bytes"] / manifest["num_docs"]
        atomic_write_text(self.folder / MANIFEST, json.dumps(manifest, indent=2) + "\n", durable=True)
        keep = set(manifest.get("index", {}).values())
        for old in [*(base.get("index") or {}).values(), *(["docnos.json"] if "index" not in base else [])]:
            if old not in keep:
                (self.folder / old).unlink(missing_ok=True)
        for tmp in self.folder.glob(".shard-*.tmp"):
            tmp.unlink(missing_ok=True)
        shutil.rmtree(self.partial, ignore_errors=True)
        return self.folder

    def _drop_records(self) -> None:
        """Remove the chunk records and the partial record (the manifest replaces them)."""
        for p in [*self.partial.glob("chunk-*.json"), self.partial / "partial.json"]:
            p.unlink(missing_ok=True)


class PackedTensors:
    """Per-token tensors of many documents packed back to back, with a vectorised padded gather."""

    def __init__(self, tensors: dict[str, torch.Tensor], lengths: torch.Tensor, target: torch.device | None = None):
        self.tensors = tensors
        self.device = lengths.device
        self.lengths = lengths.long()
        self.offsets = torch.cumsum(self.lengths, 0) - self.lengths
        #: where gathered batches go (a CUDA device for a store kept in pinned host memory)
        self.target = target or self.device
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
        if not same_device(self.target, self.device):
            out = {f: _to_device(t, self.target) for f, t in out.items()}
            return out, mask.long().to(self.target, non_blocking=True)
        return out, mask.long()


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy to `device`, through pinned memory when leaving the CPU for a GPU."""
    if tensor.device.type == "cpu" and torch.device(device).type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


class DocumentStore:
    """Serves padded per-token tensors for any batch of doc ids, reading only those documents from the shards.

    Opening reads the manifest and maps the doc-id index; each shard is checked and memory-mapped on first use.
    `gather` copies the byte ranges of the requested rows out of the maps in one join per field (only their pages
    are read), pads them with zeros, and converts them to `dtype` (dequantising an int8 store); on CUDA through a
    reused pinned buffer, copied without blocking.
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
        self.stored_dtype: torch.dtype = getattr(torch, self.manifest["dtype"])
        self.quantized = self.stored_dtype == torch.int8
        self.dtype: torch.dtype = dtype or (torch.float32 if self.quantized else self.stored_dtype)
        self.device = torch.device(device)
        self.entries: list[dict[str, Any]] = list(self.manifest["shards"])
        self._check_sizes()
        self.index = open_index(self.folder, self.manifest)
        self._names = self.fields + ([scale_name(f) for f in self.fields] if self.quantized else [])
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
        rows = self.index.lookup(docnos)
        return [d for d, r in zip(docnos, rows.tolist(), strict=True) if r < 0]

    def token_lengths(self, positions: torch.Tensor) -> np.ndarray:
        """Stored tokens of each document at store rows `positions` (what a gather of them pads to)."""
        return self.index.rows["length"][positions.numpy()].astype(np.int64)

    def positions(self, docnos: Sequence[str]) -> torch.Tensor:
        """Store rows of `docnos` (a CPU LongTensor for `gather`); a one-line error for an absent document."""
        rows = self.index.lookup(docnos)
        absent = np.flatnonzero(rows < 0)
        if len(absent):
            raise MicebenchError(
                f"document {docnos[absent[0]]!r} is not in the store {self.folder} ({len(absent)} of {len(docnos)} "
                "missing; add them with `micebench precompute --extend`)"
            )
        return torch.from_numpy(rows)

    def _open(self, number: int) -> None:
        """Check shard `number` (against the manifest and the other shards) and map it, on first use."""
        shard = shard_file(self.folder, self.entries[number], self._names)
        for name in self._names:
            expected = self._raw(name)
            shape = shard.shapes[name][1:]
            if shard.dtypes[name] != expected or self._shapes.setdefault(name, shape) != shape:
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
        return self.stored_dtype if name in self.fields else SCALE_DTYPE

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
        return {f: self._convert(f, host) for f in self.fields}, mask

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
