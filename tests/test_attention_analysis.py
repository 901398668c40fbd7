"""Segment attention analysis on real pairs: rows are distributions, schedules show up as exact zeros."""

from __future__ import annotations

import json

import numpy as np
import pytest

from micebench import load_ranker
from micebench.analysis.attention import segment_attention
from micebench.schedules import SEGMENTS
from tests.test_cli import cli

PAIRS = [
    ("how do goldfish grow", "Goldfish grow according to the size of their tank."),
    ("what is wifi", "Wi-Fi is a family of wireless network protocols used for local area networking."),
    ("cheap flights", ""),  # a document segment can be empty
]


def test_mass_rows_are_distributions_and_masks_are_exact(tiny_bert_ce):
    full = segment_attention(
        load_ranker("masked-ce", checkpoint=tiny_bert_ce, attn_implementation="eager", device="cpu"),
        PAIRS,
        batch_size=2,
    )
    np.testing.assert_allclose(full.mass.sum(-1), 1.0, atol=1e-9)
    masked = segment_attention(
        load_ranker("mask2", checkpoint=tiny_bert_ce, attn_implementation="eager", device="cpu"),
        PAIRS,
        batch_size=2,
    )
    doc, query, cls = (SEGMENTS.index(s) for s in ("document", "query", "cls"))
    assert np.all(masked.mass[:, doc, query] == 0.0) and np.all(masked.mass[:, query, cls] == 0.0)
    assert np.all(full.mass[:, doc, query] > 0.0)
    np.testing.assert_allclose(masked.mass.sum(-1), 1.0, atol=1e-9)


def test_single_pair_matches_a_direct_computation(tiny_bert_ce):
    import torch

    ranker = load_ranker("masked-ce", checkpoint=tiny_bert_ce, attn_implementation="eager", device="cpu")
    query, doc = PAIRS[0]
    got = segment_attention(ranker, [(query, doc)]).mass
    q = len(ranker.tokenizer(query, add_special_tokens=False)["input_ids"])
    d = len(ranker.tokenizer(doc, add_special_tokens=False)["input_ids"])
    spans = {
        "cls": [0],
        "query": list(range(1, q + 1)),
        "sep1": [q + 1],
        "document": list(range(q + 2, q + d + 2)),
        "sep2": [q + d + 2],
    }
    with torch.no_grad():
        probs = ranker.forward(ranker.tokenize_pairs([query], [doc]), output_attentions=True).attentions
    for layer, p in enumerate(probs):
        p = p[0].mean(0).double().numpy()
        for a, rows in spans.items():
            for b, cols in spans.items():
                expected = p[np.ix_(rows, cols)].sum(1).mean()
                assert got[layer, SEGMENTS.index(a), SEGMENTS.index(b)] == pytest.approx(expected, abs=1e-6)


@pytest.mark.slow
def test_attention_command_on_trec_dl_2019_with_minilm(capsys, tmp_path, data_dir, minilm_path):
    code, out, err = cli(
        capsys,
        "attention",
        "--dataset",
        str(data_dir / "trec-dl-2019-passage"),
        "--checkpoint",
        minilm_path,
        "--queries",
        "10",
        "--docs-per-query",
        "2",
        "--device",
        "cpu",
        "-o",
        str(tmp_path),
    )
    assert code == 0, err
    folder = tmp_path / "attention" / "trec-dl-2019-passage" / "ce"
    names = {p.name for p in folder.iterdir()}
    assert {
        "attention.csv",
        "attention.md",
        "manifest.json",
        "attention_layers_0-2.png",
        "attention_layers_3-5.svg",
    } <= names
    assert json.loads((folder / "manifest.json").read_text())["pairs"] == 20
    rows = (folder / "attention.csv").read_text().splitlines()
    assert len(rows) == 1 + 6 * 25


def test_attention_refuses_non_cross_encoders(capsys, tmp_path, data_dir):
    code, _, err = cli(capsys, "attention", "--dataset", str(data_dir / "adi"), "--model", "dense", "-o", str(tmp_path))
    assert code == 2 and "needs a cross-encoder" in err
