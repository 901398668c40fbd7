"""Reading and writing TREC-format run files and qrels, and the one set of rules every data reader applies.

Readers report each problem to a sink: the run path's sink (`refuse_or_warn`) raises `DataError` on a fatal
problem and logs the others; `micebench datasets check` collects them all. Both therefore apply the same rules.
"""

from __future__ import annotations

import gzip
import logging
import math
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from micebench.errors import DataError, not_found

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]

log = logging.getLogger("micebench")


@dataclass(frozen=True)
class Rule:
    """One kind of data problem: the heading `datasets check` shows ({file} is the file) and whether run refuses it."""

    what: str
    fatal: bool


#: Every problem a reader or `datasets check` reports, by key. Fatal ones stop `run`; the others are warnings.
RULES: dict[str, Rule] = {
    "unreadable": Rule("{file}: unreadable (missing, truncated or corrupt)", True),
    "not-utf8": Rule("{file}: lines with non-UTF-8 bytes", True),
    "document.malformed": Rule("{file}: malformed document lines", True),
    "document.duplicate": Rule("{file}: duplicate document ids", True),
    "document.none": Rule("{file}: no documents", True),
    "document.empty-text": Rule("{file}: documents with empty text", False),
    "query.malformed": Rule("{file}: malformed query lines", True),
    "query.duplicate": Rule("{file}: duplicate query ids", True),
    "query.empty-judged": Rule("{file}: judged queries with empty text", True),
    "query.empty-unjudged": Rule("{file}: unjudged queries with empty text", False),
    "qrels.malformed": Rule("{file}: malformed qrels lines", True),
    "qrels.conflict": Rule("{file}: (query, document) graded twice with different grades", True),
    "qrels.repeated": Rule("{file}: rows repeated exactly (each pair counted once)", False),
    "qrels.none": Rule("{file}: no judgements (empty or header only)", True),
    "qrels.unknown-query": Rule("{file}: query ids absent from queries.jsonl", True),
    "qrels.unknown-document": Rule("{file}: judged document ids absent from the corpus", False),
    "run.malformed": Rule("malformed lines in {file}", True),
    "run.duplicate": Rule("{file}: document listed twice for a query", True),
    "run.none": Rule("{file}: no candidates (empty file)", True),
    "run.unknown-document": Rule("{file}: document ids absent from the corpus", True),
    "run.unknown-document-unjudged": Rule("{file}: document ids of unjudged queries absent from the corpus", False),
    "run.unknown-query": Rule("{file}: query ids absent from queries.jsonl", False),
}


@dataclass(frozen=True)
class Problem:
    """One finding: its rule, a one-line message (file:line: what), the file it concerns and how many it stands for."""

    rule: str
    message: str
    path: Path
    count: int = 1

    @property
    def fatal(self) -> bool:
        """Whether `run` refuses the data because of it."""
        return RULES[self.rule].fatal


Sink = Callable[[Problem], None]

_warned: set[str] = set()


def refuse_or_warn(problem: Problem) -> None:
    """The run path's sink: raise DataError for a fatal problem, log a warning (once per message) otherwise."""
    if problem.fatal:
        raise DataError(problem.message)
    if problem.message not in _warned:
        _warned.add(problem.message)
        log.warning(problem.message)


def ignore(problem: Problem) -> None:
    """A sink that drops every problem (used when rescanning a file already reported on)."""


def _open(path: Path, text: bool) -> IO:
    """Open a plain or gzip file as UTF-8 text (lines end at \\n only) or as bytes."""
    gz = path.suffix == ".gz"
    if text:
        return (
            gzip.open(path, "rt", encoding="utf-8", newline="\n") if gz else open(path, encoding="utf-8", newline="\n")
        )
    return gzip.open(path, "rb") if gz else open(path, "rb")


def _decode(path: Path, lineno: int, offset: int, raw: bytes, sink: Sink) -> str:
    """A line as text; a non-UTF-8 byte goes to `sink` with its offset in the file and is replaced."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        where = f"byte offset {offset + err.start}" + (" of the decompressed data" if path.suffix == ".gz" else "")
        reason = f"byte 0x{raw[err.start]:02x} at {where}: {err.reason}"
        sink(Problem("not-utf8", f"{path}:{lineno}: not valid UTF-8 ({reason})", path))
        return raw.decode("utf-8", errors="replace")


def read_lines(path: Path, sink: Sink) -> Iterator[tuple[int, str]]:
    """Yield (line number, text) of a plain or gzip file read as UTF-8; bad bytes and read errors go to `sink`.

    Text is decoded in bulk (fast); only after a decoding error is the rest read again line by line as bytes, so
    that each bad byte is reported with its line and its byte offset in the (decompressed) file. A missing,
    truncated or corrupt file is reported once and ends the stream.
    """
    lineno = 0
    try:
        try:
            with _open(path, text=True) as handle:
                for lineno, text in enumerate(handle, start=1):
                    yield lineno, text
            return
        except UnicodeDecodeError:
            pass
        done, offset = lineno, 0
        with _open(path, text=False) as handle:
            for lineno, raw in enumerate(handle, start=1):
                if lineno > done:
                    yield lineno, _decode(path, lineno, offset, raw, sink)
                offset += len(raw)
    except FileNotFoundError:
        sink(Problem("unreadable", not_found("file", path), path))
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        sink(Problem("unreadable", f"{path}:{lineno + 1}: truncated or corrupt gzip file ({err})", path))
    except OSError as err:
        sink(Problem("unreadable", f"{path}:{lineno + 1}: cannot read ({err.strerror or err})", path))


def first_line(path: Path, before: int, match: Callable[[str], bool]) -> int:
    """Number of the first line before `before` whose text matches (0 if none): names both lines of a duplicate."""
    for lineno, text in read_lines(path, ignore):
        if lineno >= before:
            break
        if match(text):
            return lineno
    return 0


def _run_line_matches(qid: str, docno: str) -> Callable[[str], bool]:
    """A matcher for run lines of one (query, document) pair."""

    def match(text: str) -> bool:
        parts = text.split()
        return len(parts) == 6 and parts[0] == qid and parts[2] == docno

    return match


def read_run(path: str | Path, sink: Sink = refuse_or_warn) -> Run:
    """Read a TREC run (`qid Q0 docno rank score tag`); the score column decides the order.

    Refused (through `sink`): a line without 6 columns, a rank that is not an integer, a score that is not a
    finite number, a document listed twice for a query, and a file without any line.
    """
    path = Path(path)
    if not path.is_file():
        sink(Problem("unreadable", not_found("run file", path), path))
        return {}
    run: Run = {}
    for lineno, line in read_lines(path, sink):
        parts = line.split()
        if len(parts) == 6:  # the common case in one go; anything else below, as the rules say
            try:
                int(parts[3])
                score = float(parts[4])
            except ValueError:
                score = math.nan
            if math.isfinite(score):
                docs = run.get(parts[0])
                if docs is None:
                    docs = run[parts[0]] = {}
                if parts[2] not in docs:
                    docs[parts[2]] = score
                    continue
        if not parts:
            continue
        problem = _run_line_problem(parts)
        if problem:
            sink(Problem("run.malformed", f"{path}:{lineno}: {problem}", path))
            continue
        qid, _, docno, _rank, score_text, _tag = parts
        docs = run.setdefault(qid, {})
        if docno in docs:
            first = first_line(path, lineno, _run_line_matches(qid, docno))
            message = f"{path}:{lineno}: document {docno!r} listed twice for query {qid!r} (first on line {first})"
            sink(Problem("run.duplicate", message, path))
            continue
        docs[docno] = float(score_text)
    if not run:
        sink(Problem("run.none", f"{path}: run file is empty (no candidates)", path))
    return run


def _run_line_problem(parts: list[str]) -> str | None:
    """What is wrong with the columns of one run line, or None."""
    if len(parts) != 6:
        return f"malformed run line (expected 6 columns, got {len(parts)})"
    rank, score = parts[3], parts[4]
    try:
        int(rank)
    except ValueError:
        return f"malformed run line (rank {rank!r} is not an integer)"
    try:
        value = float(score)
    except ValueError:
        return f"malformed run line (score {score!r} is not numeric)"
    if not math.isfinite(value):
        return f"non-finite score {score!r}"
    return None


def ranked(docs: Mapping[str, float]) -> list[tuple[str, float]]:
    """Order documents by descending score, ties broken by ascending doc id (deterministic)."""
    return sorted(docs.items(), key=lambda item: (-item[1], item[0]))


def format_run(run: Mapping[str, Mapping[str, float]], tag: str) -> Iterable[str]:
    """Yield TREC run lines: queries in id order, 1-based ranks, ties broken by doc id."""
    for qid in sorted(run):
        yield from query_lines(qid, run[qid], tag)


def query_lines(qid: str, docs: Mapping[str, float], tag: str) -> list[str]:
    """The TREC run lines of one query: 1-based ranks, ties broken by doc id."""
    return [f"{qid} Q0 {docno} {rank} {score:.6f} {tag}\n" for rank, (docno, score) in enumerate(ranked(docs), 1)]


class Judgements:
    """Builds qrels row by row: a pair graded twice with different grades is refused, an exact repeat counted."""

    def __init__(self, source: str, path: Path, sink: Sink, unit: str = "line"):
        self.source, self.path, self.sink, self.unit = source, path, sink, unit
        self.qrels: Qrels = {}
        self._first: dict[tuple[str, str], int] = {}
        self._repeats = 0
        self._repeat_example = ""

    def _at(self, lineno: int) -> str:
        """Where a row is: `file:line` for files, `source row N` for rows without a file."""
        return f"{self.source}:{lineno}" if self.unit == "line" else f"{self.source} row {lineno}"

    def add(self, qid: str, docno: str, grade: int, lineno: int) -> None:
        """Record one judgement found at `lineno`."""
        docs = self.qrels.setdefault(qid, {})
        old = docs.get(docno)
        if old is None:
            docs[docno] = grade
            self._first[qid, docno] = lineno
            return
        first = self._first[qid, docno]
        if old == grade:
            self._repeats += 1
            if not self._repeat_example:
                self._repeat_example = f"{self.unit} {lineno} repeats {self.unit} {first}: {qid} {docno} {grade}"
            return
        message = (
            f"{self._at(lineno)}: query {qid!r} document {docno!r} graded {grade} here but {old} on {self.unit} {first}"
        )
        self.sink(Problem("qrels.conflict", message, self.path))

    def finish(self) -> Qrels:
        """Report exact repeats (a warning with their count) and an empty table, then return the qrels."""
        if self._repeats:
            message = (
                f"{self.source}: rows repeating an earlier row exactly: {self._repeats}, each pair counted once "
                f"(first: {self._repeat_example})"
            )
            self.sink(Problem("qrels.repeated", message, self.path, self._repeats))
        if not self.qrels:
            what = "the file is empty or has only a header" if self.unit == "line" else "no rows"
            self.sink(Problem("qrels.none", f"{self.source}: no judgements ({what})", self.path))
        return self.qrels


def read_qrels_tsv(path: str | Path, sink: Sink = refuse_or_warn) -> Qrels:
    """Read BEIR-style qrels (`query-id corpus-id score`, tab separated, optional header; 4-column TREC qrels too)."""
    path = Path(path)
    if not path.is_file():
        sink(Problem("unreadable", not_found("qrels file", path), path))
        return {}
    table = Judgements(str(path), path, sink)
    for lineno, line in read_lines(path, sink):
        if not line.strip():
            continue
        row = [cell.strip() for cell in line.rstrip("\r\n").split("\t")]
        if lineno == 1 and row[0] == "query-id":
            continue
        if len(row) == 4:  # TREC qrels: qid iter docno rel
            row = [row[0], row[2], row[3]]
        problem = _qrels_row_problem(row)
        if problem:
            sink(Problem("qrels.malformed", f"{path}:{lineno}: malformed qrels line ({problem})", path))
            continue
        table.add(row[0], row[1], int(row[2]), lineno)
    return table.finish()


def _qrels_row_problem(row: list[str]) -> str | None:
    """What is wrong with the cells of one qrels row, or None."""
    if len(row) != 3:
        return "expected 3 tab-separated columns"
    try:
        int(row[2])
    except ValueError:
        return f"relevance {row[2]!r} is not an integer"
    if not row[0] or not row[1]:
        return "empty id"
    return None
