"""The command line end to end: real runs on the bundled collections and one-line errors on bad input."""

from __future__ import annotations

import json
import shutil

import pytest

from micebench.cli import main
from tests.conftest import write_beir


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run `micebench ARGS` in-process; returns (exit code, stdout, stderr)."""
    code = 0
    try:
        main(list(args))
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _metrics(folder) -> dict:
    return json.loads((folder / "metrics.json").read_text())["measures"]


@pytest.mark.parametrize(
    ("collection", "expected"), [("trec-dl-2019-passage", 0.5058), ("trec-dl-2020-passage", 0.4796)]
)
def test_bm25_run_reproduces_reference(capsys, tmp_path, data_dir, collection, expected):
    code, out, err = cli(capsys, "run", "--model", "bm25", "--dataset", str(data_dir / collection), "-o", str(tmp_path))
    assert code == 0, err
    folder = tmp_path / collection / "bm25"
    assert round(_metrics(folder)["nDCG@10"], 4) == expected
    assert f"{expected:.4f}" in out
    lines = (folder / "run.trec").read_text().splitlines()
    first = lines[0].split()
    assert first[1] == "Q0" and first[3] == "1" and first[5] == "bm25"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["first_stage"]["source"] == "dataset:bm25"
    assert {"torch", "transformers", "ranx"} <= set(manifest["versions"])
    perquery = (folder / "perquery.tsv").read_text().splitlines()
    assert perquery[0].split("\t") == ["qid", "nDCG@10", "RR@10", "R@100", "R@1000", "MAP"]
    assert len(perquery) == 1 + {"trec-dl-2019-passage": 43, "trec-dl-2020-passage": 54}[collection]


def test_existing_result_needs_overwrite(capsys, tmp_path, data_dir):
    args = [
        "run",
        "--model",
        "bm25",
        "--dataset",
        str(data_dir / "trec-dl-2019-passage"),
        "-o",
        str(tmp_path),
    ]
    assert cli(capsys, *args)[0] == 0
    code, _, err = cli(capsys, *args)
    assert code == 2 and "use --overwrite" in err
    assert cli(capsys, *args, "--overwrite")[0] == 0


def test_first_stage_run_file_and_shipped_runs(capsys, tmp_path, data_dir):
    dl19 = str(data_dir / "trec-dl-2019-passage")
    code, _, err = cli(
        capsys,
        "run",
        "--model",
        "first-stage",
        "--dataset",
        dl19,
        "--first-stage",
        "dataset:tasb",
        "-o",
        str(tmp_path),
        "--name",
        "tasb",
    )
    assert code == 0, err
    assert round(_metrics(tmp_path / "trec-dl-2019-passage" / "tasb")["nDCG@10"], 4) == 0.7210
    code, _, err = cli(
        capsys,
        "run",
        "--model",
        "first-stage",
        "--dataset",
        dl19,
        "--first-stage",
        str(data_dir / "trec-dl-2019-passage" / "candidates" / "bm25_rm3.trec"),
        "-o",
        str(tmp_path),
    )
    assert code == 0, err
    assert round(_metrics(tmp_path / "trec-dl-2019-passage" / "first-stage")["nDCG@10"], 4) == 0.5216
    code, _, err = cli(
        capsys,
        "run",
        "--model",
        "bm25",
        "--dataset",
        dl19,
        "--first-stage",
        "dataset:tasb",
        "-o",
        str(tmp_path),
    )
    assert code == 2 and "BM25 first stage itself" in err


@pytest.mark.slow
def test_bm25s_on_scifact_is_in_the_published_range(capsys, tmp_path, data_dir):
    code, _, err = cli(
        capsys,
        "run",
        "--model",
        "bm25",
        "--dataset",
        str(data_dir / "scifact"),
        "--first-stage",
        "bm25",
        "--top-k",
        "1000",
        "-o",
        str(tmp_path),
    )
    assert code == 0, err
    ndcg = _metrics(tmp_path / "scifact" / "bm25")["nDCG@10"]
    assert 0.660 <= ndcg <= 0.690, ndcg  # Pyserini flat 0.679, BEIR paper 0.665


@pytest.mark.slow
def test_dense_full_corpus_scifact_matches_mteb(capsys, tmp_path, data_dir):
    code, _, err = cli(
        capsys,
        "run",
        "--model",
        "dense",
        "--dataset",
        str(data_dir / "scifact"),
        "--first-stage",
        "full",
        "--top-k",
        "1000",
        "--device",
        "cpu",
        "-o",
        str(tmp_path),
    )
    assert code == 0, err
    ndcg = _metrics(tmp_path / "scifact" / "dense")["nDCG@10"]
    assert abs(ndcg - 0.6451) <= 0.005, ndcg  # MTEB: 0.6451
    assert len((tmp_path / "scifact" / "dense" / "run.trec").read_text().splitlines()) == 300 * 1000


def test_cross_encoder_run_on_a_real_collection(capsys, tmp_path, data_dir, tiny_bert_ce):
    code, out, err = cli(
        capsys,
        "run",
        "--model",
        "ce",
        "--checkpoint",
        tiny_bert_ce,
        "--dataset",
        str(data_dir / "adi"),
        "--first-stage",
        "bm25",
        "--top-k",
        "20",
        "--device",
        "cpu",
        "-o",
        str(tmp_path),
        "--name",
        "tiny-ce",
    )
    assert code == 0, err
    manifest = json.loads((tmp_path / "adi" / "tiny-ce" / "manifest.json").read_text())
    assert manifest["ranker"]["attention"] == "sdpa" and manifest["ranker"]["parameters"] > 0
    assert manifest["first_stage"]["top_k"] == 20


def _no_results(tmp_path) -> bool:
    return not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("run.trec"))


def test_unknown_model(capsys, tmp_path, data_dir):
    code, _, err = cli(
        capsys, "run", "--model", "nope", "--dataset", str(data_dir / "adi"), "-o", str(tmp_path / "out")
    )
    assert code == 2 and err.strip().startswith("error: unknown model 'nope'") and len(err.strip().splitlines()) == 1
    assert _no_results(tmp_path)


def test_unknown_dataset_and_missing_folder(capsys, tmp_path):
    code, _, err = cli(capsys, "run", "--model", "bm25", "--dataset", "no-such-set", "-o", str(tmp_path / "out"))
    assert code == 2 and "unknown dataset 'no-such-set'" in err
    code, _, err = cli(
        capsys, "run", "--model", "bm25", "--dataset", str(tmp_path / "gone"), "-o", str(tmp_path / "out")
    )
    assert code == 2 and "dataset folder not found" in err and len(err.strip().splitlines()) == 1
    assert _no_results(tmp_path)


def _small_collection(tmp_path, queries=None, qrels=None):
    corpus = [{"_id": f"d{i}", "title": "", "text": f"goldfish tank water number {i}"} for i in range(5)]
    queries = queries or [{"_id": "q1", "text": "goldfish water"}, {"_id": "q2", "text": "tank"}]
    qrels = qrels or [("q1", "d1", 1), ("q2", "d2", 1)]
    return write_beir(tmp_path / "small", corpus, queries, qrels)


def test_malformed_qrels_line(capsys, tmp_path):
    folder = _small_collection(tmp_path)
    with open(folder / "qrels" / "test.tsv", "a") as handle:
        handle.write("q1\td3\n")
    code, _, err = cli(capsys, "run", "--model", "bm25", "--dataset", str(folder), "-o", str(tmp_path / "out"))
    assert code == 2 and "test.tsv:4: malformed qrels line" in err
    assert _no_results(tmp_path)


def test_malformed_run_file(capsys, tmp_path):
    folder = _small_collection(tmp_path)
    (tmp_path / "bad.trec").write_text("q1 Q0 d1 1 2.0 x\nq1 Q0 d2 two 1.0 x\n")
    code, _, err = cli(
        capsys,
        "run",
        "--model",
        "first-stage",
        "--dataset",
        str(folder),
        "--first-stage",
        str(tmp_path / "bad.trec"),
        "-o",
        str(tmp_path / "out"),
    )
    assert code == 2 and "bad.trec:2: malformed run line" in err
    assert _no_results(tmp_path)


def test_run_ids_not_in_corpus(capsys, tmp_path, tiny_bert_ce):
    folder = _small_collection(tmp_path)
    (tmp_path / "other.trec").write_text("q1 Q0 d1 1 2.0 x\nq1 Q0 zz9 2 1.0 x\n")
    code, _, err = cli(
        capsys,
        "run",
        "--model",
        "ce",
        "--checkpoint",
        tiny_bert_ce,
        "--device",
        "cpu",
        "--dataset",
        str(folder),
        "--first-stage",
        str(tmp_path / "other.trec"),
        "-o",
        str(tmp_path / "out"),
    )
    assert code == 2 and "1 candidate documents are not in the corpus" in err and "'zz9'" in err
    assert _no_results(tmp_path)


def test_empty_query(capsys, tmp_path):
    folder = _small_collection(tmp_path, queries=[{"_id": "q1", "text": "goldfish"}, {"_id": "q2", "text": "  "}])
    code, _, err = cli(capsys, "run", "--model", "bm25", "--dataset", str(folder), "-o", str(tmp_path / "out"))
    assert code == 2 and "empty text (e.g. query id 'q2')" in err
    assert _no_results(tmp_path)


def test_qrels_documents_absent_from_corpus_warn_with_a_count(capsys, caplog, tmp_path, tiny_bert_encoder):
    folder = _small_collection(tmp_path, qrels=[("q1", "d1", 1), ("q1", "gone1", 1), ("q2", "gone2", 1)])
    code, _, err = cli(
        capsys,
        "run",
        "--model",
        "dense",
        "--checkpoint",
        tiny_bert_encoder,
        "--device",
        "cpu",
        "--dataset",
        str(folder),
        "--first-stage",
        "bm25",
        "-o",
        str(tmp_path / "out"),
    )
    assert code == 0, err
    assert "2 judged documents of small are absent from the corpus" in caplog.text


def test_datasets_and_models_listing(capsys, data_dir):
    code, out, _ = cli(capsys, "datasets", "--data-dir", str(data_dir))
    assert code == 0 and "trec-dl-2019-passage" in out and "beir/nfcorpus/test" in out and "cisi" in out
    code, out, _ = cli(capsys, "datasets", "where", "trec-dl-19", "--data-dir", str(data_dir))
    assert code == 0 and "local" in out
    code, out, _ = cli(capsys, "models")
    assert code == 0 and all(name in out for name in ("bm25", "ce", "dense", "first-stage"))


def test_results_table(capsys, tmp_path, data_dir):
    shutil.rmtree(tmp_path / "r", ignore_errors=True)
    assert cli(capsys, "run", "--model", "bm25", "--dataset", str(data_dir / "adi"), "-o", str(tmp_path / "r"))[0] == 0
    code, out, _ = cli(capsys, "results", str(tmp_path / "r"))
    assert code == 0 and "adi" in out and "nDCG@10" in out


def test_qrels_queries_absent_from_queries(capsys, tmp_path):
    folder = _small_collection(tmp_path, qrels=[("q1", "d1", 1), ("q7", "d2", 1)])
    code, _, err = cli(capsys, "run", "--model", "bm25", "--dataset", str(folder), "-o", str(tmp_path / "out"))
    assert code == 2 and "1 judged query ids are absent from the queries (e.g. 'q7')" in err
    assert _no_results(tmp_path)
