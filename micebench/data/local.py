"""Collections stored on disk in BEIR layout (corpus.jsonl[.gz], queries.jsonl, qrels/, candidates/)."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import IO

from micebench.data.base import Dataset, join_title
from micebench.data.trec import Qrels, Run, read_qrels_tsv, read_run
from micebench.errors import DataError


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="\n")
    return open(path, encoding="utf-8", newline="\n")


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-empty line, with file:line errors for bad JSON."""
    try:
        with _open_text(path) as handle:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{lineno}: malformed JSON ({err.msg})") from None
                if not isinstance(record, dict) or "_id" not in record:
                    raise DataError(f"{path}:{lineno}: record has no '_id' field")
                yield lineno, record
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 ({err.reason} at byte {err.start})") from None
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None


def is_beir_folder(path: Path) -> bool:
    """True when a folder looks like a BEIR-layout collection."""
    return path.is_dir() and (path / "queries.jsonl").is_file() and (path / "qrels").is_dir()


class LocalBeirDataset(Dataset):
    """A BEIR-layout folder; the corpus is streamed, never loaded whole."""

    def __init__(self, path: str | Path, split: str | None = None, name: str | None = None):
        self.path = Path(path).expanduser().resolve()
        if not self.path.is_dir():
            raise DataError(f"dataset folder not found: {path}")
        corpus = [self.path / "corpus.jsonl.gz", self.path / "corpus.jsonl"]
        found = [c for c in corpus if c.is_file()]
        if not found:
            raise DataError(f"{self.path}: no corpus.jsonl or corpus.jsonl.gz (not a BEIR-layout folder)")
        self.corpus_path = found[0]
        if not (self.path / "queries.jsonl").is_file():
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
        seen: set[str] = set()
        for lineno, record in _iter_jsonl(self.corpus_path):
            docno = str(record["_id"])
            if docno in seen:
                raise DataError(f"{self.corpus_path}:{lineno}: duplicate document id {docno!r}")
            seen.add(docno)
            yield docno, join_title(record.get("title"), record.get("text"))

    def doc_texts(self, docnos: Iterable[str]) -> dict[str, str]:
        wanted = set(docnos)
        found: dict[str, str] = {}
        for docno, text in self.iter_docs():
            if docno in wanted:
                found[docno] = text
                if len(found) == len(wanted):
                    break
        return found

    def candidate_names(self) -> list[str]:
        folder = self.path / "candidates"
        return sorted(p.stem for p in folder.glob("*.trec")) if folder.is_dir() else []

    def candidates(self, name: str) -> Run:
        path = self.path / "candidates" / f"{name}.trec"
        if not path.is_file():
            raise KeyError(name)
        return read_run(path)

    def fingerprint(self) -> str:
        stat = self.corpus_path.stat()
        key = f"{self.corpus_path}|{stat.st_size}|{int(stat.st_mtime)}"
        return hashlib.sha256(key.encode()).hexdigest()[:16]


@cache
def _read_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for lineno, record in _iter_jsonl(path):
        qid = str(record["_id"])
        if qid in queries:
            raise DataError(f"{path}:{lineno}: duplicate query id {qid!r}")
        queries[qid] = str(record.get("text") or "")
    return queries


@cache
def _read_qrels(path: Path) -> Qrels:
    return read_qrels_tsv(path)
