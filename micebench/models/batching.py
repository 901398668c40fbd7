"""Length-sorted batching: texts of similar length share a batch so padding stays small."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

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
