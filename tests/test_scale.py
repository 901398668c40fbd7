"""The bulk paths of paper-scale runs give exactly what the row-by-row code they replace gave.

The earlier implementations are kept here as references: the candidate frame, progress records (fresh, resumed,
cut by a crash, several ranks), ranx evaluation from its own Run/Qrels, and the run file; run files are compared
with a plain split of their lines, and bad ones with hand-written problems.
An end-to-end run on a small synthetic MS MARCO-shaped collection (benchmarks/pipeline_scale.py) writes the run
file and metrics that the references give.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from micebench.data import load_dataset
from micebench.data.trec import format_run, read_run
from micebench.evaluation import evaluate
from micebench.evaluation.measures import to_ranx
from micebench.firststage.candidates import first_stage
from micebench.frames import candidates_frame
from micebench.results import write_result
from micebench.runstate import PartialScores
from tests.test_cli import cli

MEASURES = ["nDCG@10", "RR@10", "R@100", "R@1000", "MAP", "P@5", "nDCG"]


# -- the references -------------------------------------------------------------------------------------------


def plain_read_run(path: Path) -> dict[str, dict[str, float]]:
    """A well-formed run file read by splitting its lines (no checks)."""
    run: dict[str, dict[str, float]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        qid, _, docno, _rank, score, _tag = line.split()
        run.setdefault(qid, {})[docno] = float(score)
    return run


def old_format_run(run: dict[str, dict[str, float]], tag: str) -> str:
    """format_run as it was, joined."""
    lines = []
    for qid in sorted(run):
        ordered = sorted(run[qid].items(), key=lambda item: (-item[1], item[0]))
        for rank, (docno, score) in enumerate(ordered, start=1):
            lines.append(f"{qid} Q0 {docno} {rank} {score:.6f} {tag}\n")
    return "".join(lines)


def old_evaluate(qrels: dict, run: dict, measures: list[str], rel_level: int = 1) -> tuple[dict, dict, int]:
    """evaluate as it was: ranx Qrels and Run from dicts, made comparable."""
    from ranx import Qrels, Run
    from ranx import evaluate as ranx_evaluate

    run = {qid: docs for qid, docs in run.items() if docs and qid in qrels}
    names = {m: to_ranx(m, rel_level) for m in measures}
    ranx_qrels = Qrels({q: dict(d) for q, d in qrels.items()})
    ranx_run = Run({q: dict(d) for q, d in run.items()}).make_comparable(ranx_qrels)
    ranx_evaluate(ranx_qrels, ranx_run, list(names.values()), make_comparable=False)
    means = {m: float(ranx_run.mean_scores[r]) for m, r in names.items()}
    per_query = {m: {q: float(v) for q, v in ranx_run.scores[r].items()} for m, r in names.items()}
    return means, per_query, len(ranx_qrels)


def old_candidates_frame(dataset: Any, candidates: Any, with_text: bool) -> pd.DataFrame:
    """candidates_frame as it was: a list of row tuples (the checks on texts left out)."""
    queries = dataset.judged_queries()
    docnos = {d for docs in candidates.run.values() for d in docs}
    qrels_docs = {d for docs in dataset.qrels().values() for d in docs}
    texts = dataset.doc_texts(docnos | qrels_docs) if with_text else {}
    rows = [(qid, docno, score) for qid in sorted(candidates.run) for docno, score in candidates.run[qid].items()]
    frame = pd.DataFrame(rows, columns=["qid", "docno", "score"], dtype=object)
    frame["score"] = frame["score"].astype(np.float64)
    frame["query"] = frame["qid"].map(queries)
    frame["text"] = frame["docno"].map(texts) if with_text else ""
    return frame[["qid", "query", "docno", "text", "score"]]


def old_load(folder: Path) -> dict[str, dict[str, float]]:
    """PartialScores.load as it was."""
    run: dict[str, dict[str, float]] = {}
    for path in sorted(folder.glob("scores-rank*.tsv")):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                parts = line.rstrip("\n").split("\t")
                if len(parts) != 3:
                    continue
                run.setdefault(parts[0], {})[parts[1]] = float(parts[2])
    return run


def old_done(folder: Path) -> set[str]:
    """PartialScores.done as it was."""
    finished: set[str] = set()
    for path in sorted(folder.glob("scores-rank*.tsv")):
        pending: set[str] = set()
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("#END"):
                    finished |= pending
                    pending = set()
                elif line.count("\t") == 2 and line.endswith("\n"):
                    pending.add(line.split("\t", 1)[0])
    return finished


def old_append(folder: Path, rank: int, rows: list[tuple[str, str, float]]) -> None:
    """PartialScores.append as it was (without fsync)."""
    with open(folder / f"scores-rank{rank}.tsv", "a", encoding="utf-8") as handle:
        handle.write("".join(f"{q}\t{d}\t{s!r}\n" for q, d, s in rows) + "#END\n")


def ordered(run: dict[str, dict[str, float]]) -> list[tuple[str, list[tuple[str, str]]]]:
    """A run with its order made visible (queries, and documents within each query) and its scores as `repr`
    (which tells -0.0 from 0.0 and equals itself for NaN)."""
    return [(qid, [(docno, repr(score)) for docno, score in docs.items()]) for qid, docs in run.items()]


# -- synthetic data ---------------------------------------------------------------------------------------------


def random_run(rng: random.Random, queries: int = 30, depth: int = 60) -> dict[str, dict[str, float]]:
    """Scores with many ties, negative and zero values, documents shared between queries."""
    run = {}
    for q in rng.sample(range(100), queries):
        docs = rng.sample(range(400), rng.randint(1, depth))
        run[f"q{q}"] = {
            f"d{d}": rng.choice([float(rng.randint(-3, 3)), round(rng.uniform(-5, 5), 2), -0.0]) for d in docs
        }
    return run


def random_qrels(rng: random.Random, run: dict[str, dict[str, float]]) -> dict[str, dict[str, int]]:
    """Judgements of most run queries (some retrieved, some not) and of queries without a run."""
    qrels = {}
    for qid, docs in run.items():
        if rng.random() < 0.85:
            judged = rng.sample(sorted(docs), min(len(docs), rng.randint(1, 4)))
            qrels[qid] = {d: rng.randint(0, 3) for d in judged + [f"unretrieved{rng.randint(0, 9)}"]}
    for extra in range(rng.randint(0, 3)):
        qrels[f"unranked{extra}"] = {"d1": 1}
    return qrels


def load_benchmark() -> Any:
    """benchmarks/pipeline_scale.py as a module."""
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "pipeline_scale.py"
    spec = importlib.util.spec_from_file_location("pipeline_scale", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small MS MARCO-shaped collection from the benchmark's generator (ties in the candidate scores)."""
    folder = tmp_path_factory.mktemp("scale") / "msmarco-synthetic"
    load_benchmark().write_collection(folder, docs=3000, queries=40, depth=120, seed=7)
    return folder


# -- run files --------------------------------------------------------------------------------------------------


def test_run_file_lines_are_those_of_the_reference(tmp_path):
    run = random_run(random.Random(1))
    assert "".join(format_run(run, "tag")) == old_format_run(run, "tag")
    evaluation = evaluate(random_qrels(random.Random(2), run), run, ["nDCG@10"])
    folder = write_result(tmp_path / "result", run, evaluation, {}, tag="my_tag")
    assert (folder / "run.trec").read_text(encoding="utf-8") == old_format_run(run, "my_tag")


@pytest.mark.parametrize("seed", range(4))
def test_read_run_equals_the_reference_line_reader(tmp_path, seed):
    rng = random.Random(seed)
    run = random_run(rng)
    lines = old_format_run(run, "t").splitlines(keepends=True)
    rng.shuffle(lines)  # queries interleaved
    path = tmp_path / "run.trec"
    path.write_text("".join(lines))
    got = read_run(path)
    assert ordered(got) == ordered(plain_read_run(path))


@pytest.mark.parametrize(
    ("text", "run", "problems"),
    [
        ("q Q0 d 1 2.0 t\nq Q0 e 2 1.5\n", {"q": {"d": 2.0}},
         [("run.malformed", "2: malformed run line (expected 6 columns, got 5)")]),
        ("q Q0 d 1 2.0 t\nq Q0 e two 1.5 t\n", {"q": {"d": 2.0}},
         [("run.malformed", "2: malformed run line (rank 'two' is not an integer)")]),
        ("q Q0 d 1 2.0 t\nq Q0 e 2 high t\n", {"q": {"d": 2.0}},
         [("run.malformed", "2: malformed run line (score 'high' is not numeric)")]),
        ("q Q0 d 1 2.0 t\nq Q0 e 2 inf t\n", {"q": {"d": 2.0}}, [("run.malformed", "2: non-finite score 'inf'")]),
        ("q Q0 d 1 2.0 t\nq Q0 d 2 1.5 t\n", {"q": {"d": 2.0}},
         [("run.duplicate", "2: document 'd' listed twice for query 'q' (first on line 1)")]),
        ("q Q0 d 1 2.0 t x\n\n  \nq\tQ0\te\t+2\t1_5\tt\n", {"q": {"e": 15.0}},  # Python's float() reads 1_5
         [("run.malformed", "1: malformed run line (expected 6 columns, got 7)")]),
        ("q Q0 d 1 1e400 t\nq Q0 d 2 nan t\n", {},
         [("run.malformed", "1: non-finite score '1e400'"), ("run.malformed", "2: non-finite score 'nan'"),
          ("run.none", " run file is empty (no candidates)")]),
        ("", {}, [("run.none", " run file is empty (no candidates)")]),
    ],
)  # fmt: skip
def test_read_run_reports_each_bad_line(tmp_path, text, run, problems):
    """Hand-written expectations: the run kept, and each problem's rule and `path:line: message`."""
    path = tmp_path / "bad.trec"
    path.write_text(text)
    got = []
    assert ordered(read_run(path, got.append)) == ordered(run)
    assert [(p.rule, p.message) for p in got] == [(rule, f"{path}:{message}") for rule, message in problems]


# -- evaluation -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_evaluation_equals_ranx_from_dicts(seed):
    rng = random.Random(seed)
    run = random_run(rng, queries=40, depth=150)
    qrels = random_qrels(rng, run)
    for rel_level in (1, 2):
        got = evaluate(qrels, run, MEASURES, rel_level)
        means, per_query, num_queries = old_evaluate(qrels, run, MEASURES, rel_level)
        assert got.means == means
        assert got.per_query == per_query
        assert [list(v) for v in got.per_query.values()] == [list(v) for v in per_query.values()]
        assert got.num_queries == num_queries


def test_evaluation_of_one_measure_and_of_a_measure_named_twice():
    run = random_run(random.Random(9))
    qrels = random_qrels(random.Random(10), run)
    assert evaluate(qrels, run, ["RR@10"]).per_query == old_evaluate(qrels, run, ["RR@10"])[1]
    assert evaluate(qrels, run, ["MAP", "AP"]).means == old_evaluate(qrels, run, ["MAP", "AP"])[0]


# -- candidate frames ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_text", [False, True])
def test_candidate_frame_equals_the_reference(collection, with_text):
    dataset = load_dataset(str(collection))
    candidates = first_stage(dataset, "auto", 50)
    got = candidates_frame(dataset, candidates, with_text)
    expected = old_candidates_frame(dataset, candidates, with_text)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert got.dtypes.to_dict() == expected.dtypes.to_dict()


# -- progress records -------------------------------------------------------------------------------------------


def chunks(run: dict[str, dict[str, float]], size: int) -> list[list[tuple[str, str, float]]]:
    """The run's rows in chunks of `size` queries, as the pipeline appends them."""
    qids = sorted(run)
    return [[(q, d, s) for q in qids[i : i + size] for d, s in run[q].items()] for i in range(0, len(qids), size)]


def check_progress(folder: Path, partial: PartialScores) -> None:
    """load, done and finished_run agree with the references reading the same files."""
    assert ordered(partial.load()) == ordered(old_load(folder))
    assert partial.done() == old_done(folder)
    done = old_done(folder)
    expected = {q: docs for q, docs in old_load(folder).items() if q in done}
    assert ordered(partial.finished_run()) == ordered(expected)


def test_progress_of_a_fresh_run(tmp_path):
    partial = PartialScores(tmp_path / "result", "h")
    partial.create()
    for chunk in chunks(random_run(random.Random(3)), 4):
        partial.append(chunk)
    assert partial._kept  # read from memory
    check_progress(partial.folder, partial)
    check_progress(partial.folder, PartialScores(tmp_path / "result", "h"))  # read from the file alone


def test_progress_resumed_after_a_crash(tmp_path):
    run = random_run(random.Random(4))
    parts = chunks(run, 3)
    folder = tmp_path / ".result.partial"
    folder.mkdir()
    for chunk in parts[:2]:
        old_append(folder, 0, chunk)
    with open(folder / "scores-rank0.tsv", "a", encoding="utf-8") as handle:  # a chunk cut by a crash
        handle.write("".join(f"{q}\t{d}\t{s!r}\n" for q, d, s in parts[2])[:-7])
    resumed = PartialScores(tmp_path / "result", "h")
    assert resumed.done() == old_done(folder)
    for chunk in parts[2:]:
        resumed.append(chunk)
    assert resumed._kept is None  # appended after a cut line: read from the file
    check_progress(folder, resumed)


def test_progress_resumed_after_complete_chunks(tmp_path):
    parts = chunks(random_run(random.Random(5)), 5)
    folder = tmp_path / ".result.partial"
    folder.mkdir()
    for chunk in parts[:3]:
        old_append(folder, 0, chunk)
    resumed = PartialScores(tmp_path / "result", "h")
    for chunk in parts[3:]:
        resumed.append(chunk)
    assert resumed._kept  # the earlier chunks from the file, the new ones from memory
    check_progress(folder, resumed)


@pytest.mark.parametrize(
    "odd",
    [
        [("q1", "d\t1", 1.0), ("q1", "d2", 2.0)],  # a tab in an id: the line has 4 fields
        [("#ENDq", "d3", 0.5), ("q2", "d4", -0.0)],  # a query id that reads as an END marker
        [("q1", "d2", float("nan")), ("q1", "d5", float("-inf"))],
        [("q1", "d6", 3)],  # not a float
    ],
)
def test_progress_of_two_ranks_and_unusual_rows(tmp_path, odd):
    ranks = [PartialScores(tmp_path / "result", "h", rank) for rank in (0, 1)]
    ranks[0].create()
    for chunk in chunks(random_run(random.Random(6)), 4):
        ranks[1].append(chunk)
        ranks[0].append(chunk[:3])
    ranks[0].append(odd)
    ranks[0].append(chunks(random_run(random.Random(7)), 4)[0])
    for partial in ranks:
        check_progress(partial.folder, partial)


# -- end to end -----------------------------------------------------------------------------------------------


def test_first_stage_run_writes_the_reference_run_file_and_metrics(capsys, tmp_path, collection):
    code, _, err = cli(capsys, "run", "--model", "first-stage", "--dataset", str(collection), "--top-k", "100",
                       "-o", str(tmp_path), "--chunk-queries", "3")  # fmt: skip
    assert code == 0, err
    folder = tmp_path / "msmarco-synthetic" / "first-stage"
    dataset = load_dataset(str(collection))
    candidates = plain_read_run(collection / "candidates" / "bm25.trec")
    judged = set(dataset.judged_queries())
    top = {q: dict(sorted(candidates[q].items(), key=lambda item: (-item[1], item[0]))[:100]) for q in sorted(judged)}
    assert (folder / "run.trec").read_text(encoding="utf-8") == old_format_run(top, "first-stage")
    means, per_query, _ = old_evaluate(dataset.qrels(), top, ["nDCG@10", "RR@10", "R@100", "R@1000", "MAP"])
    assert json.loads((folder / "metrics.json").read_text())["measures"] == means
    rows = (folder / "perquery.tsv").read_text().splitlines()
    assert rows[1:] == [
        "\t".join([q, *(f"{per_query[m][q]:.6f}" for m in per_query)]) for q in sorted(next(iter(per_query.values())))
    ]


def test_the_synthetic_collection_is_deterministic(tmp_path):
    benchmark = load_benchmark()
    digests = []
    for name in ("a", "b"):
        benchmark.write_collection(tmp_path / name, docs=200, queries=5, depth=20, seed=3)
        files = sorted(p for p in (tmp_path / name).rglob("*") if p.is_file())
        digests.append([(p.relative_to(tmp_path / name), hashlib.sha256(p.read_bytes()).hexdigest()) for p in files])
    assert digests[0] == digests[1]
    run = read_run(tmp_path / "a" / "candidates" / "bm25.trec")
    assert len(run) == 5 and all(len(docs) == 20 for docs in run.values())
