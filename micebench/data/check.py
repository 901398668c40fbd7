"""`micebench datasets check`: find everything wrong with a collection in one pass, file and line included.

Reports duplicate document/query ids, qrels and candidate ids missing from the corpus or the queries, empty
texts, non-UTF-8 bytes and malformed lines. Problems that make evaluation wrong are fatal; the rest are warnings.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from micebench.data.base import Dataset
from micebench.data.local import LocalBeirDataset


@dataclass
class Finding:
    fatal: bool
    what: str
    count: int
    example: str


@dataclass
class CheckReport:
    dataset: str
    findings: list[Finding] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)

    def add(self, fatal: bool, what: str, examples: list[str]) -> None:
        if examples:
            self.findings.append(Finding(fatal, what, len(examples), examples[0]))

    @property
    def fatal(self) -> bool:
        return any(f.fatal for f in self.findings)


def _lines(path: Path) -> list[tuple[int, bytes]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        return [(i, line) for i, line in enumerate(handle, start=1)]


PLURAL = {"document": "documents", "query": "queries"}


def _jsonl(path: Path, report: CheckReport, kind: str) -> dict[str, str]:
    records: dict[str, str] = {}
    duplicates, empty, bad_utf8, malformed = [], [], [], []
    for lineno, raw in _lines(path):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            bad_utf8.append(f"{path.name}:{lineno} (byte {err.start})")
            text = raw.decode("utf-8", errors="replace")
        try:
            record = json.loads(text)
            rid = str(record["_id"])
        except (json.JSONDecodeError, KeyError, TypeError):
            malformed.append(f"{path.name}:{lineno}")
            continue
        body = " ".join(str(record.get(k) or "") for k in ("title", "text")).strip()
        if rid in records:
            duplicates.append(f"{rid!r} ({path.name}:{lineno})")
        if not body:
            empty.append(f"{rid!r} ({path.name}:{lineno})")
        records[rid] = body
    report.add(True, f"malformed {kind} lines", malformed)
    report.add(True, f"duplicate {kind} ids", duplicates)
    report.add(kind == "query", f"{PLURAL[kind]} with empty text", empty)
    report.add(True, f"{kind} lines with non-UTF-8 bytes", bad_utf8)
    return records


def _tsv_qrels(path: Path, report: CheckReport) -> list[tuple[str, str, int]]:
    rows, malformed = [], []
    for lineno, raw in _lines(path):
        parts = raw.decode("utf-8", errors="replace").rstrip("\r\n").split("\t")
        if lineno == 1 and parts[0] == "query-id" or not raw.strip():
            continue
        if len(parts) == 4:
            parts = [parts[0], parts[2], parts[3]]
        try:
            rows.append((parts[0], parts[1], int(parts[2])))
        except (IndexError, ValueError):
            malformed.append(f"{path.name}:{lineno}")
    report.add(True, f"malformed qrels lines in {path.name}", malformed)
    return rows


def check_local(dataset: LocalBeirDataset) -> CheckReport:
    report = CheckReport(dataset.name)
    corpus = _jsonl(dataset.corpus_path, report, "document")
    queries = _jsonl(dataset.path / "queries.jsonl", report, "query")
    report.stats.update(documents=len(corpus), queries=len(queries))
    for qrels_path in sorted((dataset.path / "qrels").glob("*.tsv")):
        rows = _tsv_qrels(qrels_path, report)
        report.stats[f"qrels {qrels_path.stem}"] = len(rows)
        report.add(
            True,
            f"{qrels_path.name}: query ids absent from queries.jsonl",
            sorted({q for q, _, _ in rows if q not in queries}),
        )
        report.add(
            False,
            f"{qrels_path.name}: judged document ids absent from the corpus",
            sorted({d for _, d, _ in rows if d not in corpus}),
        )
        pairs = Counter((q, d) for q, d, _ in rows)
        report.add(
            True,
            f"{qrels_path.name}: (query, document) judged twice",
            sorted(f"{q}/{d}" for (q, d), n in pairs.items() if n > 1),
        )
    for run_path in (
        sorted((dataset.path / "candidates").glob("*.trec")) if (dataset.path / "candidates").is_dir() else []
    ):
        malformed, ids = [], []
        for lineno, raw in _lines(run_path):
            parts = raw.decode("utf-8", errors="replace").split()
            if not parts:
                continue
            if len(parts) != 6:
                malformed.append(f"{run_path.name}:{lineno}")
                continue
            ids.append((parts[0], parts[2]))
        report.add(True, f"malformed lines in candidates/{run_path.name}", malformed)
        report.add(
            True,
            f"candidates/{run_path.name}: document ids absent from the corpus",
            sorted({d for _, d in ids if d not in corpus}),
        )
        report.add(
            False,
            f"candidates/{run_path.name}: query ids absent from queries.jsonl",
            sorted({q for q, _ in ids if q not in queries}),
        )
    return report


def check_dataset(dataset: Dataset) -> CheckReport:
    """Full check of a local folder; for ir_datasets ids, queries/qrels consistency (the corpus is its own)."""
    if isinstance(dataset, LocalBeirDataset):
        return check_local(dataset)
    report = CheckReport(dataset.name)
    queries = dataset.queries()
    qrels = dataset.qrels()
    report.stats.update(queries=len(queries), judged_queries=len(qrels))
    report.add(True, "qrels query ids absent from the queries", sorted(set(qrels) - set(queries)))
    report.add(
        True, "judged queries with empty text", sorted(q for q in qrels if q in queries and not queries[q].strip())
    )
    return report
