"""Reading and writing TREC-format run files and qrels, with line-numbered errors."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

from micebench.errors import DataError

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]


def read_run(path: str | Path) -> Run:
    """Read a TREC run (`qid Q0 docno rank score tag`); the score column decides the order."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"run file not found: {path}")
    run: Run = {}
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 6:
                raise DataError(f"{path}:{lineno}: malformed run line (expected 6 columns, got {len(parts)})")
            qid, _, docno, rank, score, _tag = parts
            try:
                int(rank)
                value = float(score)
            except ValueError:
                raise DataError(f"{path}:{lineno}: malformed run line (rank/score not numeric)") from None
            if not math.isfinite(value):
                raise DataError(f"{path}:{lineno}: non-finite score {score!r}")
            docs = run.setdefault(qid, {})
            if docno in docs:
                raise DataError(f"{path}:{lineno}: document {docno!r} listed twice for query {qid!r}")
            docs[docno] = value
    if not run:
        raise DataError(f"run file is empty: {path}")
    return run


def ranked(docs: Mapping[str, float]) -> list[tuple[str, float]]:
    """Order documents by descending score, ties broken by ascending doc id (deterministic)."""
    return sorted(docs.items(), key=lambda item: (-item[1], item[0]))


def format_run(run: Mapping[str, Mapping[str, float]], tag: str) -> Iterable[str]:
    """Yield TREC run lines: queries in id order, 1-based ranks, ties broken by doc id."""
    for qid in sorted(run):
        for rank, (docno, score) in enumerate(ranked(run[qid]), start=1):
            yield f"{qid} Q0 {docno} {rank} {score:.6f} {tag}\n"


def read_qrels_tsv(path: str | Path) -> Qrels:
    """Read BEIR-style qrels (`query-id corpus-id score`, tab separated, optional header)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"qrels file not found: {path}")
    qrels: Qrels = {}
    with open(path, encoding="utf-8", newline="") as handle:
        for lineno, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if lineno == 1 and row[0] == "query-id":
                continue
            if len(row) == 4:  # TREC qrels: qid iter docno rel
                row = [row[0], row[2], row[3]]
            if len(row) != 3:
                raise DataError(f"{path}:{lineno}: malformed qrels line (expected 3 tab-separated columns)")
            qid, docno, rel = (cell.strip() for cell in row)
            try:
                grade = int(rel)
            except ValueError:
                raise DataError(
                    f"{path}:{lineno}: malformed qrels line (relevance {rel!r} is not an integer)"
                ) from None
            if not qid or not docno:
                raise DataError(f"{path}:{lineno}: malformed qrels line (empty id)")
            qrels.setdefault(qid, {})[docno] = grade
    if not qrels:
        raise DataError(f"qrels file is empty: {path}")
    return qrels
