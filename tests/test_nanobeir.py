"""NanoBEIR: the hub layout read from local parquet files, both protocols, the evaluator's nDCG@10, the suite.

The fixture writes the three configs of `sentence-transformers/Nano<Set>-bm25` (corpus, queries, relevance) as
parquet files in the repositories' own layout; `MICEBENCH_NANOBEIR_DIR` points the loader at them, so everything
after `datasets.load_dataset` is the code path users run against the hub. Nothing here reaches the hub.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("datasets")
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="micebench-hf-datasets-"))
os.environ["HF_DATASETS_OFFLINE"] = "1"

import pandas as pd  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from micebench.cli import app  # noqa: E402
from micebench.data import load_dataset  # noqa: E402
from micebench.data.nanobeir import LOCAL_DIR_ENV, NANO_SETS, evaluator_ndcg, suite_members  # noqa: E402
from micebench.results import slug  # noqa: E402
from tests.test_cli import cli  # noqa: E402

CORPUS = {f"d{i}": f"document {i} about topic {i % 3} and words {' '.join(['x'] * i)}" for i in range(1, 9)}
QUERIES = {"q1": "topic one", "q2": "topic two", "q3": "topic zero", "q9": "a query without judgements"}
#: q1: one positive retrieved at rank 2, one (d7) outside the BM25 list; q2: found first; q3: never retrieved
RELEVANCE = [
    ("q1", ["d1", "d7"], ["d2", "d1", "d3", "d4", "d5", "d6"]),
    ("q2", ["d3"], ["d3", "d2", "d1", "d4", "d5", "d6"]),
    ("q3", ["d8"], ["d1", "d2", "d3", "d4", "d5", "d6"]),
]
L2, L3, L8 = 1 / math.log2(3), 1 / math.log2(4), 1 / math.log2(8)  # discounts of ranks 2, 3 and 7


def write_nano_set(root: Path, repo: str) -> None:
    """The three configs of one hub repository as `<repo>/<config>/train-00000-of-00001.parquet`."""
    tables = {
        "corpus": pd.DataFrame({"_id": list(CORPUS), "text": list(CORPUS.values())}),
        "queries": pd.DataFrame({"_id": list(QUERIES), "text": list(QUERIES.values())}),
        "relevance": pd.DataFrame(RELEVANCE, columns=["query-id", "positive-corpus-ids", "bm25-ranked-ids"]),
    }
    for config, frame in tables.items():
        folder = root / repo / config
        folder.mkdir(parents=True)
        frame.to_parquet(folder / "train-00000-of-00001.parquet", index=False)


def write_nanobeir_en(root: Path, split: str, relevance: list = RELEVANCE) -> None:
    """One set in the current layout: `NanoBEIR-en/<subset>/<split>-00000-of-00001.parquet` for the subsets
    corpus, queries, qrels (one row per judged pair) and bm25."""
    tables = {
        "corpus": pd.DataFrame({"_id": list(CORPUS), "text": list(CORPUS.values())}),
        "queries": pd.DataFrame({"_id": list(QUERIES), "text": list(QUERIES.values())}),
        "qrels": pd.DataFrame(
            [(q, d, 1) for q, positives, _ in relevance for d in positives], columns=["query-id", "corpus-id", "score"]
        ),
        "bm25": pd.DataFrame([(q, ranked) for q, _, ranked in relevance], columns=["query-id", "corpus-ids"]),
    }
    for subset, frame in tables.items():
        folder = root / "NanoBEIR-en" / subset
        folder.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(folder / f"{split}-00000-of-00001.parquet", index=False)


@pytest.fixture
def nano_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """All 13 sets (the same small content) in the hub layout, read through MICEBENCH_NANOBEIR_DIR."""
    root = tmp_path / "nanobeir"
    for nano in NANO_SETS.values():
        write_nano_set(root, nano.repo)
    monkeypatch.setenv(LOCAL_DIR_ENV, str(root))
    return root


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_loads_the_hub_layout(nano_dir: Path) -> None:
    ds = load_dataset("nano-scifact")
    assert ds.name == "nano-scifact" and ds.source.endswith("NanoSciFact-bm25")
    assert ds.queries() == {q: QUERIES[q] for q in ("q1", "q2", "q3")}  # the relevance table's queries
    assert ds.qrels() == {"q1": {"d1": 1, "d7": 1}, "q2": {"d3": 1}, "q3": {"d8": 1}}
    assert ds.doc_texts(["d3", "nope"]) == {"d3": CORPUS["d3"]}  # the corpus `text` as it is
    assert list(ds.candidates("bm25")["q1"]) == RELEVANCE[0][2]
    assert "rerank" in ds.describe()["protocol"]


def test_protocols_differ_only_in_the_added_positives(nano_dir: Path) -> None:
    from micebench.firststage.candidates import first_stage

    honest = first_stage(load_dataset("nano-scifact"), "auto", 3).run
    evaluator = first_stage(load_dataset("nano-scifact@evaluator"), "auto", 3).run
    assert list(honest["q1"]) == ["d2", "d1", "d3"]  # rerank_k cuts the BM25 list, nothing added
    assert list(evaluator["q1"]) == ["d2", "d1", "d3", "d7"]  # always_rerank_positives: d7 joins, last
    assert list(evaluator["q2"]) == ["d3", "d2", "d1"]  # already there: not added twice
    assert list(evaluator["q3"]) == ["d1", "d2", "d3", "d8"]
    assert min(evaluator["q1"].values()) == evaluator["q1"]["d7"]


def test_evaluator_ndcg_by_hand() -> None:
    # ranks 1..4 = a, {b, c} tied, d; c relevant: the tie shares its mean gain 0.5 over ranks 2 and 3
    scores = {"a": 2.0, "b": 1.0, "c": 1.0, "d": 0.0}
    assert evaluator_ndcg({"c": 1}, scores, 10) == pytest.approx(0.5 * (L2 + L3))
    assert evaluator_ndcg({"c": 1}, scores, 2) == pytest.approx(0.5 * L2)  # rank 3 is past the cut-off
    # a judged document that was not scored does not count in the ideal DCG (the list's labels only)
    assert evaluator_ndcg({"b": 1, "zz": 1}, {"a": 2.0, "b": 1.0}, 10) == pytest.approx(L2)
    assert evaluator_ndcg({"zz": 1}, {"a": 2.0, "b": 1.0}, 10) == 0.0


def test_evaluator_ndcg_equals_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    import numpy as np

    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(2, 30))
        scores = rng.integers(0, 6, n).astype(float)  # many ties
        labels = rng.integers(0, 2, n)
        if not labels.any():
            continue
        ours = evaluator_ndcg({str(i): int(v) for i, v in enumerate(labels)}, {str(i): s for i, s in enumerate(scores)})
        assert ours == pytest.approx(metrics.ndcg_score([labels], [scores], k=10))


def test_run_both_protocols_against_hand_computed_ndcg(nano_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    honest = invoke("run", "--model", "first-stage", "--dataset", "nano-scifact", "--output", str(out))
    assert honest.exit_code == 0, honest.output
    evaluator = invoke("run", "--model", "first-stage", "--dataset", "nano-scifact@evaluator", "--output", str(out))
    assert evaluator.exit_code == 0, evaluator.output

    def per_query(dataset: str) -> dict[str, float]:
        frame = pd.read_csv(out / slug(dataset) / "first-stage" / "perquery.tsv", sep="\t", dtype={"qid": str})
        return dict(zip(frame["qid"], frame["nDCG@10"], strict=True))

    # rerank: ideal DCG over all judged positives, d7 (never retrieved) included
    assert per_query("nano-scifact") == pytest.approx({"q1": L2 / (1 + L2), "q2": 1.0, "q3": 0.0}, abs=1e-6)
    # evaluator: positives appended after BM25's list (ranks 7), ideal over the re-ranked list
    expected = {"q1": (L2 + L8) / (1 + L2), "q2": 1.0, "q3": L8}
    assert per_query("nano-scifact@evaluator") == pytest.approx(expected, abs=1e-6)
    manifest = json.loads((out / "nano-scifact_evaluator" / "first-stage" / "manifest.json").read_text())
    assert manifest["dataset"]["protocol"].startswith("evaluator: sentence-transformers")
    assert manifest["dataset"]["source"].startswith("local:")
    metrics = json.loads((out / "nano-scifact_evaluator" / "first-stage" / "metrics.json").read_text())
    assert "nDCG@10" in metrics["computed_otherwise"]
    assert metrics["measures"]["nDCG@10"] == pytest.approx(sum(expected.values()) / 3, abs=1e-6)


def test_tiny_cross_encoder_on_the_evaluator_protocol(nano_dir: Path, tmp_path: Path, tiny_bert_ce: str) -> None:
    """A real ranker's run file, scored independently with sklearn, gives the per-query values `run` wrote."""
    metrics = pytest.importorskip("sklearn.metrics")
    from micebench.data.trec import read_run

    out = tmp_path / "results"
    args = ["--dataset", "nano-nfcorpus@evaluator", "--checkpoint", tiny_bert_ce, "--output", str(out)]
    result = invoke("run", "--model", "ce", *args, "--device", "cpu")
    assert result.exit_code == 0, result.output
    folder = next((out / "nano-nfcorpus_evaluator").iterdir())
    run = read_run(folder / "run.trec")
    assert set(run["q1"]) == {"d1", "d2", "d3", "d4", "d5", "d6", "d7"}
    qrels = load_dataset("nano-nfcorpus@evaluator").qrels()
    frame = pd.read_csv(folder / "perquery.tsv", sep="\t", dtype={"qid": str})
    for qid, value in zip(frame["qid"], frame["nDCG@10"], strict=True):
        docs = list(run[qid])
        labels = [int(d in qrels[qid]) for d in docs]
        assert value == pytest.approx(metrics.ndcg_score([labels], [[run[qid][d] for d in docs]], k=10), abs=1e-6)


def test_suite_runs_the_13_sets_as_one_experiment_with_its_mean(nano_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = invoke("run", "--model", "first-stage", "--dataset", "nanobeir", "--output", str(out))
    assert result.exit_code == 0, result.output
    suite = out / "nanobeir"
    index = json.loads((suite / "experiment.json").read_text())
    assert index["out_of_domain"] == suite_members("nanobeir") and len(index["out_of_domain"]) == 13
    assert index["group_names"] == {"OOD": "nanobeir (rerank)"}
    again = invoke("run", "--model", "bm25", "--dataset", "nanobeir", "--output", str(out))  # a second ranker joins
    assert again.exit_code == 0, again.output
    assert list(json.loads((suite / "experiment.json").read_text())["rankers"]) == ["first-stage", "bm25"]
    report = invoke("report", "--results", str(suite), "--output", str(tmp_path / "report"))
    assert report.exit_code == 0, report.output
    table = pd.read_csv(next((tmp_path / "report").rglob("*.csv"))).set_index("ranker")
    assert [c for c in table.columns if c.startswith("nano-") and " " not in c] == suite_members("nanobeir")
    mean = (L2 / (1 + L2) + 1.0 + 0.0) / 3  # every set holds the fixture: the suite's mean is one set's value
    assert table.at["first-stage", "nanobeir (rerank) avg"] == pytest.approx(mean, abs=1e-6)
    assert len(suite_members("nanobeir11") or []) == 11 and "nano-arguana" not in (suite_members("nanobeir11") or [])


def test_bad_names_and_missing_files_are_one_line(nano_dir: Path, tmp_path: Path, capsys) -> None:
    code, _, err = cli(capsys, "run", "--model", "first-stage", "--dataset", "nano-scifact@fancy", "-o", str(tmp_path))
    assert code == 2 and "unknown NanoBEIR protocol 'fancy'" in err and len(err.strip().splitlines()) == 1
    for part in (nano_dir / "NanoNQ-bm25" / "relevance").iterdir():
        part.unlink()
    code, _, err = cli(capsys, "run", "--model", "first-stage", "--dataset", "nano-nq", "-o", str(tmp_path / "r"))
    assert code == 2 and "NanoNQ-bm25/relevance/*.parquet" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r" / "nano-nq").exists()


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ("nanobeir-en", (("sentence-transformers/NanoBEIR-en", "qrels"), {"split": "NanoFiQA2018"})),
        ("per-set", (("sentence-transformers/NanoFiQA2018-bm25", "relevance"), {"split": "train"})),
    ],
)
def test_the_hub_is_read_through_datasets_load_dataset(monkeypatch: pytest.MonkeyPatch, layout, expected) -> None:
    """Without the local folder the loader asks `datasets.load_dataset` for the hub repository's config and split:
    `sentence-transformers/NanoBEIR-en` (split `Nano<Set>`) by default, the per-set repositories on request."""
    import datasets

    from micebench.data.nanobeir import LAYOUT_ENV, load_table, nano_source

    class Table:
        column_names = ["query-id"]

        def __getitem__(self, name):
            return ["q1"]

    monkeypatch.delenv(LOCAL_DIR_ENV, raising=False)
    if layout == "per-set":
        monkeypatch.setenv(LAYOUT_ENV, layout)
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or Table())
    source = nano_source(NANO_SETS["fiqa"])
    assert load_table(source, expected[0][1]) == {"query-id": ["q1"]}
    assert calls == [expected] and source.layout == layout


def test_the_current_layout_gives_the_same_result_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`sentence-transformers/NanoBEIR-en` (subsets corpus/queries/qrels/bm25, split `Nano<Set>`) read from the
    local folder gives the per-set layout's values; each manifest names the layout it read."""
    old, new = tmp_path / "old", tmp_path / "new"
    write_nano_set(old, NANO_SETS["scifact"].repo)
    write_nanobeir_en(new, "NanoSciFact")
    write_nanobeir_en(new, "NanoNQ", RELEVANCE[:1])  # another split in the same files is not read
    values, layouts = {}, {}
    for name, root in (("old", old), ("new", new)):
        monkeypatch.setenv(LOCAL_DIR_ENV, str(root))
        out = tmp_path / f"results-{name}"
        result = invoke("run", "--model", "first-stage", "--dataset", "nano-scifact@evaluator", "--output", str(out))
        assert result.exit_code == 0, result.output
        folder = out / "nano-scifact_evaluator" / "first-stage"
        values[name] = (folder / "perquery.tsv").read_text()
        layouts[name] = json.loads((folder / "manifest.json").read_text())["dataset"]["layout"]
    assert values["old"] == values["new"]
    assert layouts["old"].startswith("per-set: sentence-transformers/NanoSciFact-bm25")
    assert (
        layouts["new"]
        == "nanobeir-en: sentence-transformers/NanoBEIR-en (corpus/queries/qrels/bm25, split NanoSciFact)"
    )
    monkeypatch.setenv(LOCAL_DIR_ENV, str(new))
    ds = load_dataset("nano-scifact")
    assert ds.qrels() == {"q1": {"d1": 1, "d7": 1}, "q2": {"d3": 1}, "q3": {"d8": 1}}
    assert ds.source == f"local:{new.resolve() / 'NanoBEIR-en'}@NanoSciFact"
    assert load_dataset("nano-nq").queries() == {"q1": QUERIES["q1"]}  # the bm25 subset's queries
