"""Run dtypes and latency options that used to break only off the default path (bf16 runs, --compile)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from micebench import load_ranker
from micebench.store.precompute import precompute
from tests.conftest import write_beir

DOCS = ["goldfish grow to the size of their tank", "wireless networks use radio waves", "a tank of water"]


def _collection(tmp_path):
    corpus = [{"_id": f"d{i}", "title": "", "text": t} for i, t in enumerate(DOCS)]
    return write_beir(tmp_path / "c", corpus, [{"_id": "q1", "text": "goldfish tank"}], [("q1", "d0", 1)])


@pytest.mark.parametrize(("model", "extra"), [("mice-l1+1", {"untrained": True}), ("colbert", {})])
def test_a_bf16_run_opens_a_store_built_in_fp32(tmp_path, tiny_bert_ce, tiny_bert_encoder, model, extra):
    """Stores are fingerprinted on the weights as loaded: casting the model to bf16 must not make its own store
    look like another model's (before, every bf16 --precomputed run was refused)."""
    from micebench.data import load_dataset

    checkpoint = tiny_bert_ce if model.startswith("mice") else tiny_bert_encoder
    builder = load_ranker(model, checkpoint=checkpoint, device="cpu", **extra)
    store = tmp_path / "store"
    precompute(builder, load_dataset(str(_collection(tmp_path))), store, builder.store_mode(None), "fp16")
    bf16 = load_ranker(model, checkpoint=checkpoint, device="cpu", dtype="bf16", precomputed=str(store), **extra)
    assert bf16.store is not None and bf16.dtype == torch.bfloat16
    assert bf16.store_fingerprint(builder.store_mode(None)) == builder.store_fingerprint(builder.store_mode(None))
    scores = bf16.score_stored("goldfish tank", ["d0", "d1", "d2"])
    reference = builder.score("goldfish tank", DOCS)  # fp32, from the texts
    np.testing.assert_allclose(scores, reference, atol=0.05 * max(1.0, float(np.abs(reference).max())))


def test_rotary_buffers_stay_fp32_in_a_bf16_model(tiny_modernbert_ce):
    """Casting ModernBERT to bf16 used to round its rotary inv_freq too (cos off by up to 0.48 at positions >= 256)."""
    fp32 = load_ranker("ce", checkpoint=tiny_modernbert_ce, device="cpu")
    bf16 = load_ranker("ce", checkpoint=tiny_modernbert_ce, device="cpu", dtype="bf16")
    reference = {n: b for n, b in fp32.model.named_buffers() if n.endswith("inv_freq")}
    found = {n: b for n, b in bf16.model.named_buffers() if n.endswith("inv_freq")}
    assert reference and found.keys() == reference.keys()
    for name, buffer in found.items():
        assert buffer.dtype == torch.float32 and torch.equal(buffer, reference[name]), name
    assert next(bf16.model.parameters()).dtype == torch.bfloat16


def test_latency_compile_applies_to_every_model(monkeypatch, tmp_path, tiny_bert_ce):
    """`latency --compile` compiles each model's timed modules in place, MICE and ColBERT included."""
    from micebench.latency.runner import LatencyBench, LatencyConfig

    compiled: list[str] = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(type(self).__name__))
    config = LatencyConfig(
        models=["ce", "mice-l1+1:states", "colbert:precomputed"],
        batch=2,
        query_len=8,
        doc_len=16,
        device="cpu",
        checkpoint=tiny_bert_ce,
        compile=True,
        warmup=0,
        repeats=1,
    )
    bench = LatencyBench(config)
    for spec in config.models:
        bench.build(spec)
    assert "BertForSequenceClassification" in compiled  # ce
    assert {"BertEmbeddings", "BertLayer", "BertMiceTopLayer"} <= set(compiled)  # MICE: embeddings, bottom, top
    assert "BertModel" in compiled and "Linear" in compiled  # ColBERT: encoder and projection


def test_every_timed_call_ends_on_the_host(tiny_bert_ce):
    """Every model is timed to the same point: scores copied to the host (the cross-encoder used to stop earlier)."""
    from micebench.latency.runner import LatencyBench, LatencyConfig

    config = LatencyConfig(models=["ce", "mask2", "mice-l1+1:kv", "colbert"], batch=2, query_len=8, doc_len=16)
    bench = LatencyBench(LatencyConfig(**{**config.__dict__, "device": "cpu", "checkpoint": tiny_bert_ce}))
    for spec in config.models:
        result = bench.build(spec).call()
        assert isinstance(result, np.ndarray) and result.shape == (2,), spec  # a device tensor would fail here
