"""Effectiveness measures computed with ranx, named as the field writes them."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np

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
    if cutoff and (not cutoff.isdigit() or int(cutoff) < 1):
        raise DataError(f"measure {measure!r}: the cutoff after @ must be a whole number of at least 1")
    name = _RANX[base] + (f"@{cutoff}" if cutoff else "")
    return f"{name}-l{rel_level}" if base != "nDCG" and rel_level != 1 else name


@dataclass
class Evaluation:
    """Mean and per-query values of each measure, plus the settings that produced them."""

    means: dict[str, float]
    per_query: dict[str, dict[str, float]]  # measure -> qid -> value
    rel_level: int
    num_queries: int
    #: measures computed otherwise than by ranx, and by what (a collection's protocol, e.g. NanoBEIR's evaluator)
    sources: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        extra = {"computed_otherwise": self.sources} if self.sources else {}
        return {
            "measures": self.means,
            "num_queries": self.num_queries,
            "binary_relevance_level": self.rel_level,
            "ndcg_gain": "linear (trec_eval)",
            "evaluator": "ranx",
            **extra,
        }


def evaluate(qrels: Qrels, run: Run, measures: Sequence[str] = DEFAULT_MEASURES, rel_level: int = 1) -> Evaluation:
    """Evaluate the judged queries of `qrels`; judged queries missing from the run score 0 (trec_eval -c)."""
    os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "micebench", "numba"))
    from numba.core.errors import NumbaTypeSafetyWarning
    from ranx.meta.evaluate import extract_metric_and_params
    from ranx.metrics import metric_switch

    # ranx's nDCG kernel casts numba's loop index when it is compiled (ranx.evaluate does the same): harmless
    warnings.filterwarnings("ignore", "unsafe cast from uint64 to int64", NumbaTypeSafetyWarning)

    if not qrels:
        raise DataError("no judged queries to evaluate")
    if not any(docs and qid in qrels for qid, docs in run.items()):
        raise DataError("the run shares no query id with the qrels")
    names = {m: to_ranx(m, rel_level) for m in measures}
    qids = sorted(qrels)
    # what ranx.evaluate computes from Qrels and a comparable Run: qrels sorted once, a run twice (on creation and
    # in make_comparable); each measure's kernel called as ranx.evaluate calls it
    judged, ranking = ranx_rows(qrels, qids, passes=1), ranx_rows(run, qids, passes=2)
    scores = {}
    for name in dict.fromkeys(names.values()):
        measure, cutoff, level = extract_metric_and_params(name)
        scores[name] = metric_switch(measure)(judged, ranking, cutoff, level)
    means = {m: float(np.mean(scores[r])) for m, r in names.items()}
    per_query = {m: dict(zip(qids, scores[r].tolist(), strict=True)) for m, r in names.items()}
    return Evaluation(means, per_query, rel_level, len(qids))


def ranx_rows(table: Mapping[str, Mapping[str, float]], qids: list[str], passes: int) -> Any:
    """ranx's input for `qids` (absent ones empty): per query, (hash of doc id, value) rows in ranx's order."""
    from micebench.evaluation.kernels import ranked_rows

    docs = [table.get(qid) or {} for qid in qids]
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum([len(d) for d in docs], out=offsets[1:])
    count = int(offsets[-1])
    rows = np.empty((count, 2), dtype=np.float64)
    rows[:, 0] = np.fromiter(map(hash, chain.from_iterable(docs)), dtype=np.float64, count=count)  # as ranx does
    rows[:, 1] = np.fromiter(chain.from_iterable(d.values() for d in docs), dtype=np.float64, count=count)
    return ranked_rows(rows, offsets, passes)
