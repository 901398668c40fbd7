"""Masked cross-encoders: equality with the unmodified model, exact zeros where a schedule removes attention,
and the independence properties that Mask2 and PreTTR promise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from micebench import load_ranker
from micebench.models.segments import segment_ids
from micebench.schedules import SEGMENTS, preset

QUERY = "how do goldfish grow"
DOCS = ["Goldfish grow with the size of their tank.", "Wi-Fi is a family of wireless protocols.", ""]


def _hf_logits(checkpoint, query, docs):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        return np.array([model(**tokenizer([query], [d], return_tensors="pt")).logits[0, 0].item() for d in docs])


@pytest.mark.parametrize("batch_size", [1, 3])  # 1: unpadded inputs; 3: a padded batch
def test_empty_schedule_equals_unmodified_model_tiny(any_tiny_ce, batch_size):
    ranker = load_ranker("masked-ce", schedule="none", checkpoint=any_tiny_ce, device="cpu", batch_size=batch_size)
    docs = [*DOCS, "goldfish " * 40]  # longer than ModernBERT's local window
    np.testing.assert_allclose(ranker.score(QUERY, docs), _hf_logits(any_tiny_ce, QUERY, docs), atol=1e-5, rtol=0)


def test_empty_schedule_equals_unmodified_model_minilm(minilm_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)  # the bi-encoder checkpoint gets a fresh one-logit head: same seed, same head
    ranker = load_ranker("masked-ce", schedule="none", checkpoint=minilm_path, device="cpu", batch_size=2)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=1).eval()
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    docs = [*DOCS, "a long passage about tanks " * 100]
    with torch.no_grad():
        expected = [
            model(**tokenizer([QUERY], [d], truncation=True, max_length=512, return_tensors="pt")).logits[0, 0].item()
            for d in docs
        ]
    np.testing.assert_allclose(ranker.score(QUERY, docs), expected, atol=1e-5, rtol=0)


def _expected_segments(tokenizer, query, docs):
    """Segment names per position, laid out by hand from token counts (independent of segment_ids)."""
    rows = []
    for doc in docs:
        q = len(tokenizer(query, add_special_tokens=False)["input_ids"])
        d = len(tokenizer(doc, add_special_tokens=False)["input_ids"])
        rows.append(["cls"] + ["query"] * q + ["sep1"] + ["document"] * d + ["sep2"])
    width = max(map(len, rows))
    return [r + ["pad"] * (width - len(r)) for r in rows]


@pytest.mark.parametrize("name", ["mask0", "mask1", "mask2", "mask3-l1", "mask3-l2", "prettr-l1", "prettr-l2"])
def test_attention_is_exactly_zero_where_removed(any_tiny_ce, name):
    masked = load_ranker(name, checkpoint=any_tiny_ce, device="cpu", attn_implementation="eager")
    full = load_ranker("ce", checkpoint=any_tiny_ce, device="cpu", attn_implementation="eager")
    batch = masked.tokenize_pairs([QUERY] * len(DOCS), DOCS)
    segments = _expected_segments(masked.tokenizer, QUERY, DOCS)
    with torch.no_grad():
        probs = masked.forward(batch, output_attentions=True).attentions
        probs_full = full.forward(batch, output_attentions=True).attentions
    schedule = preset(name)
    config = masked.model.config
    for layer, p in enumerate(probs):
        grid = schedule.blocked(layer)
        # ModernBERT's local layers also keep their own window (|i - j| <= local_attention / 2): never widened
        local = config.model_type == "modernbert" and (layer % config.global_attn_every_n_layers) != 0
        for b, segs in enumerate(segments):
            real = [i for i, s in enumerate(segs) if s != "pad"]
            block = np.zeros((len(segs), len(segs)), dtype=bool)
            for i in real:
                for j in range(len(segs)):
                    outside = local and abs(i - j) > config.local_attention // 2
                    block[i, j] = segs[j] == "pad" or outside or grid[SEGMENTS.index(segs[i]), SEGMENTS.index(segs[j])]
            pb = p[b].numpy()  # heads x L x L
            for i in real:
                assert np.all(pb[:, i, block[i]] == 0.0), (layer, segs[i])
                assert np.all(pb[:, i, ~block[i]] > 0.0)
                np.testing.assert_allclose(pb[:, i].sum(-1), 1.0, atol=1e-6)
            if layer == 0:  # same inputs: allowed weights are the unmasked ones renormalised over what is left
                pf = probs_full[0][b].numpy()
                for i in real:
                    kept = pf[:, i] * ~block[i]
                    np.testing.assert_allclose(pb[:, i], kept / kept.sum(-1, keepdims=True), atol=1e-6)


def test_segments_survive_truncation(tiny_bert_ce):
    ranker = load_ranker("mask2", checkpoint=tiny_bert_ce, device="cpu", max_length=16)
    batch = ranker.tokenize_pairs([QUERY, QUERY], ["goldfish " * 50, "short"])
    seg = segment_ids(batch["input_ids"], batch["attention_mask"], ranker.tokenizer.sep_token_id)
    names = [[SEGMENTS[i] if i < 5 else "pad" for i in row] for row in seg.tolist()]
    assert names[0][-1] == "sep2" and names[0][0] == "cls" and names[0].count("document") == 16 - 3 - 5
    assert names[1][-1] == "pad" and "sep2" in names[1]


def _states(ranker, query, doc):
    batch = ranker.tokenize_pairs([query], [doc])
    with torch.no_grad():
        out = ranker.forward(batch, output_hidden_states=True)
    return batch, out


def test_mask2_document_states_ignore_the_query(tiny_bert_ce):
    ranker = load_ranker("mask2", checkpoint=tiny_bert_ce, device="cpu")
    doc = "goldfish grow with the size of their tank"
    b1, o1 = _states(ranker, "how do goldfish grow", doc)
    b2, o2 = _states(ranker, "why is wifi fast", doc)
    assert b1["input_ids"].shape == b2["input_ids"].shape and not torch.equal(b1["input_ids"], b2["input_ids"])
    seg = segment_ids(b1["input_ids"], b1["attention_mask"], ranker.tokenizer.sep_token_id)[0]
    doc_positions = (seg == SEGMENTS.index("document")) | (seg == SEGMENTS.index("sep2"))
    for h1, h2 in zip(o1.hidden_states, o2.hidden_states, strict=True):
        torch.testing.assert_close(h1[0, doc_positions], h2[0, doc_positions], atol=1e-6, rtol=0)
    query_positions = seg == SEGMENTS.index("query")
    assert not torch.allclose(o1.hidden_states[-1][0, query_positions], o2.hidden_states[-1][0, query_positions])


def test_prettr_at_full_depth_splits_the_pair(tiny_bert_ce):
    """With k = depth the two sides never meet: document-side states ignore the query, and the score,
    read from cls on the query side, ignores the document (texts of equal token length)."""
    ranker = load_ranker("prettr-l2", checkpoint=tiny_bert_ce, device="cpu")
    doc_a, doc_b = "goldfish grow with the size of their tank", "wifi is a family of radio network protocols"
    assert len(ranker.tokenizer(doc_a)["input_ids"]) == len(ranker.tokenizer(doc_b)["input_ids"])
    assert ranker.score(QUERY, [doc_a])[0] == pytest.approx(ranker.score(QUERY, [doc_b])[0], abs=1e-6)
    b1, o1 = _states(ranker, "how do goldfish grow", doc_a)
    _, o2 = _states(ranker, "why is wifi fast", doc_a)
    seg = segment_ids(b1["input_ids"], b1["attention_mask"], ranker.tokenizer.sep_token_id)[0]
    doc_side = seg >= SEGMENTS.index("document")
    torch.testing.assert_close(o1.hidden_states[-1][0, doc_side], o2.hidden_states[-1][0, doc_side], atol=1e-6, rtol=0)
    # one layer of PreTTR (k < depth) lets the sides interact above k again
    mixed = load_ranker("prettr-l1", checkpoint=tiny_bert_ce, device="cpu")
    assert abs(mixed.score(QUERY, [doc_a])[0] - mixed.score(QUERY, [doc_b])[0]) > 1e-6


def test_schedule_checked_against_model_depth(tiny_bert_ce):
    from micebench.errors import MicebenchError

    with pytest.raises(MicebenchError, match="beyond the model's 2 layers"):
        load_ranker("mask3-l4", checkpoint=tiny_bert_ce, device="cpu")


def test_masked_runs_in_the_pipeline(capsys, tmp_path, data_dir, tiny_bert_ce):
    from tests.test_cli import cli

    args = [
        "--dataset",
        str(data_dir / "adi"),
        "--first-stage",
        "bm25",
        "--top-k",
        "10",
        "--device",
        "cpu",
        "--checkpoint",
        tiny_bert_ce,
        "-o",
        str(tmp_path),
    ]
    code, _, err = cli(capsys, "run", "--model", "masked-ce", "--schedule", "mask2", "--name", "m2", *args)
    assert code == 0, err
    import json

    manifest = json.loads((tmp_path / "adi" / "m2" / "manifest.json").read_text())
    assert manifest["ranker"]["schedule"]["name"] == "mask2" and manifest["config"]["options"]["schedule"] == "mask2"
    assert manifest["ranker_options"]["schedule"]["name"] == "mask2"
    code, _, err = cli(capsys, "run", "--model", "prettr-l1", *args)
    assert code == 0, err
    assert (tmp_path / "adi" / "prettr-l1-tiny-bert-ce0" / "run.trec").is_file()
    # on 2 layers, mask3-l1 keeps cls from ever depending on the document: its scores rank nothing, so no result
    code, _, err = cli(capsys, "run", "--model", "mask3-l1", *args)
    assert code == 2 and "every query's candidates scored the same" in err
    assert not (tmp_path / "adi" / "mask3-l1-tiny-bert-ce0").exists()
    code, _, err = cli(capsys, "run", "--model", "ce", "--schedule", "mask2", *args)
    assert code == 2 and "option --schedule does not apply to model 'ce'" in err
    code, _, err = cli(capsys, "run", "--model", "masked-ce", "--schedule", "query>title", *args)
    assert code == 2 and "unknown segment 'title'" in err


def test_schedules_command(capsys):
    from tests.test_cli import cli

    code, out, _ = cli(capsys, "schedules")
    assert code == 0 and "prettr-l<k>" in out and "from>to[@start-end]" in out
    code, out, _ = cli(capsys, "schedules", "mask3-l2", "--layers", "4")
    assert code == 0 and "layers 0-1" in out and "layers 2-3" in out
    code, _, err = cli(capsys, "schedules", "mask3-l9", "--layers", "4")
    assert code == 2 and "beyond the model's 4 layers" in err
