"""TREC run / qrels reading and writing."""

from __future__ import annotations

import pytest

from micebench.data.trec import format_run, read_qrels_tsv, read_run
from micebench.errors import DataError


def test_run_lines_have_one_based_ranks_and_doc_id_tie_break():
    lines = list(format_run({"q2": {"b": 1.0, "a": 1.0, "c": 2.0}, "q1": {"x": 0.5}}, "tag"))
    assert lines == [
        "q1 Q0 x 1 0.500000 tag\n",
        "q2 Q0 c 1 2.000000 tag\n",
        "q2 Q0 a 2 1.000000 tag\n",
        "q2 Q0 b 3 1.000000 tag\n",
    ]


def test_read_run_round_trip(tmp_path):
    path = tmp_path / "run.trec"
    path.write_text("".join(format_run({"q": {"d1": 3.0, "d2": -1.5}}, "t")))
    assert read_run(path) == {"q": {"d1": 3.0, "d2": -1.5}}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("q Q0 d 1 2.0\n", "expected 6 columns"),
        ("q Q0 d one 2.0 t\n", r"rank 'one' is not an integer"),
        ("q Q0 d 1.5 2.0 t\n", r"rank '1.5' is not an integer"),
        ("q Q0 d 1 high t\n", r"score 'high' is not numeric"),
        ("q Q0 d 1 nan t\n", "non-finite score 'nan'"),
        ("q Q0 d 1 -inf t\n", "non-finite score '-inf'"),
    ],
)
def test_malformed_run_line_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.trec"
    path.write_text("q Q0 ok 1 3.0 t\n" + line)
    with pytest.raises(DataError, match=rf"bad.trec:2: .*{message}"):
        read_run(path)


def test_duplicate_document_in_run_is_refused(tmp_path):
    path = tmp_path / "dup.trec"
    path.write_text("q Q0 d 1 3.0 t\nq Q0 d 2 2.0 t\n")
    with pytest.raises(DataError, match="listed twice"):
        read_run(path)


def test_qrels_header_and_trec_format(tmp_path):
    beir = tmp_path / "a.tsv"
    beir.write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\n")
    trec = tmp_path / "b.tsv"
    trec.write_text("q1\t0\td1\t2\nq1\t0\td2\t0\n")
    assert read_qrels_tsv(beir) == read_qrels_tsv(trec) == {"q1": {"d1": 2, "d2": 0}}


def test_malformed_qrels_line(tmp_path):
    path = tmp_path / "q.tsv"
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\thigh\n")
    with pytest.raises(DataError, match=r"q.tsv:2: malformed qrels line \(relevance 'high'"):
        read_qrels_tsv(path)


def test_duplicate_document_in_run_names_both_lines(tmp_path):
    path = tmp_path / "dup.trec"
    path.write_text("q Q0 d 1 3.0 t\nq Q0 e 2 2.0 t\nq Q0 d 3 1.0 t\n")
    with pytest.raises(DataError) as err:
        read_run(path)
    assert str(err.value) == f"{path}:3: document 'd' listed twice for query 'q' (first on line 1)"


def test_a_collecting_sink_gets_every_problem_and_the_good_lines(tmp_path):
    """`datasets check` passes its own sink: reading goes on past each bad line instead of stopping."""
    path = tmp_path / "run.trec"
    path.write_bytes(b"q Q0 a 1 3.0 t\nq Q0 b 1.5 2.0 t\nq Q0 c 3 nan t\nq Q0 \xff 4 1.0 t\nq Q0 a 5 0.5 t\n")
    problems = []
    assert read_run(path, problems.append) == {"q": {"a": 3.0, "\ufffd": 1.0}}
    assert [(p.rule, p.fatal, p.message.removeprefix(f"{path}:")) for p in problems] == [
        ("run.malformed", True, "2: malformed run line (rank '1.5' is not an integer)"),
        ("run.malformed", True, "3: non-finite score 'nan'"),
        ("not-utf8", True, "4: not valid UTF-8 (byte 0xff at byte offset 52: invalid start byte)"),
        ("run.duplicate", True, "5: document 'a' listed twice for query 'q' (first on line 1)"),
    ]


def test_qrels_grades_twice_refused_repeats_counted(tmp_path, caplog):
    path = tmp_path / "q.tsv"
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td1\t1\nq1\td1\t0\n")
    with pytest.raises(DataError) as err:
        read_qrels_tsv(path)
    assert str(err.value) == f"{path}:4: query 'q1' document 'd1' graded 0 here but 1 on line 2"
    path.write_text("q1\td1\t1\nq1\td1\t1\nq1\td2\t0\nq1\td1\t1\n")
    with caplog.at_level("WARNING", logger="micebench"):
        assert read_qrels_tsv(path) == {"q1": {"d1": 1, "d2": 0}}
    assert caplog.messages == [
        f"{path}: rows repeating an earlier row exactly: 2, each pair counted once "
        "(first: line 2 repeats line 1: q1 d1 1)"
    ]


@pytest.mark.parametrize("text", ["", "\n\n", "query-id\tcorpus-id\tscore\n"])
def test_qrels_without_judgements_are_refused(tmp_path, text):
    path = tmp_path / "q.tsv"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        read_qrels_tsv(path)
    assert str(err.value) == f"{path}: no judgements (the file is empty or has only a header)"
