"""micebench rankers inside PyTerrier: `pt.Experiment` over a local BEIR folder agrees with `micebench run`.

The references are `micebench run`'s own files (run.trec scores, metrics.json, perquery.tsv) for the same
candidates; PyTerrier evaluates with ir_measures/pytrec_eval, micebench with ranx. Tiny random weights: only the
agreement matters, not the effectiveness.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pt = pytest.importorskip("pyterrier")

import pandas as pd  # noqa: E402

from micebench.data.trec import read_run  # noqa: E402
from micebench.errors import MicebenchError  # noqa: E402
from micebench.pyterrier import Reranker, first_stage, topics_and_qrels  # noqa: E402

TOP_K = "20"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, tiny_bert_ce: str) -> dict[str, Path]:
    """`micebench run` of a tiny ce and of a stored MICE made from it, on ADI's BM25 top-20."""
    import contextlib
    import io

    from micebench.cli import main

    root = tmp_path_factory.mktemp("pt")
    adi, mice, store, out = str(data_dir / "adi"), root / "mice", root / "store", root / "results"

    def micebench(*args: str) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                main(list(args))
            except SystemExit as exit_:
                assert not exit_.code, args

    common = ["--dataset", adi, "--top-k", TOP_K, "--device", "cpu", "-o", str(out)]
    micebench("run", "--model", "ce", "--checkpoint", tiny_bert_ce, *common, "--name", "ce")
    micebench(
        "convert",
        "--from",
        tiny_bert_ce,
        "--merge-layer",
        "1",
        "--top-layers",
        "1",
        "--out",
        str(mice),
        "--cls-attends-document",
    )
    micebench("precompute", "--model", "mice", "--checkpoint", str(mice), "--dataset", adi, "--device", "cpu",
              "--first-stage", "auto", "--top-k", TOP_K, "-o", str(store))  # fmt: skip
    stored = ["--precomputed", str(store), "--untrained", "--name", "mice"]
    micebench("run", "--model", "mice", "--checkpoint", str(mice), *common, *stored)
    return {"adi": Path(adi), "mice": mice, "store": store, "ce": out / "adi" / "ce", "mice-run": out / "adi" / "mice"}


def test_experiment_matches_micebench_run(runs: dict[str, Path], tiny_bert_ce: str) -> None:
    adi = str(runs["adi"])
    topics, qrels = topics_and_qrels(adi)
    bm25 = first_stage(adi, top_k=int(TOP_K))
    bm25_ids = first_stage(adi, top_k=int(TOP_K), text=False)  # MICE reads its store by docno: no text column
    ce = bm25 >> Reranker("ce", checkpoint=tiny_bert_ce, device="cpu")
    mice = bm25_ids >> Reranker(
        "mice", checkpoint=str(runs["mice"]), precomputed=str(runs["store"]), untrained=True, device="cpu"
    )
    names = ["bm25", "ce", "mice"]
    table = pt.Experiment(
        [bm25, ce, mice], topics, qrels, [pt.measures.nDCG @ 10], names=names, baseline=0, correction="holm"
    ).set_index("name")
    table.columns = [str(c) for c in table.columns]  # ir_measures objects as their names
    assert "nDCG@10 p-value corrected" in table.columns and "nDCG@10 reject" in table.columns
    # Random tiny weights put some documents within 1 ulp of each other (ADI, this CE: two queries); another CPU's
    # rounding may tie them exactly, and trec_eval and ranx order exact ties differently. The evaluations are
    # compared where the ranking is defined: per query without an exact tie, the means when no query has one.
    tied = {name: tied_queries(pipeline(topics)) for name, pipeline in (("ce", ce), ("mice", mice))}
    for name in ("ce", "mice"):
        folder = runs["ce" if name == "ce" else "mice-run"]
        measures = json.loads((folder / "metrics.json").read_text())["measures"]
        if not tied[name]:
            assert table.at[name, "nDCG@10"] == pytest.approx(measures["nDCG@10"], abs=1e-6)

    per_query = pt.Experiment([ce, mice], topics, qrels, [pt.measures.nDCG @ 10], names=["ce", "mice"], perquery=True)
    for name in ("ce", "mice"):
        folder = runs["ce" if name == "ce" else "mice-run"]
        ours = pd.read_csv(folder / "perquery.tsv", sep="\t", dtype={"qid": str}).set_index("qid")["nDCG@10"]
        theirs = per_query[per_query["name"] == name].set_index("qid")["value"]
        assert set(per_query["measure"].astype(str)) == {"nDCG@10"}
        assert len(tied[name]) < len(ours) / 4  # the comparison below still covers most queries
        ours, theirs = (
            ours.drop(index=list(tied[name]), errors="ignore"),
            theirs.drop(index=list(tied[name]), errors="ignore"),
        )
        assert theirs.sort_index().to_numpy() == pytest.approx(ours.sort_index().to_numpy(), abs=1e-6)

    for name, pipeline in (("ce", ce), ("mice", mice)):
        scored = pipeline(topics)
        expected = read_run(runs["ce" if name == "ce" else "mice-run"] / "run.trec")
        assert len(scored) == sum(len(d) for d in expected.values())
        for qid, docno, score in scored[["qid", "docno", "score"]].itertuples(index=False):
            assert score == pytest.approx(expected[qid][docno], abs=1e-5)
        first = scored[scored["rank"] == 0].set_index("qid")["score"]
        assert (first == scored.groupby("qid")["score"].max()).all()  # PyTerrier's ranks: 0 is the best


def tied_queries(scored: pd.DataFrame) -> set[str]:
    """Queries of a scored frame in which two documents have exactly the same score (the run file's six decimals
    would tie far more)."""
    return {str(qid) for qid, scores in scored.groupby("qid")["score"] if scores.nunique() < len(scores)}


def test_reranker_needs_the_text_column_unless_stored(tiny_bert_ce: str) -> None:
    frame = pd.DataFrame({"qid": ["1"], "query": ["q"], "docno": ["d"]})
    with pytest.raises(MicebenchError, match="lacks column\\(s\\) text"):
        Reranker("ce", checkpoint=tiny_bert_ce, device="cpu").transform(frame)
    with pytest.raises(MicebenchError, match="does not apply to model 'ce'"):
        Reranker("ce", merge_layer=2)


def test_pyterrier_runs_without_java() -> None:
    assert not pt.java.started()  # nothing above needed the JVM
