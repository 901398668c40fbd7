"""Rankers against independent references: unmodified HF logits, sentence-transformers embeddings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from micebench import load_ranker
from micebench.errors import MicebenchError, UnknownNameError
from micebench.rankers.base import accepts_option

QUERY = "how do goldfish grow"
DOCS = [
    "Goldfish grow according to the size of their tank and the quality of the water.",
    "Wi-Fi is a family of wireless network protocols.",
    "",
    "A very long passage about aquariums. " * 80,
]


def _hf_logits(checkpoint: str, pairs: list[tuple[str, str]]) -> np.ndarray:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        out = []
        for query, doc in pairs:  # one pair at a time: no padding involved in the reference
            enc = tokenizer([query], [doc], truncation="longest_first", max_length=512, return_tensors="pt")
            out.append(model(**enc).logits[0, 0].item())
    return np.asarray(out)


@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_cross_encoder_equals_unmodified_hf_logits(tiny_bert_ce, batch_size):
    ranker = load_ranker("ce", checkpoint=tiny_bert_ce, device="cpu", batch_size=batch_size)
    expected = _hf_logits(tiny_bert_ce, [(QUERY, d) for d in DOCS])
    np.testing.assert_allclose(ranker.score(QUERY, DOCS), expected, atol=1e-5, rtol=0)
    assert ranker.describe()["attention"] == "sdpa"


def test_cross_encoder_from_packaged_bi_encoder_gets_a_seeded_single_logit_head(minilm_path):
    """A bi-encoder as `ce` gets a fresh one-logit head drawn from a seed (0 unless given): two loads score alike,
    another seed otherwise; an effectiveness check refuses it unless untrained=True."""
    import torch

    first = load_ranker("ce", checkpoint="minilm-l6", device="cpu")
    assert first.model.config.num_labels == 1 and first.fresh_head == ["classifier.bias", "classifier.weight"]
    torch.manual_seed(123)  # the global generator's state does not matter
    again = load_ranker("ce", checkpoint="minilm-l6", device="cpu", untrained=True)
    other = load_ranker("ce", checkpoint="minilm-l6", device="cpu", untrained=True, head_seed=1)
    assert torch.equal(first.model.classifier.weight, again.model.classifier.weight)  # the same draw, not a kernel
    assert not torch.equal(first.model.classifier.weight, other.model.classifier.weight)
    assert first.score(QUERY, DOCS[:2]).shape == (2,)
    with pytest.raises(MicebenchError, match="minilm-l6 has no trained score head .*pass --untrained"):
        first.check_ready_for_effectiveness()
    again.check_ready_for_effectiveness()
    assert first.describe()["fresh_head_seed"] == 0


def test_a_trained_head_is_neither_redrawn_nor_refused(tiny_bert_ce):
    from safetensors.torch import load_file

    ranker = load_ranker("ce", checkpoint=tiny_bert_ce, device="cpu", head_seed=5)
    saved = load_file(f"{tiny_bert_ce}/model.safetensors")["classifier.weight"]
    assert ranker.fresh_head == [] and "fresh_head_seed" not in ranker.describe()
    assert torch_equal(ranker.model.classifier.weight, saved)
    ranker.check_ready_for_effectiveness()


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a.detach().cpu(), b)


def test_dense_matches_sentence_transformers(minilm_path):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(minilm_path, device="cpu")
    expected = reference.encode(DOCS, convert_to_numpy=True) @ reference.encode([QUERY], convert_to_numpy=True)[0]
    ranker = load_ranker("dense", device="cpu", batch_size=2)
    assert ranker.max_length == 256 and ranker.normalize
    np.testing.assert_allclose(ranker.score(QUERY, DOCS), expected, atol=1e-5, rtol=0)


def _frame() -> pd.DataFrame:
    rows = [("q1", QUERY, f"d{i}", text, 0.0) for i, text in enumerate(DOCS)]
    rows += [("q2", "wireless networks", f"d{i}", text, 0.0) for i, text in enumerate(DOCS[:2])]
    return pd.DataFrame(rows, columns=["qid", "query", "docno", "text", "score"])


@pytest.mark.parametrize("model", ["ce", "dense", "bm25", "mask2", "mice-l1+1", "colbert"])
def test_ranker_contract(model, tiny_bert_ce, tiny_bert_encoder):
    """Every ranker: one finite float per doc from score(); rerank() agrees with score() and ranks 1..n."""
    options = {
        "ce": {"checkpoint": tiny_bert_ce},
        "mask2": {"checkpoint": tiny_bert_ce},
        "mice-l1+1": {"checkpoint": tiny_bert_ce, "untrained": True},
        "dense": {"checkpoint": tiny_bert_encoder},
        "colbert": {"checkpoint": tiny_bert_encoder},
    }.get(model, {})
    if accepts_option(model, "device"):
        options["device"] = "cpu"
    ranker = load_ranker(model, **options)
    scores = ranker.score(QUERY, DOCS)
    assert scores.shape == (len(DOCS),) and np.all(np.isfinite(scores))
    frame = _frame()
    if model == "bm25":  # bm25 reranks by first-stage score; its score() uses the given docs' statistics
        frame["score"] = [3.0, 1.0, 2.0, 1.0, 5.0, 4.0]
    out = ranker.rerank(frame)
    assert list(out.columns) == ["qid", "query", "docno", "text", "score", "rank"]
    assert out.groupby("qid")["rank"].apply(list).to_dict() == {"q1": [1, 2, 3, 4], "q2": [1, 2]}
    q1 = out[out.qid == "q1"].set_index("docno")["score"]
    if model != "bm25":
        np.testing.assert_allclose(q1[[f"d{i}" for i in range(len(DOCS))]].to_numpy(), scores, atol=1e-5)
    assert ranker.describe()["ranker"] in (model, "masked-ce", "mice")


def test_bm25_score_prefers_matching_document():
    ranker = load_ranker("bm25")
    scores = ranker.score(QUERY, DOCS)
    assert scores[0] > 0 and scores[1] == 0 and scores[2] == 0


def test_ties_are_ranked_by_doc_id():
    ranker = load_ranker("first-stage")
    frame = pd.DataFrame(
        [("q", "x", "b", "", 1.0), ("q", "x", "a", "", 1.0), ("q", "x", "c", "", 2.0)],
        columns=["qid", "query", "docno", "text", "score"],
    )
    assert ranker.rerank(frame)["docno"].tolist() == ["c", "a", "b"]


def test_unknown_model_and_empty_query(tiny_bert_ce):
    with pytest.raises(UnknownNameError, match="unknown model 'nope'"):
        load_ranker("nope")
    with pytest.raises(MicebenchError, match="empty query"):
        load_ranker("ce", checkpoint=tiny_bert_ce, device="cpu").score("  ", ["doc"])
    with pytest.raises(MicebenchError, match="model folder not found"):
        load_ranker("ce", checkpoint="./missing-model", device="cpu")


@pytest.mark.parametrize(
    ("model", "options", "message"),
    [
        ("colbert", {"max_length": 256}, "option --max-length does not apply to model 'colbert'"),
        ("ce", {"merge_layer": 4}, "option --merge-layer does not apply to model 'ce'"),
        ("bm25", {"device": "cpu"}, "option --device does not apply to model 'bm25' (it takes no options)"),
        ("mask2", {"schedule": "mask1"}, "--schedule mask1 contradicts model name 'mask2'"),
        ("mice-l4+3", {"merge_layer": 2}, "--merge-layer 2 contradicts model name 'mice-l4+3'"),
        ("ce", {"batch_size": 0}, "--batch-size must be a positive whole number"),
        ("dense", {"max_length": -3}, "--max-length must be a positive whole number"),
    ],
)
def test_inapplicable_or_invalid_options_are_refused_before_any_model_loads(model, options, message, monkeypatch):
    """Options are checked against the ranker's declaration; nothing is loaded (a load would fail here)."""
    import micebench.models.hf as hf

    monkeypatch.setattr(hf, "load_pretrained", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(MicebenchError) as raised:
        load_ranker(model, checkpoint="./not-loaded", **options) if accepts_option(model, "checkpoint") else (
            load_ranker(model, **options)
        )
    assert message in str(raised.value)


def test_effective_options_record_defaults(tiny_bert_ce):
    """What a manifest records: every declared option, the defaults included, and nothing else."""
    ranker = load_ranker("ce", checkpoint=tiny_bert_ce, device="cpu")
    assert ranker.effective_options() == {
        "checkpoint": tiny_bert_ce,
        "device": "cpu",
        "dtype": "fp32",
        "batch_size": 32,
        "max_length": 512,
        "attn_implementation": "sdpa",
        "untrained": False,
        "head_seed": 0,
    }


def test_every_declared_option_has_a_help_text():
    """Each Options field carries the help a command-line option can be generated from."""
    import dataclasses

    from micebench.rankers.registry import _REGISTRY, _load_builtins

    _load_builtins()
    missing = [
        f"{name}.{f.name}"
        for name, cls in _REGISTRY.items()
        for f in dataclasses.fields(cls.Options)
        if not str(f.metadata.get("help", "")).strip()
    ]
    assert not missing, missing
