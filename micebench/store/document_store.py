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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from micebench.atomic import atomic_write_text
from micebench.errors import MicebenchError

MANIFEST = "manifest.json"


class StoreWriter:
    """Writes a store chunk by chunk into `.<name>.partial/`, resumably; `finish` makes it visible atomically.

    Each chunk of documents becomes one shard file plus a small JSON record written after it, so a crash loses
    at most the chunk in progress and `resume` skips the recorded ones. Under torchrun each rank writes its own
    chunks (chunk i goes to rank i mod world) and rank 0 assembles the manifest, in chunk order, so the store is
    the same as one built by a single process.
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
    ):
        self.folder = Path(folder)
        self.partial = self.folder.parent / f".{self.folder.name}.partial"
        self.meta, self.fields, self.dtype, self.rank = meta, list(fields), dtype, rank
        if self.folder.exists() and not overwrite:
            raise MicebenchError(f"store already exists: {self.folder} (use --overwrite to rebuild it)")
        if rank != 0:  # rank 0 checks and prepares the folder; the others wait at a barrier before using it
            return
        key = {
            "fingerprint": meta.get("fingerprint"),
            "mode": meta.get("mode"),
            "fields": self.fields,
            "dtype": str(dtype),
            "dataset": meta.get("dataset"),
        }
        record = self.partial / "partial.json"
        if self.partial.exists():
            if resume:
                if not record.is_file() or json.loads(record.read_text()) != json.loads(json.dumps(key, default=str)):
                    raise MicebenchError(f"cannot resume {self.folder}: it was started with another model or mode")
            elif overwrite:
                shutil.rmtree(self.partial)
            else:
                raise MicebenchError(
                    f"an unfinished precompute exists for {self.folder} (use --resume to continue it or --overwrite)"
                )
        self.partial.mkdir(parents=True, exist_ok=True)
        if not record.is_file():
            atomic_write_text(record, json.dumps(key, default=str), durable=True)

    def done_chunks(self) -> set[int]:
        return {int(p.stem.split("-")[1]) for p in self.partial.glob("chunk-*.json")}

    def write_chunk(
        self, index: int, docnos: Sequence[str], lengths: Sequence[int], tensors: dict[str, list[torch.Tensor]]
    ) -> None:
        """One shard: `tensors[field]` are (tokens, dim) pieces, documents back to back, in `docnos` order."""
        from safetensors.torch import save_file

        name = f"shard-{index:05d}.safetensors"
        packed = {
            f: torch.cat([t.detach().to("cpu", self.dtype) for t in tensors[f]]).contiguous() for f in self.fields
        }
        packed["lengths"] = torch.tensor(list(lengths), dtype=torch.int32)
        tmp = self.partial / f".{name}.tmp"
        save_file(packed, str(tmp))
        os.replace(tmp, self.partial / name)
        chunk = {
            "file": name,
            "docs": len(docnos),
            "docnos": list(docnos),
            "tokens": int(packed["lengths"].sum()),
            "bytes": (self.partial / name).stat().st_size,
        }
        atomic_write_text(self.partial / f"chunk-{index:05d}.json", json.dumps(chunk), durable=True)

    def finish(self) -> Path:
        """Rank 0, once every chunk is written: manifest, doc ids, and the rename into place."""
        chunks = [json.loads(p.read_text()) for p in sorted(self.partial.glob("chunk-*.json"))]
        docnos = [d for c in chunks for d in c["docnos"]]
        if not docnos:
            raise MicebenchError("no documents were encoded")
        if len(set(docnos)) != len(docnos):
            raise MicebenchError("duplicate document ids while building the store")
        total_bytes = sum(c["bytes"] for c in chunks)
        manifest = {
            **self.meta,
            "fields": self.fields,
            "dtype": str(self.dtype).replace("torch.", ""),
            "num_docs": len(docnos),
            "num_tokens": sum(c["tokens"] for c in chunks),
            "bytes": total_bytes,
            "bytes_per_doc": total_bytes / len(docnos),
            "shards": [{"file": c["file"], "docs": c["docs"]} for c in chunks],
            "status": "complete",
        }
        (self.partial / "docnos.json").write_text(json.dumps(docnos))
        for p in [*self.partial.glob("chunk-*.json"), self.partial / "partial.json"]:
            p.unlink()
        (self.partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if self.folder.exists():
            shutil.rmtree(self.folder)
        os.replace(self.partial, self.folder)
        return self.folder


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
