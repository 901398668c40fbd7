"""A document store: per-token vectors of every document, keyed by doc id, in sharded safetensors files.

Layout of a store folder::

    manifest.json            kind, mode, fingerprint of the model, dtype, fields, shards, bytes per document
    docnos.json              doc ids in storage order
    shard-00000.safetensors  one (tokens, dim) tensor per field, documents packed back to back, + "lengths"

Tokens of all documents are packed without padding; `gather` pads a batch with one vectorised index_select,
no per-document Python loop. The folder is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from micebench.errors import MicebenchError

MANIFEST = "manifest.json"


class StoreWriter:
    """Accumulates packed per-token tensors and writes shards; `finish` makes the store visible atomically."""

    def __init__(
        self,
        folder: str | Path,
        meta: dict[str, Any],
        fields: Sequence[str],
        dtype: torch.dtype,
        shard_docs: int = 20_000,
        overwrite: bool = False,
    ):
        self.folder = Path(folder)
        if self.folder.exists() and not overwrite:
            raise MicebenchError(f"store already exists: {self.folder} (use --overwrite to rebuild it)")
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.folder.name}.tmp-", dir=self.folder.parent))
        self.meta, self.fields, self.dtype, self.shard_docs = meta, list(fields), dtype, shard_docs
        self.docnos: list[str] = []
        self.shards: list[dict[str, Any]] = []
        self._pending: dict[str, list[torch.Tensor]] = {f: [] for f in self.fields}
        self._lengths: list[int] = []
        self.num_tokens = 0
        self.bytes = 0

    def add(self, docnos: Sequence[str], lengths: Sequence[int], tensors: dict[str, torch.Tensor]) -> None:
        """Add documents: `tensors[field]` is (sum(lengths), dim), documents back to back."""
        self.docnos.extend(docnos)
        self._lengths.extend(int(n) for n in lengths)
        for name in self.fields:
            self._pending[name].append(tensors[name].detach().to("cpu", self.dtype).contiguous())
        if len(self._lengths) >= self.shard_docs:
            self._flush()

    def _flush(self) -> None:
        from safetensors.torch import save_file

        if not self._lengths:
            return
        name = f"shard-{len(self.shards):05d}.safetensors"
        tensors = {f: torch.cat(self._pending[f]) for f in self.fields}
        tensors["lengths"] = torch.tensor(self._lengths, dtype=torch.int32)
        save_file(tensors, str(self.tmp / name))
        self.num_tokens += int(tensors["lengths"].sum())
        self.bytes += (self.tmp / name).stat().st_size
        self.shards.append({"file": name, "docs": len(self._lengths)})
        self._pending = {f: [] for f in self.fields}
        self._lengths = []

    def finish(self) -> Path:
        self._flush()
        if len(set(self.docnos)) != len(self.docnos):
            self.abort()
            raise MicebenchError("duplicate document ids while building the store")
        manifest = {
            **self.meta,
            "fields": self.fields,
            "dtype": str(self.dtype).replace("torch.", ""),
            "num_docs": len(self.docnos),
            "num_tokens": self.num_tokens,
            "bytes": self.bytes,
            "bytes_per_doc": self.bytes / max(len(self.docnos), 1),
            "shards": self.shards,
            "status": "complete",
        }
        (self.tmp / "docnos.json").write_text(json.dumps(self.docnos))
        (self.tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if self.folder.exists():
            shutil.rmtree(self.folder)
        os.replace(self.tmp, self.folder)
        return self.folder

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


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
        if self.target != self.device:
            out = {f: t.pin_memory().to(self.target, non_blocking=True) for f, t in out.items()}
            return out, mask.long().to(self.target, non_blocking=True)
        return out, mask.long()


def read_manifest(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise MicebenchError(f"not a document store (no {MANIFEST}): {folder}")
    manifest = json.loads(path.read_text())
    if manifest.get("status") != "complete":
        raise MicebenchError(f"document store is incomplete: {folder}")
    return manifest


class DocumentStore:
    """Loads a store and serves padded per-token tensors for any batch of doc ids."""

    def __init__(
        self,
        folder: str | Path,
        kind: str,
        fingerprint: str,
        mode: str | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
    ):
        from safetensors.torch import load_file

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
        self.docnos: list[str] = json.loads((self.folder / "docnos.json").read_text())
        self.index = {d: i for i, d in enumerate(self.docnos)}
        parts = [load_file(str(self.folder / shard["file"])) for shard in self.manifest["shards"]]
        device = torch.device(device)
        target_dtype = dtype or getattr(torch, self.manifest["dtype"])
        tensors = {f: torch.cat([p[f] for p in parts]).to(dtype=target_dtype) for f in self.fields}
        lengths = torch.cat([p["lengths"] for p in parts])
        home = device
        if device.type == "cuda":  # keep the store on the GPU when it fits comfortably, else in pinned host memory
            size = sum(t.numel() * t.element_size() for t in tensors.values())
            if size > 0.5 * torch.cuda.mem_get_info(device)[0]:
                home = torch.device("cpu")
                tensors = {f: t.pin_memory() for f, t in tensors.items()}
        self.packed = PackedTensors({f: t.to(home) for f, t in tensors.items()}, lengths.to(home), target=device)
        self.device = device

    def __contains__(self, docno: str) -> bool:
        return docno in self.index

    def missing(self, docnos: Sequence[str]) -> list[str]:
        return [d for d in docnos if d not in self.index]

    def positions(self, docnos: Sequence[str]) -> torch.Tensor:
        try:
            return torch.tensor([self.index[d] for d in docnos], dtype=torch.long, device=self.packed.device)
        except KeyError as err:
            raise MicebenchError(f"document {err.args[0]!r} is not in the store {self.folder}") from None

    def gather(self, rows: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Padded (B, Lmax, dim) tensors per field and the (B, Lmax) attention mask for store rows `rows`."""
        return self.packed.gather(rows)
