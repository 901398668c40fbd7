"""Encode every document of a dataset once and write a document store for MICE or ColBERT."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from micebench.data.base import Dataset, chunked
from micebench.errors import MicebenchError
from micebench.progress import progress_bar
from micebench.rankers.batching import length_sorted_batches
from micebench.store.document_store import StoreWriter

_CHUNK = 4096


def _pack(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L, D) padded -> (sum of lengths, D), documents back to back."""
    return x[mask.bool()]


def precompute(
    ranker: Any,
    dataset: Dataset,
    folder: str | Path,
    mode: str,
    dtype: str = "fp16",
    overwrite: bool = False,
    limit: int | None = None,
    resume: bool = False,
    world: Any = None,
    chunk_docs: int = _CHUNK,
) -> Path:
    """Build the store of `ranker` (a MiceRanker in states|kv mode, or a ColBERT ranker) over the corpus.

    Resumable chunk by chunk (`resume`); under torchrun (`world`) chunks are shared round-robin between ranks.
    Returns the store folder (on every rank, once rank 0 has assembled it).
    """
    from micebench.rankers.models import pick_dtype
    from micebench.runstate import Distributed

    world = world or Distributed()
    store_dtype = pick_dtype(dtype)
    fields, kind = ranker.store_fields(mode)
    meta = {
        "kind": kind,
        "mode": mode,
        "fingerprint": ranker.store_fingerprint(mode),
        "model": ranker.describe(),
        "dataset": dataset.describe(),
    }
    writer = StoreWriter(folder, meta, fields, store_dtype, overwrite=overwrite, resume=resume, rank=world.rank)
    world.barrier()
    done = writer.done_chunks()
    seen = 0
    with torch.inference_mode(), progress_bar("precomputing documents", unit="docs") as bar:
        for index, (ids, texts) in enumerate(chunked(dataset.iter_docs(), chunk_docs)):
            if limit is not None:
                ids, texts = ids[: limit - seen], texts[: limit - seen]
            seen += len(ids)
            if ids and index % world.world == world.rank and index not in done:
                order, lengths, pieces = [], [], {f: [] for f in fields}
                for idx in length_sorted_batches(texts, ranker.batch_size):
                    tensors, mask = ranker.store_encode([texts[i] for i in idx], mode)
                    order.extend(ids[i] for i in idx)
                    lengths.extend(mask.sum(1).tolist())
                    for f in fields:
                        pieces[f].append(_pack(tensors[f], mask))
                writer.write_chunk(index, order, lengths, pieces)
            bar.advance(len(ids))
            if limit is not None and seen >= limit:
                break
    if seen == 0:
        raise MicebenchError(f"dataset {dataset.name!r} has no documents")
    world.barrier()
    if world.rank == 0:
        writer.finish()
    world.barrier()
    return Path(folder)
