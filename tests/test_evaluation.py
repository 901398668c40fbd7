"""Measures against hand-computed values and against the published values of the bundled runs."""

from __future__ import annotations

import math

import pytest

from micebench.data import load_dataset
from micebench.evaluation import evaluate

QRELS = {"q1": {"a": 3, "b": 1, "c": 0, "z": 2}, "q2": {"x": 1}, "q3": {"y": 1}}
RUN = {"q1": {"c": 0.9, "a": 0.8, "b": 0.7, "d": 0.6}, "q2": {"w": 2.0, "v": 1.0, "x": 0.5}}


def test_ndcg_matches_hand_computation_with_linear_gains():
    # q1 ranking: c(0) a(3) b(1) d(-); ideal: a(3) z(2) b(1)
    dcg = 3 / math.log2(3) + 1 / math.log2(4)
    idcg = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    q2 = 1 / math.log2(4)  # x at rank 3, ideal at rank 1
    got = evaluate(QRELS, RUN, ["nDCG@10"])
    assert got.per_query["nDCG@10"]["q1"] == pytest.approx(dcg / idcg, abs=1e-12)
    assert got.per_query["nDCG@10"]["q2"] == pytest.approx(q2, abs=1e-12)
    assert got.per_query["nDCG@10"]["q3"] == 0.0  # judged but not retrieved counts as 0
    assert got.means["nDCG@10"] == pytest.approx((dcg / idcg + q2) / 3, abs=1e-12)
    assert got.num_queries == 3


def test_binary_measures_respect_relevance_level():
    level1 = evaluate(QRELS, RUN, ["RR@10", "R@100", "MAP"], rel_level=1).per_query
    level2 = evaluate(QRELS, RUN, ["RR@10", "R@100", "MAP"], rel_level=2).per_query
    assert level1["RR@10"]["q1"] == pytest.approx(1 / 2)
    assert level1["R@100"]["q1"] == pytest.approx(2 / 3)  # a, b of {a, b, z}
    assert level1["MAP"]["q1"] == pytest.approx((1 / 2 + 2 / 3) / 3)
    assert level2["R@100"]["q1"] == pytest.approx(1 / 2)  # a of {a, z}
    assert level2["MAP"]["q1"] == pytest.approx((1 / 2) / 2)
    assert level1["RR@10"]["q2"] == pytest.approx(1 / 3)


def test_cutoff_applies():
    got = evaluate({"q": {"d": 1}}, {"q": {f"n{i}": 100 - i for i in range(10)} | {"d": 0.0}}, ["RR@10", "R@100"])
    assert got.means == {"RR@10": 0.0, "R@100": 1.0}


REFERENCE = {  # nDCG@10 published by Anserini/Pyserini, listed in the data README
    "trec-dl-2019-passage": {
        "bm25": 0.5058,
        "bm25_rm3": 0.5216,
        "tasb": 0.7210,
        "openai_ada2": 0.7035,
        "splade_pp_ed": 0.7308,
    },
    "trec-dl-2020-passage": {
        "bm25": 0.4796,
        "bm25_rm3": 0.4896,
        "tasb": 0.6854,
        "openai_ada2": 0.6759,
        "splade_pp_ed": 0.7197,
    },
}


@pytest.mark.parametrize(("collection", "run_name"), [(c, r) for c, runs in REFERENCE.items() for r in runs])
def test_bundled_runs_reproduce_published_ndcg(data_dir, collection, run_name):
    dataset = load_dataset(str(data_dir / collection))
    value = evaluate(dataset.qrels(), dataset.candidates(run_name), ["nDCG@10"], dataset.relevance_level)
    assert round(value.means["nDCG@10"], 4) == REFERENCE[collection][run_name]
    assert value.num_queries == {"trec-dl-2019-passage": 43, "trec-dl-2020-passage": 54}[collection]
