"""Writing a document store: chunk by chunk, resumably, made visible atomically (see `StoreWriter`)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from micebench.atomic import atomic_write_text, writing
from micebench.errors import MicebenchError
from micebench.store.codecs import CODEC_FILE, TOKEN_IDS, StoreCodec
from micebench.store.index import DocIndex, row_table
from micebench.store.manifest import (
    _EXTEND_KEYS,
    CODEC_FORMAT,
    FORMAT,
    MANIFEST,
    dtype_name,
    open_index,
    read_manifest,
    shard_file,
    shard_name,
)
from micebench.store.shards import SCALE_DTYPE, quantize, release, scale_name


class StoreWriter:
    """Writes a store chunk by chunk, resumably; `finish` makes it visible atomically.

    A new store is written into `.<name>.partial/` and renamed when complete. With `extend`, documents are added
    to an existing store (same kind, mode, fingerprint, dtype and fields): its new shards go next to the old ones
    and `finish` swaps in a manifest and index that include them. Each chunk of documents becomes one shard file
    plus a small JSON record (in the partial folder) written after it, so a crash loses at most the chunk in
    progress and `resume` skips the recorded ones. Under torchrun each rank writes its own chunks (chunk i goes to
    rank i mod world) and rank 0 assembles the manifest, in chunk order, so the store is the same as one built by
    a single process. An int8 `dtype` stores each token vector quantised (int8 values + a float32 scale); a
    `codec` (see `codecs.py`) stores codes instead, its codebooks in the store folder (`use_codec`).
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
        codec_name: str | None = None,
    ):
        self.folder = Path(folder)
        self.partial = self.folder.parent / f".{self.folder.name}.partial"
        self.meta, self.fields, self.dtype, self.rank = meta, list(fields), dtype, rank
        self.overwrite, self.resume = overwrite, resume
        self.base: dict[str, Any] | None = None
        self.codec_name = codec_name
        self.codec: StoreCodec | None = None
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
                    "dtype": self.dtype_label,
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
        return self.dtype == torch.int8 and self.codec_name is None

    @property
    def dtype_label(self) -> str:
        """What the manifest's `dtype` says: the torch dtype's name, or the codec's (pq, residual)."""
        return self.codec_name or dtype_name(self.dtype)

    def existing_codec(self) -> StoreCodec | None:
        """The codebooks to reuse: the extended store's, or those an interrupted build recorded (resume)."""
        if self.base is not None:
            entry = self.base.get("codec")
            return StoreCodec.load(self.folder, entry) if entry else None
        record = self.partial / "codec.json"
        if self.resume and record.is_file() and (self.partial / CODEC_FILE).is_file():
            return StoreCodec.load(self.partial, json.loads(record.read_text()))
        return None

    def use_codec(self, codec: StoreCodec, save: bool) -> None:
        """Encode chunks with `codec`; with `save` (rank 0, a new build), write its codebooks into the partial store
        first, so a resume reuses them."""
        self.codec = codec
        if save and self.rank == 0 and self.base is None:
            with writing(self.folder):
                self.prepare()
                codec.save(self.partial)
                atomic_write_text(self.partial / "codec.json", json.dumps(codec.manifest()), durable=True)

    def _check_extends(self, base: dict[str, Any]) -> None:
        """Refuse to extend a store built by another model, mode, dtype or set of fields."""
        ours = {key: self.meta.get(key) for key in ("kind", "mode", "fingerprint")}
        ours |= {"dtype": self.dtype_label, "fields": self.fields}
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
        """One shard: `tensors[field]` are (tokens, dim) pieces, documents back to back, in `docnos` order; a write
        the machine refuses is one line (`atomic.writing`)."""
        with writing(self.folder):
            self._write_chunk(index, docnos, lengths, tensors)

    def _write_chunk(
        self, index: int, docnos: Sequence[str], lengths: Sequence[int], tensors: dict[str, list[torch.Tensor]]
    ) -> None:
        import time

        from safetensors.torch import save_file

        self.prepare()
        name = shard_name(self.first_shard + index)
        packed: dict[str, torch.Tensor] = {}
        encoding = 0.0
        if self.codec_name is not None and self.codec is None:
            raise MicebenchError(f"internal: a {self.codec_name} store written without its codebooks")
        vectors = {field: torch.cat([t.detach() for t in tensors[field]]) for field in self.fields}
        if self.codec is not None:
            start = time.perf_counter()
            token_ids = torch.cat(tensors[TOKEN_IDS]) if TOKEN_IDS in tensors else None
            packed.update(self.codec.encode_chunk(vectors, token_ids))
            encoding = time.perf_counter() - start
        elif self.quantized:
            for field, x in vectors.items():
                values, scales = quantize(x)
                packed[field] = values.cpu().contiguous()
                packed[scale_name(field)] = scales.to("cpu", SCALE_DTYPE).contiguous()
        else:
            packed.update({field: x.to("cpu", self.dtype).contiguous() for field, x in vectors.items()})
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
        if self.codec is not None:
            chunk["encode_seconds"] = round(encoding, 4)
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
        build or extension under `sources`. A write the machine refuses is one line (`atomic.writing`).
        """
        with writing(self.folder):
            return self._finish(source)

    def _finish(self, source: dict[str, Any] | None) -> Path:
        self.prepare()
        chunks = self.chunk_records()
        docnos = [d for c in chunks for d in c["docnos"]]
        lengths = [shard_file(self.shard_dir, c, []).lengths() for c in chunks]
        rows = row_table(range(self.first_shard, self.first_shard + len(chunks)), lengths)
        shards = [{k: c[k] for k in ("file", "docs", "tokens", "bytes")} for c in chunks]
        sources = [source] if source else []
        if self.codec is not None and source is not None:
            source = {**source, "encode_seconds": round(sum(c.get("encode_seconds", 0.0) for c in chunks), 3)}
            sources = [source]
        if self.base is None:
            if not docnos:
                raise MicebenchError("no documents were encoded")
            return self._finish_new(DocIndex.build(docnos, rows), shards, sources)
        return self._finish_extension(docnos, rows, shards, sources)

    def _totals(self, index: DocIndex, shards: list[dict], generation: int, files: dict[str, str]) -> dict[str, Any]:
        """The manifest entries that follow from the documents a store holds."""
        total = sum(s.get("bytes", 0) for s in shards)
        return {
            "format": CODEC_FORMAT if self.codec_name else FORMAT,
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
        manifest = {**self.meta, "fields": self.fields, "dtype": self.dtype_label}
        if self.quantized:
            manifest["quantization"] = {"scheme": "int8, symmetric per token vector", "scale": dtype_name(SCALE_DTYPE)}
        manifest |= self._totals(index, shards, 0, files) | {"sources": sources, "status": "complete"}
        if self.codec is not None:
            codec_bytes = (self.partial / CODEC_FILE).stat().st_size
            encoded = sum(s.get("encode_seconds", 0.0) for s in sources)
            manifest["codec"] = {**self.codec.manifest(), "bytes": codec_bytes}  # format: _totals
            manifest["codec"]["encode_seconds"] = round(encoded, 3)
            (self.partial / "codec.json").unlink(missing_ok=True)
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
