"""Training triples (query, positive, negative) with optional teacher scores, from several sources.

- a dataset with train qrels (local BEIR folder or ir_datasets): hard negatives mined from its BM25 top-k;
- an ir_datasets doc-pair source (e.g. `msmarco-passage/train/triples-small`);
- Hofstaetter et al.'s teacher-score TSV (`pos_score neg_score qid pos_id neg_id`) with texts from a dataset.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

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


def mine_bm25_triples(dataset: Dataset, depth: int = 100, negatives: int = 20, seed: int = 0) -> TrainingSet:
    """For each query with relevant documents, pair each positive with `negatives` BM25 top-`depth` non-relevant."""
    from micebench.firststage.bm25 import bm25_index_for

    qrels = dataset.qrels()
    queries = {q: t for q, t in dataset.queries().items() if q in qrels and t.strip()}
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
