"""ranx's per-query input built in bulk by one compiled (and disk-cached) function.

ranx turns `{qid: {docno: value}}` into numba typed dicts, orders each query by descending value with numba's
argsort, and hands its measures one array of (hashed doc id, value) rows per query. Built from Python dicts that
costs seconds per million pairs and compiles typed-container code that numba cannot cache; here the same rows come
from flat arrays, ordered by the same argsort applied as many times as ranx applies it, so ties keep ranx's order.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.typed import List


@njit(cache=True)
def ranked_rows(rows: np.ndarray, offsets: np.ndarray, passes: int) -> List:
    """Per query, its block of (id, value) `rows` (offsets[i]:offsets[i+1]) sorted in place `passes` times by
    ranx's argsort of the negated values; the blocks are views of `rows`."""
    out = List()
    for i in range(len(offsets) - 1):
        block = rows[offsets[i] : offsets[i + 1]]
        for _ in range(passes):
            block[:] = block[np.argsort(-block[:, 1])]
        out.append(block)
    return out
