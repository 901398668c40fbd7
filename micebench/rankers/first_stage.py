"""Rankers that keep the first-stage order: `bm25` (the BM25 first stage itself) and `first-stage`."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from micebench.rankers.base import Ranker, register_ranker, with_ranks


@register_ranker("first-stage", "no re-ranking: evaluates the first-stage candidates as they are")
class FirstStageRanker(Ranker):
    """Keeps the first-stage scores; evaluates shipped runs or run files."""

    name = "first-stage"
    needs_text = False

    def __init__(self, **_: Any):
        pass

    def score(self, query: str, docs: list[str]) -> np.ndarray:
        raise NotImplementedError("first-stage keeps candidate scores; use rerank on a candidates frame")

    def rerank(self, candidates: pd.DataFrame) -> pd.DataFrame:
        return with_ranks(candidates, candidates["score"].to_numpy(dtype=np.float64))


@register_ranker("bm25", "BM25 first stage (bm25s, k1=0.9 b=0.4) without re-ranking")
class BM25Ranker(FirstStageRanker):
    """BM25: the first stage itself. `score` ranks a given document list with statistics of that list only."""

    name = "bm25"
    requires_bm25_first_stage = True

    def __init__(self, k1: float = 0.9, b: float = 0.4, **_: Any):
        self.k1, self.b = k1, b

    def score(self, query: str, docs: list[str]) -> np.ndarray:
        from micebench.firststage.bm25 import BM25Index, BM25Params

        index = BM25Index.build(((str(i), d) for i, d in enumerate(docs)), BM25Params(k1=self.k1, b=self.b))
        found = index.search({"q": query}, len(docs))["q"]
        return np.asarray([found.get(str(i), 0.0) for i in range(len(docs))], dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        return {"ranker": self.name, "k1": self.k1, "b": self.b}
