"""`micebench datasets check`: find everything wrong with a collection in one pass, file and line included.

It reads every file with the readers `run` uses (micebench.data.trec and micebench.data.local) and the same rules
(`RULES`), but collects every problem instead of stopping at the first: what `run` refuses is fatal here, what `run`
only warns about is a warning. Cross-file rules (ids of one file absent from another) follow the same table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from micebench.data.base import Dataset
from micebench.data.local import LocalBeirDataset, iter_corpus, read_queries
from micebench.data.trec import RULES, Problem, Qrels, Run, read_qrels_tsv, read_run
from micebench.errors import DataError

T = TypeVar("T")


@dataclass
class Finding:
    """All problems of one rule in one file: severity, heading, how many, the first one's message."""

    fatal: bool
    what: str
    count: int
    example: str


@dataclass
class CheckReport:
    """The findings of a check, grouped by rule and file, plus a few sizes; also the sink readers report to."""

    dataset: str
    root: Path | None = None
    findings: list[Finding] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    _unreadable: set[Path] = field(default_factory=set)

    def __call__(self, problem: Problem) -> None:
        """Record one problem (the sink passed to the readers)."""
        if problem.rule == "unreadable":
            self._unreadable.add(problem.path)
        elif problem.rule.endswith(".none") and problem.path in self._unreadable:
            return  # a file read only in part is already reported; "no documents" would only repeat it
        what = RULES[problem.rule].what.format(file=self._relative(str(problem.path)))
        for finding in self.findings:
            if finding.what == what:
                finding.count += problem.count
                return
        self.findings.append(Finding(problem.fatal, what, problem.count, self._relative(problem.message)))

    def _relative(self, text: str) -> str:
        """Text with the collection folder left out of file paths."""
        return text.replace(f"{self.root}/", "") if self.root else text

    def complete(self, path: Path) -> bool:
        """Whether `path` was read to its end (cross-file rules on a partly read file would be wrong)."""
        return path not in self._unreadable

    def read(self, path: Path, reader: Callable[[], T], empty: T) -> T:
        """Run one reader, turning a DataError it raises into a fatal finding for `path`."""
        try:
            return reader()
        except DataError as err:
            self(Problem("unreadable", str(err), path))
            return empty

    @property
    def fatal(self) -> bool:
        """Whether `run` would refuse this collection."""
        return any(f.fatal for f in self.findings)


def _each(rule: str, path: Path, what: str, ids: Iterable[str]) -> Problem | None:
    """One problem standing for every id in `ids` (sorted; the first one as example), or None when there is none."""
    found = sorted(set(ids))
    if not found:
        return None
    return Problem(rule, f"{path}: {what}: {len(found)} (e.g. {found[0]!r})", path, len(found))


def query_problems(path: Path, queries: dict[str, str], judged: set[str]) -> list[Problem]:
    """Empty query texts: refused for judged queries (run cannot score them), a warning for the others."""
    empty = {qid for qid, text in queries.items() if not text.strip()}
    found = [
        _each("query.empty-judged", path, "judged queries with empty text", empty & judged),
        _each("query.empty-unjudged", path, "unjudged queries with empty text", empty - judged),
    ]
    return [p for p in found if p]


def check_judged_queries(dataset: Dataset) -> None:
    """Refuse judged query ids absent from the queries (one line): `run` cannot score them and training would
    silently drop them."""
    orphans = sorted(set(dataset.qrels()) - set(dataset.queries()))
    if orphans:
        raise DataError(
            f"dataset {dataset.name!r}: {len(orphans)} judged query ids are absent from the queries "
            f"(e.g. {orphans[0]!r})"
        )


def qrels_problems(path: Path, qrels: Qrels, queries: set[str] | None, docs: set[str] | None) -> list[Problem]:
    """Judged query ids absent from the queries (refused by run), judged documents absent from the corpus (warned)."""
    found = []
    if queries is not None:
        found.append(
            _each("qrels.unknown-query", path, "judged query ids absent from the queries", set(qrels) - queries)
        )
    if docs is not None:
        judged_docs = {d for judged in qrels.values() for d in judged}
        found.append(
            _each("qrels.unknown-document", path, "judged documents absent from the corpus", judged_docs - docs)
        )
    return [p for p in found if p]


def run_problems(
    path: Path, run: Run, judged: set[str], queries: set[str] | None, docs: set[str] | None
) -> list[Problem]:
    """Candidate documents absent from the corpus (refused for judged queries) and query ids absent from the queries."""
    found = []
    if docs is not None:
        missing = {(q, d) for q, ranked in run.items() for d in ranked if d not in docs}
        of_judged = {d for q, d in missing if q in judged}
        of_others = {d for q, d in missing if q not in judged}
        found.append(_each("run.unknown-document", path, "candidate documents absent from the corpus", of_judged))
        what = "candidate documents of unjudged queries absent from the corpus"
        found.append(_each("run.unknown-document-unjudged", path, what, of_others))
    if queries is not None:
        found.append(_each("run.unknown-query", path, "query ids absent from the queries", set(run) - queries))
    return [p for p in found if p]


def check_local(dataset: LocalBeirDataset) -> CheckReport:
    """Read every file of a BEIR-layout folder with run's readers, then apply the cross-file rules."""
    report = CheckReport(dataset.name, dataset.path)
    corpus_path, queries_path = dataset.corpus_path, dataset.path / "queries.jsonl"
    docs = report.read(corpus_path, lambda: {docno for docno, _ in iter_corpus(corpus_path, report)}, set())
    queries = report.read(queries_path, lambda: read_queries(queries_path, report), {})
    report.stats.update(documents=len(docs), queries=len(queries))
    known_docs = docs if report.complete(corpus_path) else None
    known_queries = set(queries) if report.complete(queries_path) else None
    judged: set[str] = set()
    for path in sorted((dataset.path / "qrels").glob("*.tsv")):
        qrels = report.read(path, lambda path=path: read_qrels_tsv(path, report), {})
        report.stats[f"qrels {path.stem}"] = sum(len(d) for d in qrels.values())
        judged |= set(qrels)
        for problem in qrels_problems(path, qrels, known_queries, known_docs):
            report(problem)
    for problem in query_problems(queries_path, queries, judged):
        report(problem)
    for name in dataset.candidate_names():
        path = dataset.path / "candidates" / f"{name}.trec"
        run = report.read(path, lambda path=path: read_run(path, report), {})
        for problem in run_problems(path, run, judged, known_queries, known_docs):
            report(problem)
    return report


def check_dataset(dataset: Dataset) -> CheckReport:
    """Full check of a local folder; for ir_datasets ids, queries/qrels consistency (the corpus is its own)."""
    if isinstance(dataset, LocalBeirDataset):
        return check_local(dataset)
    from micebench.data.irds import IrDatasetsDataset

    report = CheckReport(dataset.name)
    where = Path(dataset.name)
    queries = dataset.queries()  # a collection that cannot be loaded at all (offline, gone) is an error, not a row
    if isinstance(dataset, IrDatasetsDataset):
        qrels = report.read(where, lambda: dataset.read_qrels(report), {})
    else:
        qrels = report.read(where, dataset.qrels, {})
    report.stats.update(queries=len(queries), judged_queries=len(qrels))
    for problem in qrels_problems(where, qrels, set(queries) if report.complete(where) else None, None):
        report(problem)
    for problem in query_problems(where, queries, set(qrels)):
        report(problem)
    return report
