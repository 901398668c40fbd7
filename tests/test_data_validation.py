"""One validator for `run` and `datasets check`: what run refuses is fatal in check, what run warns about a warning."""

from __future__ import annotations

import gzip
import logging
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from micebench.cli import main
from micebench.data import load_dataset
from micebench.data.check import check_dataset
from micebench.errors import DataError
from tests.conftest import write_beir

DOCS = [{"_id": f"d{i}", "title": f"title {i}", "text": f"body of document {i}"} for i in range(1, 5)]
QUERIES = [{"_id": "q1", "text": "first query"}, {"_id": "q2", "text": "second query"}]
QRELS = [("q1", "d1", 1), ("q1", "d2", 0), ("q2", "d3", 2)]
RUN = "q1 Q0 d1 1 3.5 bm25\nq1 Q0 d2 2 2.5 bm25\nq2 Q0 d3 1 1.0 bm25\nq2 Q0 d4 2 0.5 bm25\n"


def _collection(folder: Path) -> Path:
    """A clean tiny collection with a shipped bm25 run."""
    write_beir(folder, DOCS, QUERIES, QRELS)
    (folder / "candidates").mkdir()
    (folder / "candidates" / "bm25.trec").write_text(RUN)
    return folder


def _gzip_corpus(folder: Path, keep: float) -> None:
    """Replace corpus.jsonl by a longer corpus.jsonl.gz cut after the first `keep` fraction of its compressed bytes."""
    plain = folder / "corpus.jsonl"
    filler = "".join(f'{{"_id": "f{i}", "text": "filler {i * 7919 % 10007}"}}\n' for i in range(2000))
    data = gzip.compress(plain.read_bytes() + filler.encode())
    (folder / "corpus.jsonl.gz").write_bytes(data[: int(len(data) * keep)])
    plain.unlink()


def _corrupt_gzip(folder: Path) -> None:
    """Replace corpus.jsonl by a corpus.jsonl.gz whose compressed stream is garbage."""
    (folder / "corpus.jsonl").unlink()
    (folder / "corpus.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00 not a deflate stream at all")


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data)


CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "clean": lambda f: None,
    "bad score": lambda f: _append(f / "candidates" / "bm25.trec", b"q2 Q0 d1 3 high bm25\n"),
    "fractional rank": lambda f: _append(f / "candidates" / "bm25.trec", b"q2 Q0 d1 2.5 0.1 bm25\n"),
    "nan score": lambda f: _append(f / "candidates" / "bm25.trec", b"q2 Q0 d1 3 nan bm25\n"),
    "duplicate docno in a run": lambda f: _append(f / "candidates" / "bm25.trec", b"q1 Q0 d1 3 0.1 bm25\n"),
    "empty candidate file": lambda f: (f / "candidates" / "bm25.trec").write_text(""),
    "non-UTF-8 run": lambda f: _append(f / "candidates" / "bm25.trec", b"q2 Q0 d\xff 3 0.1 bm25\n"),
    "header-only qrels": lambda f: (f / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n"),
    "conflicting qrels grades": lambda f: _append(f / "qrels" / "test.tsv", b"q1\td1\t2\n"),
    "duplicate qrels row": lambda f: _append(f / "qrels" / "test.tsv", b"q1\td1\t1\n"),
    "non-UTF-8 qrels": lambda f: _append(f / "qrels" / "test.tsv", b"q1\td\xe9\t1\n"),
    "truncated gzip corpus": lambda f: _gzip_corpus(f, keep=0.5),
    "corrupt gzip corpus": _corrupt_gzip,
    "duplicate document id": lambda f: _append(f / "corpus.jsonl", b'{"_id": "d2", "text": "again"}\n'),
    "non-UTF-8 corpus": lambda f: _append(f / "corpus.jsonl", b'{"_id": "d9", "text": "caf\xe9"}\n'),
    "malformed corpus line": lambda f: _append(f / "corpus.jsonl", b"{oops\n"),
    "empty document text": lambda f: _append(f / "corpus.jsonl", b'{"_id": "d9", "text": ""}\n'),
    "duplicate query id": lambda f: _append(f / "queries.jsonl", b'{"_id": "q1", "text": "again"}\n'),
    "non-UTF-8 queries": lambda f: _append(f / "queries.jsonl", b'{"_id": "q3", "text": "\xc3("}\n'),
}


def _load_like_run(folder: Path) -> None:
    """Read every file of the collection through the readers `run` uses (corpus, queries, qrels, shipped runs)."""
    dataset = load_dataset(str(folder))
    dataset.queries()
    dataset.qrels()
    list(dataset.iter_docs())
    dataset.doc_texts(["d1"])
    for name in dataset.candidate_names():
        dataset.candidates(name)


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_check_is_fatal_exactly_when_run_refuses(tmp_path, case):
    folder = _collection(tmp_path / "c")
    CORRUPTIONS[case](folder)
    try:
        _load_like_run(folder)
        refused = None
    except DataError as err:
        refused = str(err)
    report = check_dataset(load_dataset(str(folder)))
    assert report.fatal == (refused is not None), (case, refused, report.findings)
    if refused is not None:
        assert "\n" not in refused
        examples = [f.example for f in report.findings if f.fatal]
        assert refused.replace(f"{folder}/", "") in examples, (refused, examples)
    expected_fatal = case not in {"clean", "duplicate qrels row", "empty document text"}
    assert report.fatal == expected_fatal


def test_check_reports_a_truncated_gzip_instead_of_aborting(tmp_path, capsys):
    folder = _collection(tmp_path / "c")
    _gzip_corpus(folder, keep=0.5)
    with pytest.raises(SystemExit) as exit_info:
        main(["datasets", "check", str(folder)])
    out = capsys.readouterr().out
    assert exit_info.value.code == 1
    assert "corpus.jsonl.gz: unreadable (missing, truncated or corrupt)" in out
    assert "truncated or corrupt gzip file" in out
    assert "Aborted" not in out


def test_qrels_conflicting_grades_name_both_lines(tmp_path):
    folder = _collection(tmp_path / "c")
    _append(folder / "qrels" / "test.tsv", b"q2\td4\t1\nq1\td1\t2\n")
    path = folder / "qrels" / "test.tsv"
    with pytest.raises(DataError) as err:
        load_dataset(str(folder)).qrels()
    assert str(err.value) == f"{path}:6: query 'q1' document 'd1' graded 2 here but 1 on line 2"


def test_repeated_qrels_rows_are_counted_once_with_a_warning(tmp_path, caplog):
    folder = _collection(tmp_path / "c")
    _append(folder / "qrels" / "test.tsv", b"q1\td1\t1\nq2\td3\t2\n")
    path = folder / "qrels" / "test.tsv"
    with caplog.at_level(logging.WARNING, logger="micebench"):
        qrels = load_dataset(str(folder)).qrels()
    assert qrels == {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 2}}
    assert [r.getMessage() for r in caplog.records if r.name == "micebench"] == [
        f"{path}: rows repeating an earlier row exactly: 2, each pair counted once "
        "(first: line 5 repeats line 2: q1 d1 1)"
    ]
    report = check_dataset(load_dataset(str(folder)))
    assert not report.fatal
    [finding] = report.findings
    assert (finding.what, finding.count) == ("qrels/test.tsv: rows repeated exactly (each pair counted once)", 2)


def test_header_only_qrels_and_empty_run_are_one_line_errors(tmp_path):
    folder = _collection(tmp_path / "c")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n")
    (folder / "candidates" / "bm25.trec").write_text("\n")
    dataset = load_dataset(str(folder))
    with pytest.raises(DataError) as err:
        dataset.qrels()
    assert str(err.value) == f"{folder}/qrels/test.tsv: no judgements (the file is empty or has only a header)"
    with pytest.raises(DataError) as err:
        dataset.candidates("bm25")
    assert str(err.value) == f"{folder}/candidates/bm25.trec: run file is empty (no candidates)"
    whats = {f.what for f in check_dataset(dataset).findings if f.fatal}
    assert {
        "qrels/test.tsv: no judgements (empty or header only)",
        "candidates/bm25.trec: no candidates (empty file)",
    } <= whats


def test_duplicate_document_id_names_both_lines_for_every_reader(tmp_path):
    folder = _collection(tmp_path / "c")
    _append(folder / "corpus.jsonl", b'{"_id": "d2", "text": "again"}\n')
    dataset = load_dataset(str(folder))
    expected = f"{folder}/corpus.jsonl:5: duplicate document id 'd2' (first on line 2)"
    with pytest.raises(DataError) as err:
        list(dataset.iter_docs())
    assert str(err.value) == expected
    with pytest.raises(DataError) as err:  # the wanted document comes first: still read to the end and refused
        dataset.doc_texts(["d1"])
    assert str(err.value) == expected


def test_doc_texts_checks_a_changed_corpus_again(tmp_path):
    folder = _collection(tmp_path / "c")
    dataset = load_dataset(str(folder))
    assert dataset.doc_texts(["d1"]) == {"d1": "title 1 body of document 1"}
    _append(folder / "corpus.jsonl", b'{"_id": "d1", "text": "again"}\n')  # changes size and mtime: checked again
    with pytest.raises(DataError, match="duplicate document id 'd1'"):
        dataset.doc_texts(["d1"])


@pytest.mark.parametrize(
    ("name", "bad", "offset", "reason"),
    [
        ("corpus.jsonl", b'{"_id": "d9", "text": "caf\xe9"}\n', 26, "invalid continuation byte"),
        ("queries.jsonl", b'{"_id": "q9", "text": "\xc3("}\n', 23, "invalid continuation byte"),
        ("qrels/test.tsv", b"q1\td\xe9\t1\n", 4, "invalid continuation byte"),
        ("candidates/bm25.trec", b"q2 Q0 d\xff 3 0.1 bm25\n", 7, "invalid start byte"),
    ],
)
def test_non_utf8_byte_is_located_by_line_and_file_offset(tmp_path, name, bad, offset, reason):
    folder = _collection(tmp_path / "c")
    path = folder / name
    size, lines = path.stat().st_size, path.read_bytes().count(b"\n")
    _append(path, bad)
    with pytest.raises(DataError) as err:
        _load_like_run(folder)
    assert str(err.value) == (
        f"{path}:{lines + 1}: not valid UTF-8 (byte 0x{bad[offset]:02x} at byte offset {size + offset}: {reason})"
    )


def test_non_utf8_byte_in_a_gzip_corpus_gives_the_decompressed_offset(tmp_path):
    folder = _collection(tmp_path / "c")
    size = (folder / "corpus.jsonl").stat().st_size
    _append(folder / "corpus.jsonl", b'{"_id": "d9", "text": "\xe9t\xe9"}\n')
    (folder / "corpus.jsonl.gz").write_bytes(gzip.compress((folder / "corpus.jsonl").read_bytes()))
    (folder / "corpus.jsonl").unlink()
    with pytest.raises(DataError) as err:
        list(load_dataset(str(folder)).iter_docs())
    assert str(err.value) == (
        f"{folder}/corpus.jsonl.gz:5: not valid UTF-8 (byte 0xe9 at byte offset {size + 23} "
        "of the decompressed data: invalid continuation byte)"
    )


def test_truncated_gzip_is_one_line(tmp_path):
    folder = _collection(tmp_path / "c")
    _gzip_corpus(folder, keep=0.5)
    with pytest.raises(DataError) as err:
        list(load_dataset(str(folder)).iter_docs())
    message = str(err.value)
    assert re.fullmatch(
        rf"{re.escape(str(folder))}/corpus.jsonl.gz:\d+: truncated or corrupt gzip file \(.*\)", message
    )
    assert message.endswith("(Compressed file ended before the end-of-stream marker was reached)")
    assert "\n" not in message


def test_ir_datasets_qrels_follow_the_same_rules(tmp_path, caplog):
    """Conflicting grades refused and exact repeats warned about for ir_datasets ids too (rows numbered from 1)."""
    import ir_datasets
    from ir_datasets.formats import TrecQrels, TsvDocs, TsvQueries
    from ir_datasets.util import LocalDownload

    (tmp_path / "docs.tsv").write_text("d1\tgoldfish\nd2\ttanks\n")
    (tmp_path / "queries.tsv").write_text("q1\tgoldfish tanks\n")
    ids = {}
    for name, rows in {"conflict": "q1 0 d1 1\nq1 0 d2 0\nq1 0 d1 2\n", "repeat": "q1 0 d1 1\nq1 0 d1 1\n"}.items():
        (tmp_path / f"{name}.txt").write_text(rows)
        ids[name] = f"micebench-test/{name}-{tmp_path.name}"
        ir_datasets.registry.register(
            ids[name],
            ir_datasets.Dataset(
                TsvDocs(LocalDownload(tmp_path / "docs.tsv")),
                TsvQueries(LocalDownload(tmp_path / "queries.tsv")),
                TrecQrels(LocalDownload(tmp_path / f"{name}.txt"), {0: "not relevant", 1: "relevant"}),
            ),
        )
    conflict = load_dataset(ids["conflict"])
    with pytest.raises(DataError) as err:
        conflict.qrels()
    assert str(err.value) == (
        f"ir_datasets {ids['conflict']} qrels row 3: query 'q1' document 'd1' graded 2 here but 1 on row 1"
    )
    assert check_dataset(conflict).fatal
    with caplog.at_level(logging.WARNING, logger="micebench"):
        assert load_dataset(ids["repeat"]).qrels() == {"q1": {"d1": 1}}
    assert caplog.records[-1].getMessage() == (
        f"ir_datasets {ids['repeat']} qrels: rows repeating an earlier row exactly: 1, each pair counted once "
        "(first: row 2 repeats row 1: q1 d1 1)"
    )
