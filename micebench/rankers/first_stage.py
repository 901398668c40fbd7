"""Rankers that keep the first-stage order: `bm25` (the BM25 first stage itself) and `first-stage`."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from micebench.errors import MicebenchError
from micebench.rankers.contract import Ranker, checked_scores
from micebench.rankers.registry import register_ranker


@register_ranker("first-stage", "no re-ranking: evaluates the first-stage candidates as they are")
class FirstStageRanker(Ranker):
    """Keeps the first-stage scores; evaluates shipped runs or run files."""

    name = "first-stage"
    records_progress = False

    @classmethod
    def reads_text(cls, options: dict[str, Any]) -> bool:
        return False

    def score(self, query: str, docs: list[str]) -> np.ndarray:
        raise NotImplementedError("first-stage keeps candidate scores; use rerank on a candidates frame")

    def score_candidates(self, candidates: pd.DataFrame) -> np.ndarray:
        return checked_scores(candidates["score"].to_numpy(dtype=np.float64), len(candidates))


@register_ranker("bm25", "BM25 first stage (bm25s, k1=0.9 b=0.4) without re-ranking")
class BM25Ranker(FirstStageRanker):
    """BM25: the first stage itself. `score` ranks a given document list with statistics of that list only."""

    name = "bm25"
    requires_bm25_first_stage = True
    #: the first stage's parameters (Pyserini's defaults), which `score` uses too
    k1, b = 0.9, 0.4

    def score(self, query: str, docs: list[str]) -> np.ndarray:
        from micebench.firststage.bm25 import BM25Index, BM25Params

        index = BM25Index.build(((str(i), d) for i, d in enumerate(docs)), BM25Params(k1=self.k1, b=self.b))
        found = index.search({"q": query}, len(docs))["q"]
        return np.asarray([found.get(str(i), 0.0) for i in range(len(docs))], dtype=np.float64)

    def score_frame(self, pairs: pd.DataFrame, dataset: Any = None) -> np.ndarray:
        """BM25 scores with the corpus's statistics (the scores BM25 retrieval ranks by), not with those of each
        query's short list alone; used when BM25 is a teacher."""
        from micebench.firststage.bm25 import bm25_index_for

        if dataset is None:
            raise MicebenchError("bm25 scores of given pairs need their dataset (its corpus statistics)")
        index = bm25_index_for(dataset)
        values = np.empty(len(pairs), dtype=np.float64)
        for rows in pairs.groupby("qid", sort=False).indices.values():
            values[rows] = index.score_documents(pairs["query"].iat[rows[0]], pairs["docno"].take(rows).tolist())
        return values

    def describe(self) -> dict[str, Any]:
        return {"ranker": self.name, "k1": self.k1, "b": self.b}
