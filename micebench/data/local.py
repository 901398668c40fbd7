"""Collections stored on disk in BEIR layout (corpus.jsonl[.gz], queries.jsonl, qrels/, candidates/)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path

from micebench.data.base import Dataset, join_title
from micebench.data.trec import Problem, Qrels, Run, Sink, ignore, read_lines, read_qrels_tsv, read_run, refuse_or_warn
from micebench.errors import DataError, not_found

#: corpora (path, size, mtime) read to the end once in this process without a fatal problem
_verified_corpora: set[tuple[str, int, int]] = set()


def iter_jsonl(path: Path, kind: str, sink: Sink = refuse_or_warn) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-empty JSONL line; bad lines go to `sink` as `<kind>.malformed`."""
    return iter_jsonl_lines(read_lines(path, sink), path, kind, sink)


def iter_jsonl_lines(lines: Iterable[tuple[int, str]], path: Path, kind: str, sink: Sink) -> Iterator[tuple[int, dict]]:
    """`iter_jsonl` over given (line number, text) pairs of `path`."""
    for lineno, line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            sink(Problem(f"{kind}.malformed", f"{path}:{lineno}: malformed JSON ({err.msg})", path))
            continue
        if not isinstance(record, dict) or "_id" not in record:
            sink(Problem(f"{kind}.malformed", f"{path}:{lineno}: record has no '_id' field", path))
            continue
        yield lineno, record


def _first_line_with_id(path: Path, kind: str, rid: str, before: int) -> int:
    """Line of the first record with id `rid` (rescanned only when a duplicate is found, so no id-to-line map)."""
    for lineno, record in iter_jsonl(path, kind, ignore):
        if lineno >= before:
            break
        if str(record["_id"]) == rid:
            return lineno
    return 0


def first_sight(path: Path, seen: set[str], docno: str, lineno: int, sink: Sink) -> bool:
    """Add a document id to `seen`; a repeat goes to `sink` naming both lines (and False is returned)."""
    if docno in seen:
        first = _first_line_with_id(path, "document", docno, lineno)
        message = f"{path}:{lineno}: duplicate document id {docno!r} (first on line {first})"
        sink(Problem("document.duplicate", message, path))
        return False
    seen.add(docno)
    return True


def iter_corpus(path: Path, sink: Sink = refuse_or_warn) -> Iterator[tuple[str, str]]:
    """Stream (docno, text) of a corpus file; a duplicate id is refused naming both lines, empty texts are counted."""
    seen: set[str] = set()
    empty, first_empty = 0, ""
    for lineno, record in iter_jsonl(path, "document", sink):
        docno = str(record["_id"])
        if not first_sight(path, seen, docno, lineno, sink):
            continue
        text = join_title(record.get("title"), record.get("text"))
        if not text.strip():
            empty += 1
            first_empty = first_empty or f"{docno!r} on line {lineno}"
        yield docno, text
    if empty:
        message = f"{path}: documents with empty text: {empty} (first: {first_empty})"
        sink(Problem("document.empty-text", message, path, empty))
    if not seen:
        sink(Problem("document.none", f"{path}: no documents", path))


#: a JSONL record whose first field is a string `_id` without escapes: its id is read without parsing the line
_LEADING_ID = re.compile(r'\s*\{\s*"_id"\s*:\s*"([^"\\]*)"\s*[,}]')


def iter_corpus_ids(path: Path, sink: Sink = refuse_or_warn) -> Iterator[str]:
    """Stream the document ids of a corpus file, duplicates refused as by `iter_corpus`, texts not parsed.

    A line that starts with its `_id` gives the id directly (BEIR's files all do); other lines are parsed whole.
    About twice as fast as `iter_corpus` where only ids matter (checking a first stage's candidates)."""
    seen: set[str] = set()
    for lineno, line in read_lines(path, sink):
        found = _LEADING_ID.match(line)
        if found is not None:
            docno = found.group(1)
        elif not line.strip():
            continue
        else:
            record = next((r for _, r in iter_jsonl_lines([(lineno, line)], path, "document", sink)), None)
            if record is None:
                continue
            docno = str(record["_id"])
        if first_sight(path, seen, docno, lineno, sink):
            yield docno
    if not seen:
        sink(Problem("document.none", f"{path}: no documents", path))


def read_queries(path: Path, sink: Sink = refuse_or_warn) -> dict[str, str]:
    """All queries of a queries.jsonl as {qid: text}; a duplicate id is refused naming both lines."""
    queries: dict[str, str] = {}
    for lineno, record in iter_jsonl(path, "query", sink):
        qid = str(record["_id"])
        if qid in queries:
            first = _first_line_with_id(path, "query", qid, lineno)
            sink(
                Problem("query.duplicate", f"{path}:{lineno}: duplicate query id {qid!r} (first on line {first})", path)
            )
            continue
        queries[qid] = str(record.get("text") or "")
    return queries


def is_beir_folder(path: Path) -> bool:
    """True when a folder looks like a BEIR-layout collection."""
    queries = path / "queries.jsonl"  # a link in a loop counts: opening the folder names it
    return path.is_dir() and (queries.is_file() or queries.is_symlink()) and (path / "qrels").is_dir()


class LocalBeirDataset(Dataset):
    """A BEIR-layout folder; the corpus is streamed, never loaded whole."""

    def __init__(self, path: str | Path, split: str | None = None, name: str | None = None):
        self.path = Path(path).expanduser().resolve()
        if not self.path.is_dir():
            raise DataError(not_found("dataset folder", path))
        corpus = [self.path / "corpus.jsonl.gz", self.path / "corpus.jsonl"]
        found = [c for c in corpus if c.is_file()]
        if not found:
            linked = next((c for c in corpus if c.is_symlink()), None)  # a link in a loop or to nothing
            if linked is not None:
                raise DataError(not_found("corpus file", linked))
            raise DataError(f"{self.path}: no corpus.jsonl or corpus.jsonl.gz (not a BEIR-layout folder)")
        self.corpus_path = found[0]
        if not (self.path / "queries.jsonl").is_file():
            if (self.path / "queries.jsonl").is_symlink():
                raise DataError(not_found("queries file", self.path / "queries.jsonl"))
            raise DataError(f"{self.path}: no queries.jsonl (not a BEIR-layout folder)")
        splits = sorted(p.stem for p in (self.path / "qrels").glob("*.tsv"))
        if not splits:
            raise DataError(f"{self.path}: no qrels/<split>.tsv")
        if split is None:
            split = "test" if "test" in splits else splits[0]
        if split not in splits:
            raise DataError(f"{self.path}: no qrels for split {split!r} (available: {', '.join(splits)})")
        self.split = split
        self.name = name or self.path.name
        self.source = f"local:{self.path}#{split}"

    def queries(self) -> dict[str, str]:
        return _read_queries(self.path / "queries.jsonl")

    def qrels(self) -> Qrels:
        return _read_qrels(self.path / "qrels" / f"{self.split}.tsv")

    def iter_docs(self) -> Iterator[tuple[str, str]]:
        """Stream the corpus, refusing duplicate ids and unreadable lines; a full pass marks the file as checked."""
        yield from iter_corpus(self.corpus_path)
        _verified_corpora.add(self._corpus_key())

    def doc_texts(self, docnos: Iterable[str]) -> dict[str, str]:
        """Texts of the wanted documents; the whole corpus is read (and checked) unless this process already did."""
        wanted = set(docnos)
        found: dict[str, str] = {}
        if not wanted:
            return found
        verified = self._corpus_key() in _verified_corpora
        for docno, text in self.iter_docs():
            if docno in wanted:
                found[docno] = text
                if verified and len(found) == len(wanted):
                    break
        return found

    def absent_docs(self, docnos: Iterable[str]) -> list[str]:
        """The ids among `docnos` that the corpus lacks, sorted: one pass over the corpus's ids."""
        wanted = set(docnos)
        for docno in iter_corpus_ids(self.corpus_path):
            wanted.discard(docno)
        return sorted(wanted)

    def _corpus_key(self) -> tuple[str, int, int]:
        """Identifies the corpus file's current content cheaply (path, size, modification time; zeros if unreadable)."""
        try:
            stat = self.corpus_path.stat()
        except OSError:
            return str(self.corpus_path), 0, 0
        return str(self.corpus_path), stat.st_size, stat.st_mtime_ns

    def candidate_names(self) -> list[str]:
        folder = self.path / "candidates"
        return sorted(p.stem for p in folder.glob("*.trec")) if folder.is_dir() else []

    def candidates(self, name: str) -> Run:
        path = self.path / "candidates" / f"{name}.trec"
        if not path.is_file():
            if path.is_symlink():
                raise DataError(not_found("candidates file", path))
            raise KeyError(name)
        return read_run(path)

    def fingerprint(self) -> str:
        """The corpus file's size and its first and last MiB: a copy of the folder (new path, new modification
        times) keeps its BM25 index and can resume a store, while an edited corpus gets a new fingerprint."""
        return _content_fingerprint(self.corpus_path)


def _content_fingerprint(path: Path, window: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as handle:
        digest.update(f"{size}|".encode())
        digest.update(handle.read(window))
        if size > window:
            handle.seek(max(window, size - window))
            digest.update(handle.read(window))
    return digest.hexdigest()[:16]


@cache
def _read_queries(path: Path) -> dict[str, str]:
    return read_queries(path)


@cache
def _read_qrels(path: Path) -> Qrels:
    return read_qrels_tsv(path)
