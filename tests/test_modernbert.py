"""ModernBERT (Ettin) backbones: a published config.json builds every ranker; presets carry its values;
dense pooling follows the checkpoint; training and reloading work on ModernBERT students."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from micebench import load_ranker

QUERY = "how do goldfish grow"
DOCS = [
    "Goldfish grow according to the size of their tank and the quality of the water.",
    "Wi-Fi is a family of wireless network protocols.",
    "A very long passage about aquariums. " * 60,
]

# config.json of jhu-clsp/ettin-encoder-17m as published (transformers 4.48 field names)
ETTIN_17M = {
    "architectures": ["ModernBertForMaskedLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 50281,
    "classifier_activation": "gelu",
    "classifier_bias": False,
    "classifier_dropout": 0.0,
    "classifier_pooling": "mean",
    "cls_token_id": 50281,
    "decoder_bias": True,
    "deterministic_flash_attn": False,
    "embedding_dropout": 0.0,
    "eos_token_id": 50282,
    "global_attn_every_n_layers": 3,
    "global_rope_theta": 160000.0,
    "gradient_checkpointing": False,
    "hidden_activation": "gelu",
    "hidden_size": 256,
    "initializer_cutoff_factor": 2.0,
    "initializer_range": 0.02,
    "intermediate_size": 384,
    "layer_norm_eps": 1e-05,
    "local_attention": 128,
    "local_rope_theta": 160000.0,
    "max_position_embeddings": 7999,
    "mlp_bias": False,
    "mlp_dropout": 0.0,
    "model_type": "modernbert",
    "norm_bias": False,
    "norm_eps": 1e-05,
    "num_attention_heads": 4,
    "num_hidden_layers": 7,
    "pad_token_id": 50283,
    "position_embedding_type": "sans_pos",
    "sep_token_id": 50282,
    "sparse_pred_ignore_index": -100,
    "sparse_prediction": False,
    "torch_dtype": "float32",
    "transformers_version": "4.48.0",
    "vocab_size": 50368,
}


@pytest.fixture(scope="module")
def ettin_17m(tmp_path_factory, minilm_path) -> str:
    """A base checkpoint like jhu-clsp/ettin-encoder-17m: its config.json, random weights, a WordPiece tokenizer."""
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("ettin-17m")
    (folder / "config.json").write_text(json.dumps(ETTIN_17M, indent=2))
    torch.manual_seed(0)
    AutoModelForMaskedLM.from_config(AutoConfig.from_pretrained(folder)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return str(folder)


def test_the_ettin_17m_preset_carries_the_published_values(ettin_17m):
    from transformers import AutoConfig

    from micebench.latency.architectures import architecture_config

    published, preset = AutoConfig.from_pretrained(ettin_17m), architecture_config("ettin-17m")
    for key in (
        "model_type",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "vocab_size",
        "max_position_embeddings",
        "local_attention",
        "global_attn_every_n_layers",
        "rope_parameters",
        "layer_types",
        "classifier_pooling",
        "norm_eps",
        "norm_bias",
        "attention_bias",
        "mlp_bias",
        "pad_token_id",
    ):
        assert getattr(preset, key) == getattr(published, key), key
    assert published.layer_types[:4] == ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]


@pytest.mark.parametrize("model", ["ce", "mask2", "prettr-l3", "mice-l4+3", "colbert", "dense"])
def test_a_published_modernbert_config_builds_every_ranker(ettin_17m, model):
    extra = {"untrained": True} if model.startswith("mice") else {}
    ranker = load_ranker(model, checkpoint=ettin_17m, device="cpu", batch_size=2, **extra)
    scores = ranker.score(QUERY, DOCS)
    assert scores.shape == (len(DOCS),) and np.all(np.isfinite(scores))
    assert ranker.score(QUERY, DOCS[:1])[0] == pytest.approx(scores[0], abs=1e-5)  # padding changes nothing
    if model == "mice-l4+3":
        assert ranker.model.family == "modernbert" and len(ranker.model.top) == 3
        assert [t.attention_type for t in ranker.model.top] == [
            "sliding_attention",
            "sliding_attention",
            "full_attention",
        ]
    if model in ("ce", "mask2", "prettr-l3"):
        assert type(ranker.model).__name__ == "ModernBertForSequenceClassification"
        assert ranker.model.config.classifier_pooling == "mean" and ranker.model.config.num_labels == 1


def test_dense_pooling_follows_the_sentence_transformers_config(tmp_path, tiny_modernbert_ce):
    """A sentence-transformers folder whose Pooling module says CLS is pooled on CLS (mean otherwise)."""
    import shutil

    from transformers import AutoModel, AutoTokenizer

    folder = tmp_path / "st"
    shutil.copytree(tiny_modernbert_ce, folder)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    )
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            ]
        )
    )
    ranker = load_ranker("dense", checkpoint=str(folder), device="cpu", batch_size=2)
    assert ranker.pooling == "cls" and not ranker.normalize
    tok, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        cls = [model(**tok([t], return_tensors="pt")).last_hidden_state[0, 0] for t in [QUERY, *DOCS]]
    expected = [float(cls[0] @ d) for d in cls[1:]]
    np.testing.assert_allclose(ranker.score(QUERY, DOCS), expected, atol=1e-5, rtol=0)


def test_colbert_on_a_vocabulary_without_unused_slots_adds_marker_tokens(tmp_path, tiny_modernbert_ce):
    """ModernBERT's tokenizer has no [unused0]/[unused1]: a fresh ColBERT adds "[Q] "/"[D] " (as PyLate does)."""
    import shutil

    from transformers import BertTokenizerFast

    folder = tmp_path / "no-unused"
    shutil.copytree(tiny_modernbert_ce, folder)
    for name in folder.iterdir():
        if name.name.startswith(("tokenizer", "vocab", "special_tokens")):
            name.unlink()
    words = sorted({w.strip(".,-").lower() for w in " ".join([QUERY, *DOCS]).split()} - {""})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *".,-!", *words]
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(folder)
    ranker = load_ranker("colbert", checkpoint=str(folder), device="cpu", batch_size=2)
    assert ranker.tokenizer.convert_tokens_to_ids("[Q] ") == ranker.q_marker == len(vocab)
    assert ranker.d_marker == len(vocab) + 1
    scores = ranker.score(QUERY, DOCS)
    assert np.all(np.isfinite(scores))
    saved = tmp_path / "saved"
    saved.mkdir()
    ranker.save_checkpoint(saved)
    reloaded = load_ranker("colbert", checkpoint=str(saved), device="cpu", batch_size=2)
    assert (reloaded.q_marker, reloaded.d_marker) == (ranker.q_marker, ranker.d_marker)
    np.testing.assert_allclose(reloaded.score(QUERY, DOCS), scores, atol=1e-5, rtol=0)
