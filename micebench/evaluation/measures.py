"""Effectiveness measures computed with ranx, named as the field writes them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from micebench.data.trec import Qrels, Run
from micebench.errors import DataError

#: field name -> ranx name (before the relevance-level suffix); nDCG uses trec_eval's linear gains
DEFAULT_MEASURES: tuple[str, ...] = ("nDCG@10", "RR@10", "R@100", "R@1000", "MAP")
_RANX = {"nDCG": "ndcg", "RR": "mrr", "R": "recall", "P": "precision", "MAP": "map", "AP": "map"}


def to_ranx(measure: str, rel_level: int = 1) -> str:
    """`nDCG@10` -> `ndcg@10`; binary measures get ranx's `-l<level>` relevance threshold."""
    base, _, cutoff = measure.partition("@")
    if base not in _RANX:
        raise DataError(f"unknown measure {measure!r} (known: {', '.join(_RANX)} with optional @k)")
    name = _RANX[base] + (f"@{cutoff}" if cutoff else "")
    return f"{name}-l{rel_level}" if base != "nDCG" and rel_level != 1 else name


@dataclass
class Evaluation:
    """Mean and per-query values of each measure, plus the settings that produced them."""

    means: dict[str, float]
    per_query: dict[str, dict[str, float]]  # measure -> qid -> value
    rel_level: int
    num_queries: int

    def as_dict(self) -> dict:
        return {
            "measures": self.means,
            "num_queries": self.num_queries,
            "binary_relevance_level": self.rel_level,
            "ndcg_gain": "linear (trec_eval)",
            "evaluator": "ranx",
        }


def evaluate(qrels: Qrels, run: Run, measures: Sequence[str] = DEFAULT_MEASURES, rel_level: int = 1) -> Evaluation:
    """Evaluate the judged queries of `qrels`; judged queries missing from the run score 0 (trec_eval -c)."""
    os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "micebench", "numba"))
    from ranx import Qrels as RanxQrels
    from ranx import Run as RanxRun
    from ranx import evaluate as ranx_evaluate

    if not qrels:
        raise DataError("no judged queries to evaluate")
    run = {qid: docs for qid, docs in run.items() if docs and qid in qrels}
    if not run:
        raise DataError("the run shares no query id with the qrels")
    names = {m: to_ranx(m, rel_level) for m in measures}
    ranx_qrels = RanxQrels({q: dict(d) for q, d in qrels.items()})
    ranx_run = RanxRun({q: dict(d) for q, d in run.items()})
    ranx_run = ranx_run.make_comparable(ranx_qrels)
    ranx_evaluate(ranx_qrels, ranx_run, list(names.values()), make_comparable=False)
    means = {m: float(ranx_run.mean_scores[r]) for m, r in names.items()}
    per_query = {m: {q: float(v) for q, v in ranx_run.scores[r].items()} for m, r in names.items()}
    return Evaluation(means, per_query, rel_level, len(ranx_qrels))
