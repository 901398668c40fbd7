"""Training triples (query, positive, negative) with optional teacher scores, from several sources.

- a dataset with train qrels (local BEIR folder or ir_datasets): hard negatives mined from its BM25 top-k;
- an ir_datasets doc-pair source (e.g. `msmarco-passage/train/triples-small`);
- Hofstaetter et al.'s teacher-score TSV (`pos_score neg_score qid pos_id neg_id`) with texts from a dataset.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from micebench.data.base import Dataset
from micebench.errors import DataError


@dataclass(frozen=True)
class Triple:
    qid: str
    pos: str
    neg: str
    teacher_pos: float | None = None
    teacher_neg: float | None = None


@dataclass
class TrainingSet:
    """Triples plus the texts they refer to."""

    triples: list[Triple]
    queries: dict[str, str]
    docs: dict[str, str]
    source: str

    def __post_init__(self) -> None:
        if not self.triples:
            raise DataError(f"training set {self.source!r} is empty (no query with a positive and a negative)")


#: the seed of the held-out validation split: fixed, so every family and every training seed validates on the
#: same queries and trains on the same others
HOLDOUT_SEED = 20260


def holdout_queries(dataset: Dataset, count: int) -> set[str]:
    """`count` of the dataset's judged queries with a relevant document, drawn by a fixed seed (the same split for
    every family and training seed): validated on, never trained on."""
    qrels = dataset.qrels()
    eligible = sorted(
        q for q, t in dataset.queries().items() if t.strip() and any(g > 0 for g in qrels.get(q, {}).values())
    )
    if count >= len(eligible):
        raise DataError(
            f"--holdout {count} leaves nothing to train on: {dataset.name!r} has {len(eligible)} judged queries"
        )
    order = np.random.default_rng(HOLDOUT_SEED).permutation(len(eligible))
    return {eligible[i] for i in order[:count]}


class QuerySubset(Dataset):
    """A dataset restricted to some of its queries (the held-out validation queries); same corpus and facts."""

    def __init__(self, base: Dataset, qids: set[str], label: str) -> None:
        self.base, self.qids = base, set(qids)
        self.name, self.source, self.facts = f"{base.name} ({label})", base.source, base.facts

    def queries(self) -> dict[str, str]:
        return {q: t for q, t in self.base.queries().items() if q in self.qids}

    def qrels(self) -> Any:
        return {q: j for q, j in self.base.qrels().items() if q in self.qids}

    def iter_docs(self) -> Iterator[tuple[str, str]]:
        return self.base.iter_docs()

    def doc_texts(self, docnos: Iterable[str]) -> dict[str, str]:
        return self.base.doc_texts(docnos)

    def absent_docs(self, docnos: Iterable[str]) -> list[str]:
        return self.base.absent_docs(docnos)

    def candidate_names(self) -> list[str]:
        return self.base.candidate_names()

    def candidates(self, name: str) -> Any:
        return {q: r for q, r in self.base.candidates(name).items() if q in self.qids}

    def fingerprint(self) -> str:
        return self.base.fingerprint()  # the same corpus: the BM25 index is shared


def mine_bm25_triples(
    dataset: Dataset, depth: int = 100, negatives: int = 20, seed: int = 0, exclude: Iterable[str] = ()
) -> TrainingSet:
    """For each query with relevant documents, pair each positive with `negatives` BM25 top-`depth` non-relevant
    (queries in `exclude`, the held-out validation queries, are left out)."""
    from micebench.firststage.bm25 import bm25_index_for

    qrels = dataset.qrels()
    left_out = set(exclude)
    queries = {q: t for q, t in dataset.queries().items() if q in qrels and t.strip() and q not in left_out}
    if not queries:
        raise DataError(f"dataset {dataset.name!r} has no judged query to train on")
    run = bm25_index_for(dataset).search(queries, depth)
    rng = random.Random(seed)
    triples = []
    for qid in sorted(queries):
        positives = sorted(d for d, g in qrels[qid].items() if g > 0)
        candidates = sorted((d for d in run.get(qid, {}) if qrels[qid].get(d, 0) <= 0), key=lambda d: -run[qid][d])[
            :depth
        ]
        if not positives or not candidates:
            continue
        chosen = candidates if len(candidates) <= negatives else rng.sample(candidates, negatives)
        triples.extend(Triple(qid, pos, neg) for pos in positives for neg in chosen)
    texts = dataset.doc_texts({t.pos for t in triples} | {t.neg for t in triples})
    triples = [t for t in triples if t.pos in texts and t.neg in texts]
    return TrainingSet(triples, queries, texts, f"{dataset.name} qrels + BM25 top-{depth} negatives")


def read_teacher_scores(path: str | Path, dataset: Dataset) -> TrainingSet:
    """Hofstaetter's format: `pos_score<TAB>neg_score<TAB>qid<TAB>pos_id<TAB>neg_id`, texts from `dataset`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"teacher-score file not found: {path}")
    triples = []
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 5:
                raise DataError(f"{path}:{lineno}: malformed teacher-score line (expected 5 tab-separated fields)")
            try:
                pos_score, neg_score = float(parts[0]), float(parts[1])
            except ValueError:
                raise DataError(f"{path}:{lineno}: teacher scores are not numbers") from None
            if not (math.isfinite(pos_score) and math.isfinite(neg_score)):
                raise DataError(f"{path}:{lineno}: teacher scores must be finite (got {parts[0]!r}, {parts[1]!r})")
            triples.append(Triple(parts[2], parts[3], parts[4], pos_score, neg_score))
    queries = dataset.queries()
    unknown = [t.qid for t in triples if t.qid not in queries]
    if unknown:
        raise DataError(
            f"{path}: {len(unknown)} lines name query ids absent from {dataset.name!r} (e.g. {unknown[0]!r})"
        )
    wanted = {t.pos for t in triples} | {t.neg for t in triples}
    texts = dataset.doc_texts(wanted)
    missing = sorted(wanted - texts.keys())
    if missing:
        raise DataError(f"{path}: {len(missing)} document ids absent from {dataset.name!r} (e.g. {missing[0]!r})")
    return TrainingSet(triples, {q: queries[q] for q in {t.qid for t in triples}}, texts, str(path))


def write_teacher_scores(training: TrainingSet, path: Path) -> None:
    """Cache teacher scores in Hofstaetter's format so a teacher runs once (written under a temporary name, then
    renamed, so an interrupted write leaves no partial file)."""
    from micebench.atomic import atomic_text_writer

    with atomic_text_writer(path) as handle:
        for t in training.triples:
            handle.write(f"{t.teacher_pos:.6f}\t{t.teacher_neg:.6f}\t{t.qid}\t{t.pos}\t{t.neg}\n")
