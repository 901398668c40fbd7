"""Encode every document of a dataset once and write a document store for MICE or ColBERT."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from micebench.data.base import Dataset
from micebench.errors import MicebenchError
from micebench.progress import progress_bar
from micebench.rankers.batching import length_sorted_batches
from micebench.store.document_store import StoreWriter

_CHUNK = 4096


def _chunks(docs: Iterator[tuple[str, str]]) -> Iterator[tuple[list[str], list[str]]]:
    ids: list[str] = []
    texts: list[str] = []
    for docno, text in docs:
        ids.append(docno)
        texts.append(text)
        if len(ids) == _CHUNK:
            yield ids, texts
            ids, texts = [], []
    if ids:
        yield ids, texts


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
) -> Path:
    """Build the store of `ranker` (a MiceRanker in states|kv mode, or a ColBERT ranker) over the corpus."""
    from micebench.rankers.models import pick_dtype

    store_dtype = pick_dtype(dtype)
    fields, kind = ranker.store_fields(mode)
    meta = {
        "kind": kind,
        "mode": mode,
        "fingerprint": ranker.store_fingerprint(mode),
        "model": ranker.describe(),
        "dataset": dataset.describe(),
    }
    writer = StoreWriter(folder, meta, fields, store_dtype, overwrite=overwrite)
    done = 0
    try:
        with torch.inference_mode(), progress_bar("precomputing documents", unit="docs") as bar:
            for ids, texts in _chunks(dataset.iter_docs()):
                if limit is not None:
                    ids, texts = ids[: limit - done], texts[: limit - done]
                for idx in length_sorted_batches(texts, ranker.batch_size):
                    tensors, mask = ranker.store_encode([texts[i] for i in idx], mode)
                    writer.add(
                        [ids[i] for i in idx], mask.sum(1).tolist(), {f: _pack(tensors[f], mask) for f in fields}
                    )
                    bar.advance(len(idx))
                done += len(ids)
                if limit is not None and done >= limit:
                    break
        if done == 0:
            raise MicebenchError(f"dataset {dataset.name!r} has no documents")
        return writer.finish()
    except BaseException:
        writer.abort()
        raise
