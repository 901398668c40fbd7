"""Measures against hand-computed values and against the published values of the bundled runs."""

from __future__ import annotations

import math

import pytest

from micebench.data import load_dataset
from micebench.evaluation import evaluate
from micebench.evaluation.paired import paired_difference

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


def test_paired_difference_matches_hand_computed_t_interval():
    # differences 1, 2, 3, 4 points: mean 2.5, sd sqrt(5/3), t(0.975, 3) = 3.182446, t = 2.5 / (sd / 2) = 3.872983,
    # two-sided p = 1 - 2 (atan(x) + x / (1 + x^2)) / pi with x = t / sqrt(3) (3 degrees of freedom) = 0.030466
    reference = {"a": 0.50, "b": 0.40, "c": 0.30, "d": 0.20}
    mine = {"a": 0.51, "b": 0.42, "c": 0.33, "d": 0.24}
    got = paired_difference(mine, reference)
    assert got.queries == 4
    assert got.mean == pytest.approx(2.5)
    assert got.ci95 == pytest.approx(3.182446 * (5 / 3) ** 0.5 / 2, rel=1e-6)
    assert got.p == pytest.approx(0.030466, abs=1e-6)


def test_paired_difference_counts_a_missing_query_as_zero_and_handles_no_spread():
    assert paired_difference({}, {"q": 0.5}).mean == pytest.approx(-50.0)
    same = paired_difference({"a": 0.3, "b": 0.7}, {"a": 0.3, "b": 0.7})
    assert (same.mean, same.ci95, same.p) == (0.0, 0.0, 1.0)
