"""Batching: texts of similar length share a batch so padding stays small; batches are padded, moved to the
device without waiting, and their scores copied back once."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np


def length_sorted_batches(texts: Sequence[str], batch_size: int) -> Iterator[np.ndarray]:
    """Yield index arrays covering `texts`, longest (in characters) first, `batch_size` at a time."""
    return stored_batches([len(t) for t in texts], batch_size, by_length=True)


def stored_batches(lengths: Sequence[int] | np.ndarray, batch_size: int, by_length: bool) -> Iterator[np.ndarray]:
    """Index arrays covering items of the given lengths (e.g. stored documents' tokens), `batch_size` at a time:
    longest first when `by_length` (so that each batch pads little; ties keep their order), else in input order."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1 (got {batch_size})")
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable") if by_length else np.arange(len(lengths))
    return (order[start : start + batch_size] for start in range(0, len(order), batch_size))


# -- batches: tokenised once, padded per batch, moved without waiting, scores copied back once ----------------------


def pad_multiple(device: Any) -> int | None:
    """The multiple batches are padded to on `device`: 8 on CUDA (tensor-core friendly shapes), none elsewhere."""
    import torch

    return 8 if torch.device(device).type == "cuda" else None


def pad_rows(
    tokenizer: Any, encoded: Any, rows: Any, multiple: int | None = None, limit: int | None = None
) -> dict[str, Any]:
    """Rows `rows` of an unpadded tokenizer output as (B, L) int64 tensors, padded by `tokenizer.pad`; with
    `multiple`, L is rounded up to a multiple of it (but not past `limit` when L fits in it)."""
    rows = list(rows)
    picked = {key: [sequences[i] for i in rows] for key, sequences in encoded.items() if key in _PADDED}
    width = max((len(ids) for ids in picked["input_ids"]), default=0)
    if multiple:
        rounded = -(-width // multiple) * multiple
        width = max(width, min(rounded, limit)) if limit else rounded
    padded = tokenizer.pad(picked, padding="max_length", max_length=width, return_tensors="pt")
    return {key: padded[key] for key in picked}


#: the tokenizer outputs a padded batch keeps
_PADDED = ("input_ids", "token_type_ids", "attention_mask", "special_tokens_mask")


def move(tensor: Any, device: Any) -> Any:
    """`tensor` on `device`; from the CPU to a GPU through pinned memory, queued on the stream without waiting."""
    import torch

    if tensor.device.type == "cpu" and torch.device(device).type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def to_device(tensors: dict[str, Any], device: Any) -> dict[str, Any]:
    """Host tensors on `device` (see `move`)."""
    return {k: move(v, device) for k, v in tensors.items()}


def scores_to_host(batches: Iterable[tuple[Any, Any]], count: int) -> Any:
    """(positions, device scores) of each batch of `count` documents, copied to the host in one transfer and put
    back in input order, as a float64 numpy array (the batches are scored as they are drawn: draw them inside
    the caller's inference mode)."""
    import torch

    drawn = list(batches)
    scores = np.empty(count, dtype=np.float64)
    if drawn:
        scores[np.concatenate([idx for idx, _ in drawn])] = torch.cat([part for _, part in drawn]).cpu().numpy()
    return scores
