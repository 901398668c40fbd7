"""MICE: wiring against the source model, precomputed == on the fly, batching, save/load, shape errors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from micebench import load_ranker
from micebench.errors import MicebenchError
from micebench.models.mice import MiceConfig
from micebench.models.mice_io import build_mice
from micebench.store.codecs import TOKEN_IDS
from tests.conftest import tiny_modernbert_config, write_beir

QUERY = "how do goldfish grow"
DOCS = [
    "Goldfish grow according to the size of their tank.",
    "Wi-Fi is a family of wireless network protocols.",
    "",
    "A long passage about aquariums and fish food. " * 30,
]


@pytest.fixture(scope="module")
def tiny4_bert(tmp_path_factory, minilm_path) -> str:
    """A tiny random 4-layer BERT cross-encoder."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(3)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64, num_labels=1
    )
    folder = tmp_path_factory.mktemp("tiny4")
    BertForSequenceClassification(config).eval().save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny4_modernbert(tmp_path_factory, minilm_path) -> str:
    """A tiny random 4-layer ModernBERT cross-encoder (global, local, global, local; window 8; mean pooling)."""
    from transformers import AutoTokenizer, ModernBertForSequenceClassification

    torch.manual_seed(3)
    folder = tmp_path_factory.mktemp("tiny4-modernbert")
    ModernBertForSequenceClassification(tiny_modernbert_config()).eval().save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module", params=["bert", "modernbert"])
def tiny4_ce(request) -> str:
    """Each 4-layer backbone in turn: the backbone-independent MICE properties hold for both."""
    return request.getfixturevalue(f"tiny4_{request.param}")


def _mice(checkpoint, k=2, m=2, **options):
    return load_ranker(f"mice-l{k}+{m}", checkpoint=checkpoint, device="cpu", untrained=True, **options)


def _assert_same_weights(mine, theirs):
    for (name, a), (_, b) in zip(mine.state_dict().items(), theirs.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_bottom_states_equal_the_source_model_run_alone(tiny4_ce):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    ranker = _mice(tiny4_ce, k=2, m=2)
    source = AutoModelForSequenceClassification.from_pretrained(tiny4_ce).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny4_ce)
    with torch.no_grad():
        for text in (QUERY, DOCS[0]):
            enc = tokenizer([text], return_tensors="pt")
            expected = source(**enc, output_hidden_states=True).hidden_states[2]  # output of layer index 1
            got = ranker.model.encode_bottom(enc["input_ids"], enc["attention_mask"])
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
        # padded batches give the same states for the real tokens
        enc = tokenizer([QUERY, DOCS[3]], return_tensors="pt", padding=True)
        got = ranker.model.encode_bottom(enc["input_ids"], enc["attention_mask"])
        alone = source(**tokenizer([QUERY], return_tensors="pt"), output_hidden_states=True).hidden_states[2]
        torch.testing.assert_close(got[0, : alone.shape[1]], alone[0], atol=1e-5, rtol=0)


def test_top_layers_are_copies_of_source_layers_k_to_k_plus_m(tiny4_bert):
    from transformers import AutoModelForSequenceClassification

    source = AutoModelForSequenceClassification.from_pretrained(tiny4_bert).eval()
    mice = _mice(tiny4_bert, k=1, m=2).model
    assert len(mice.bottom) == 1 and len(mice.top) == 2  # layer 3 dropped
    for j, top in enumerate(mice.top):
        src = source.bert.encoder.layer[1 + j]
        for mine, theirs in (
            (top.self_attention, src.attention),
            (top.cross_attention, src.attention),
            (top.intermediate, src.intermediate),
            (top.output, src.output),
        ):
            _assert_same_weights(mine, theirs)
        assert top.cross_attention is not top.self_attention
    assert torch.equal(mice.classifier.weight, source.classifier.weight)
    assert torch.equal(mice.pooler.dense.weight, source.bert.pooler.dense.weight)
    random = _mice(tiny4_bert, k=1, m=2, random_top_layers=True).model
    assert not torch.equal(
        random.top[0].intermediate.dense.weight, source.bert.encoder.layer[1].intermediate.dense.weight
    )


def test_modernbert_top_layers_are_copies_of_source_layers(tiny4_modernbert):
    from transformers import AutoModelForSequenceClassification

    source = AutoModelForSequenceClassification.from_pretrained(tiny4_modernbert).eval()
    mice = _mice(tiny4_modernbert, k=1, m=2).model
    assert len(mice.bottom) == 1 and len(mice.top) == 2  # layer 3 dropped
    for j, top in enumerate(mice.top):
        src = source.model.layers[1 + j]
        assert top.attention_type == src.attention_type  # layer 1 local, layer 2 global
        for mine, theirs in (
            (top.self_norm, src.attn_norm),
            (top.self_attention, src.attn),
            (top.cross_norm, src.attn_norm),
            (top.cross_attention, src.attn),
            (top.mlp_norm, src.mlp_norm),
            (top.mlp, src.mlp),
        ):
            _assert_same_weights(mine, theirs)
        assert top.cross_attention is not top.self_attention and top.cross_norm is not top.self_norm
    for mine, theirs in (
        (mice.final_norm, source.model.final_norm),
        (mice.prediction_head, source.head),
        (mice.classifier, source.classifier),
    ):
        _assert_same_weights(mine, theirs)


@pytest.mark.parametrize("j", [0, 1])  # top layer 0 is source layer 2 (global), top layer 1 is layer 3 (local)
def test_modernbert_query_self_attention_equals_the_source_layer(tiny4_modernbert, j):
    """With `cls` attendable, a top layer's self-attention is the source layer's (rotary phases and window)."""
    from transformers import AutoModelForSequenceClassification
    from transformers.masking_utils import create_bidirectional_mask, create_bidirectional_sliding_window_mask

    source = AutoModelForSequenceClassification.from_pretrained(tiny4_modernbert).eval()
    mice = _mice(tiny4_modernbert, k=2, m=2, query_attends_cls=True).model
    tok = AutoTokenizer.from_pretrained(tiny4_modernbert)
    enc = tok(
        ["a query long enough to exceed the local window of eight tokens by far", "short"],
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        hidden = mice.encode_bottom(enc["input_ids"], enc["attention_mask"])
        layer = source.model.layers[2 + j]
        options = {"config": source.config, "inputs_embeds": hidden, "attention_mask": enc["attention_mask"]}
        make = (
            create_bidirectional_mask
            if layer.attention_type == "full_attention"
            else (create_bidirectional_sliding_window_mask)
        )
        positions = torch.arange(hidden.shape[1]).unsqueeze(0)
        rope = source.model.rotary_emb(hidden, positions, layer.attention_type)
        expected = (
            hidden + layer.attn(layer.attn_norm(hidden), position_embeddings=rope, attention_mask=make(**options))[0]
        )
        got = mice.top[j].self_attend(
            hidden, mice.top_self_mask(enc["attention_mask"], j), mice.rotary(hidden, hidden.shape[1], j)
        )
    real = enc["attention_mask"].bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=0)


def test_modernbert_cross_attention_uses_the_documents_own_rotary_phases(tiny4_modernbert):
    """Cross-attention to a document equal to the query (both from position 0) is the source layer's global
    self-attention over that text: keys carry the document's phases, queries the query's."""
    from transformers import AutoModelForSequenceClassification

    source = AutoModelForSequenceClassification.from_pretrained(tiny4_modernbert).eval()
    mice = _mice(tiny4_modernbert, k=2, m=1, cls_attends_document=True).model
    tok = AutoTokenizer.from_pretrained(tiny4_modernbert)
    enc = tok([DOCS[0]], return_tensors="pt")
    with torch.no_grad():
        hidden = mice.encode_bottom(enc["input_ids"], enc["attention_mask"])
        layer = source.model.layers[2]  # global
        rope = source.model.rotary_emb(hidden, torch.arange(hidden.shape[1]).unsqueeze(0), "full_attention")
        expected = hidden + layer.attn(layer.attn_norm(hidden), position_embeddings=rope, attention_mask=None)[0]
        top = mice.top[0]
        got = top.cross_attend(
            hidden, *mice.document_kv(hidden)[0], None, True, mice.rotary(hidden, hidden.shape[1], 0)
        )
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_modernbert_pooling_follows_the_checkpoint(tmp_path, minilm_path):
    """CLS pooling with one top layer ignores the document (cls never cross-attends); mean pooling does not."""
    from transformers import AutoTokenizer as Tok
    from transformers import ModernBertForSequenceClassification

    scores = {}
    for pooling in ("cls", "mean"):
        torch.manual_seed(5)
        folder = tmp_path / pooling
        ModernBertForSequenceClassification(tiny_modernbert_config(classifier_pooling=pooling)).save_pretrained(folder)
        Tok.from_pretrained(minilm_path).save_pretrained(folder)
        scores[pooling] = _mice(str(folder), k=2, m=1).score(QUERY, DOCS)
    assert np.ptp(scores["cls"]) < 1e-9
    assert np.ptp(scores["mean"]) > 1e-8


def test_parameter_count_of_mice_l4_3_from_the_ettin_32m_config():
    """Analytic count: ModernBERT has no biases but the classifier's; layer 0 has no attention norm."""
    from transformers import AutoModelForSequenceClassification

    from micebench.latency.architectures import architecture_config

    config = architecture_config("ettin-32m")
    h, i, v = config.hidden_size, config.intermediate_size, config.vocab_size
    assert (h, i, v, config.num_hidden_layers) == (384, 576, 50368, 10)
    source = AutoModelForSequenceClassification.from_config(config)
    layer = 4 * h * h + 3 * h * i + 2 * h  # Wqkv 3H^2, Wo H^2, Wi 2HI, Wo HI, two norms
    embeddings, head = v * h + h, h * h + h + h + (h + 1)  # final norm; prediction head + norm; classifier
    assert sum(p.numel() for p in source.parameters()) == embeddings + 10 * layer - h + head
    mice = build_mice(source, MiceConfig(merge_layer=4, top_layers=3))
    cross = 4 * h * h + h  # a copy of the layer's norm, Wqkv and Wo per top layer
    expected = embeddings + 7 * layer - h + 3 * cross + head
    assert sum(p.numel() for p in mice.parameters()) == expected
    assert round(expected / 1e6, 1) == 30.0  # vs 32.0M for the 10-layer cross-encoder


def test_options_change_the_computation(tiny4_ce):
    base = _mice(tiny4_ce).score(QUERY, DOCS[:2])
    for option in ("query_attends_cls", "cls_attends_document"):
        assert not np.allclose(_mice(tiny4_ce, **{option: True}).score(QUERY, DOCS[:2]), base)
    no_self = _mice(tiny4_ce, top_self_attention=False)
    assert all(layer.self_attention is None for layer in no_self.model.top)


def test_one_top_layer_without_cls_cross_attention_ignores_the_document(tiny4_bert):
    """cls never cross-attends and reads the query only through self-attention before cross-attention."""
    scores = _mice(tiny4_bert, k=2, m=1).score(QUERY, DOCS)
    assert np.ptp(scores) < 1e-9
    assert np.ptp(_mice(tiny4_bert, k=2, m=2).score(QUERY, DOCS)) > 1e-8


def test_batched_equals_one_by_one(tiny4_ce):
    ranker = _mice(tiny4_ce, batch_size=3)
    batched = ranker.score(QUERY, DOCS)
    single = np.array([ranker.score(QUERY, [d])[0] for d in DOCS])
    np.testing.assert_allclose(batched, single, atol=1e-5, rtol=0)


def test_forward_matches_the_ranker(tiny4_bert_spread):
    """The training-time forward (several queries, pair index) equals the ranker's per-query path (a
    self-consistency test; both equal the eager reference in the test below), on a model whose scores differ by
    far more than the tolerance."""
    ranker = _mice(tiny4_bert_spread)
    tok = ranker.tokenizer
    queries = [QUERY, "what is wifi"]
    q = tok(queries, return_tensors="pt", padding=True)
    d = tok(DOCS[:2] * 2, return_tensors="pt", padding=True)
    index = torch.tensor([0, 0, 1, 1])
    with torch.no_grad():
        logits = ranker.model(q["input_ids"], q["attention_mask"], d["input_ids"], d["attention_mask"], index)[:, 0]
    expected = np.concatenate([ranker.score(queries[0], DOCS[:2]), ranker.score(queries[1], DOCS[:2])])
    assert np.ptp(expected) > 1e-2
    np.testing.assert_allclose(logits.numpy(), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["states", "kv"])
def test_precomputed_store_equals_on_the_fly(tmp_path, tiny4_ce, mode):
    from micebench.data import load_dataset
    from micebench.store.precompute import precompute

    corpus = [{"_id": f"d{i}", "title": "", "text": t} for i, t in enumerate(DOCS)]
    folder = write_beir(tmp_path / "c", corpus, [{"_id": "q", "text": QUERY}], [("q", "d0", 1)])
    ranker = _mice(tiny4_ce, batch_size=2)
    store = precompute(ranker, load_dataset(str(folder)), tmp_path / "store", mode, "fp32")
    # the token ids a --token-means codec uses are the tokenizer's own, position for position
    tensors, mask = ranker.store_encode(DOCS[:2], mode)
    for i, text in enumerate(DOCS[:2]):
        stored_ids = tensors[TOKEN_IDS][i][mask[i].bool()].tolist()
        assert stored_ids == ranker.tokenizer(text)["input_ids"]
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["mode"] == mode and manifest["num_docs"] == len(DOCS) and manifest["bytes_per_doc"] > 0
    stored = _mice(tiny4_ce, precomputed=str(store), batch_size=3)
    assert not stored.reads_text(dataclasses.asdict(stored.options))
    order = ["d3", "d1", "d0", "d2"]
    np.testing.assert_allclose(
        stored.score_stored(QUERY, order), ranker.score(QUERY, [DOCS[int(d[1])] for d in order]), atol=1e-4, rtol=0
    )
    with pytest.raises(MicebenchError, match="built by another model"):
        _mice(tiny4_ce, k=1, m=2, precomputed=str(store))
    with pytest.raises(MicebenchError, match="not in the store"):
        stored.score_stored(QUERY, ["d0", "nope"])


def test_convert_save_load_round_trip(tmp_path, tiny4_ce, capsys):
    from tests.test_cli import cli

    code, out, err = cli(
        capsys,
        "convert",
        "--from",
        tiny4_ce,
        "--merge-layer",
        "2",
        "--top-layers",
        "1",
        "--out",
        str(tmp_path / "mice"),
        "--cls-attends-document",
    )
    assert code == 0, err
    config = json.loads((tmp_path / "mice" / "config.json").read_text())
    assert config["mice"]["merge_layer"] == 2 and config["mice"]["cls_attends_document"] is True
    assert config["num_hidden_layers"] == 3 and (tmp_path / "mice" / "model.safetensors").is_file()
    loaded = load_ranker("mice", checkpoint=str(tmp_path / "mice"), device="cpu", untrained=True)
    direct = _mice(tiny4_ce, k=2, m=1, cls_attends_document=True)
    np.testing.assert_allclose(loaded.score(QUERY, DOCS), direct.score(QUERY, DOCS), atol=1e-6, rtol=0)
    with pytest.raises(MicebenchError, match="is mice-l2\\+1, not mice-l3\\+1"):
        load_ranker("mice-l3+1", checkpoint=str(tmp_path / "mice"), device="cpu")


def test_convert_from_a_base_model_is_reproducible_by_seed(tmp_path, tiny_bert_encoder, capsys):
    """A base model gets a fresh classifier head: `--seed` draws it, so two conversions are the same weights, and
    another seed another head; `--max-length` (a declared MICE option) is the saved document budget."""
    from safetensors.torch import load_file

    from tests.test_cli import cli

    heads = {}
    for run, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        args = ["--merge-layer", "1", "--top-layers", "1", "--max-length", "64", "--seed", seed]
        code, _, err = cli(capsys, "convert", "--from", tiny_bert_encoder, *args, "--out", str(tmp_path / run))
        assert code == 0, err
        heads[run] = load_file(str(tmp_path / run / "model.safetensors"))["classifier.weight"]
    assert torch.equal(heads["a"], heads["b"]) and not torch.equal(heads["a"], heads["c"])
    assert json.loads((tmp_path / "a" / "config.json").read_text())["mice"]["doc_max_length"] == 64


def test_parameter_count_of_mice_l4_3_from_minilm_l12_config():
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=30522,
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=1536,
        num_labels=1,
    )
    source = BertForSequenceClassification(config)
    assert abs(sum(p.numel() for p in source.parameters()) / 1e6 - 33.4) < 0.1  # the paper's cross-encoder
    mice = build_mice(source, MiceConfig(merge_layer=4, top_layers=3))
    assert abs(sum(p.numel() for p in mice.parameters()) / 1e6 - 26.3) < 0.1


@pytest.mark.parametrize(
    ("k", "m", "message"),
    [
        (0, 2, "merge layer 0 is impossible"),
        (4, 1, "merge layer 4 is impossible"),
        (2, 3, "3 top layers do not fit above merge layer 2"),
    ],
)
def test_impossible_shapes(tiny4_ce, k, m, message):
    with pytest.raises(MicebenchError, match=message):
        _mice(tiny4_ce, k=k, m=m)


def test_untrained_mice_is_refused_for_effectiveness(capsys, tmp_path, data_dir, tiny4_bert):
    from tests.test_cli import cli

    args = [
        "run",
        "--model",
        "mice-l2+2",
        "--checkpoint",
        tiny4_bert,
        "--dataset",
        str(data_dir / "adi"),
        "--first-stage",
        "bm25",
        "--top-k",
        "5",
        "--device",
        "cpu",
        "-o",
        str(tmp_path),
    ]
    code, _, err = cli(capsys, *args)
    assert code == 2 and "untrained" in err and "micebench train" in err
    code, _, err = cli(capsys, *args, "--untrained")
    assert code == 0, err


def test_precompute_cli_errors(capsys, tmp_path, data_dir, tiny4_bert):
    from tests.test_cli import cli

    base = ["precompute", "--checkpoint", tiny4_bert, "--dataset", str(data_dir / "adi"), "--device", "cpu"]
    code, _, err = cli(capsys, *base, "--model", "mice-l2+2", "--mode", "tokens", "-o", str(tmp_path / "s"))
    assert code == 2 and "unknown store mode 'tokens'" in err
    code, _, err = cli(capsys, *base, "--model", "ce", "-o", str(tmp_path / "s"))
    assert code == 2 and "has no document store" in err
    code, out, err = cli(capsys, *base, "--model", "mice-l2+2", "-o", str(tmp_path / "s"))
    assert code == 0 and "82 documents" in out
    code, _, err = cli(
        capsys,
        "run",
        "--model",
        "mice-l1+1",
        "--checkpoint",
        tiny4_bert,
        "--dataset",
        str(data_dir / "adi"),
        "--precomputed",
        str(tmp_path / "s"),
        "--untrained",
        "-o",
        str(tmp_path),
    )
    assert code == 2 and "built by another model" in err


def test_run_cli_shape_and_store_errors(capsys, tmp_path, data_dir, tiny4_bert):
    from tests.test_cli import cli

    adi = str(data_dir / "adi")
    code, _, err = cli(
        capsys,
        "run",
        "--model",
        "mice",
        "--merge-layer",
        "0",
        "--top-layers",
        "2",
        "--checkpoint",
        tiny4_bert,
        "--dataset",
        adi,
        "--untrained",
        "-o",
        str(tmp_path),
    )
    assert code == 2 and "merge layer 0 is impossible" in err  # refused with the options, before the model loads
    code, _, err = cli(
        capsys,
        "run",
        "--model",
        "mice-l2+3",
        "--checkpoint",
        tiny4_bert,
        "--dataset",
        adi,
        "--untrained",
        "-o",
        str(tmp_path),
    )
    assert code == 2 and "3 top layers do not fit" in err
    code, _, err = cli(
        capsys,
        "run",
        "--model",
        "ce",
        "--checkpoint",
        tiny4_bert,
        "--dataset",
        adi,
        "--precomputed",
        str(tmp_path),
        "-o",
        str(tmp_path / "out"),
    )
    assert code == 2 and "option --precomputed does not apply to model 'ce'" in err
    code, _, err = cli(
        capsys,
        "run",
        "--model",
        "mice-l2+2",
        "--checkpoint",
        tiny4_bert,
        "--dataset",
        adi,
        "--precomputed",
        str(tmp_path),
        "--untrained",
        "-o",
        str(tmp_path / "out"),
    )
    assert code == 2 and "not a document store" in err


def test_full_corpus_from_the_store(capsys, tmp_path, tiny4_bert):
    """`--first-stage full` with a store scores every document without reading texts."""
    from tests.test_cli import cli

    corpus = [{"_id": f"d{i}", "title": "", "text": t} for i, t in enumerate(DOCS)]
    folder = write_beir(tmp_path / "c", corpus, [{"_id": "q", "text": QUERY}], [("q", "d0", 1)])
    code, _, err = cli(
        capsys,
        "precompute",
        "--model",
        "mice-l2+2",
        "--checkpoint",
        tiny4_bert,
        "--dataset",
        str(folder),
        "--mode",
        "kv",
        "--device",
        "cpu",
        "-o",
        str(tmp_path / "store"),
    )
    assert code == 0, err
    code, _, err = cli(
        capsys,
        "run",
        "--model",
        "mice-l2+2",
        "--checkpoint",
        tiny4_bert,
        "--dataset",
        str(folder),
        "--first-stage",
        "full",
        "--precomputed",
        str(tmp_path / "store"),
        "--untrained",
        "--device",
        "cpu",
        "-o",
        str(tmp_path / "out"),
    )
    assert code == 0, err
    lines = (tmp_path / "out" / "c" / "mice-l2+2-tiny40" / "run.trec").read_text().splitlines()
    assert sorted(line.split()[2] for line in lines) == [f"d{i}" for i in range(len(DOCS))]
    expected = _mice(tiny4_bert).score(QUERY, DOCS)
    got = {line.split()[2]: float(line.split()[4]) for line in lines}
    np.testing.assert_allclose([got[f"d{i}"] for i in range(len(DOCS))], expected, atol=1e-5)


def test_a_long_query_is_read_whole_like_the_cross_encoder_reads_it(tiny_bert_ce, tiny4_bert, capsys, tmp_path):
    """MICE's query budget is the cross-encoder's (the model's maximum), not 64 tokens: a 100-word query keeps
    every token, end to end through `run`; `--query-max-length` still caps it."""
    from tests.conftest import write_beir
    from tests.test_cli import cli

    words = [f"word{i % 50}" if i % 2 else "goldfish" for i in range(100)]
    query = " ".join(words)
    whole = _mice(tiny_bert_ce, 1, 1)
    tokens = len(whole.tokenizer(query)["input_ids"])
    assert tokens > 100 and whole.mice.query_max_length == 512
    assert whole.encode_query(query)[0].shape[1] == tokens
    capped = _mice(tiny_bert_ce, 1, 1, query_max_length=64)
    assert capped.encode_query(query)[0].shape[1] == 64
    docs = ["goldfish tank water", "wifi radio signal"]
    assert not np.allclose(whole.score(query, docs), capped.score(query, docs))

    corpus = [{"_id": f"d{i}", "title": "", "text": text} for i, text in enumerate(docs)]
    folder = write_beir(tmp_path / "long", corpus, [{"_id": "q1", "text": query}], [("q1", "d0", 1)])
    # two top layers: with one, cls (not updated by cross-attention) never sees the document
    run = ["run", "--model", "mice-l1+2", "--checkpoint", tiny4_bert, "--untrained", "--dataset", str(folder)]
    code, _, err = cli(capsys, *run, "--first-stage", "full", "--device", "cpu", "-o", str(tmp_path / "out"))
    assert code == 0, err
    manifest = next((tmp_path / "out").rglob("manifest.json"))
    assert json.loads(manifest.read_text())["ranker_options"]["query_max_length"] == 512


def test_mice_alone_is_l4_plus_3_and_its_refusal_gives_the_ways_forward(tmp_path, capsys, data_dir, minilm_path):
    """`--model mice` needs no shape option: it is the paper's MICE-l4+3; untrained, the one-line refusal names
    the train command, make train-demo and --untrained."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from tests.test_cli import cli

    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=7, num_attention_heads=4, intermediate_size=64, num_labels=1)
    folder = tmp_path / "ce7"
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    ranker = load_ranker("mice", checkpoint=str(folder), device="cpu", untrained=True)
    assert ranker.label == "mice-l4+3" and len(ranker.model.top) == 3
    args = ["run", "--model", "mice", "--checkpoint", str(folder), "--dataset", str(data_dir / "adi")]
    code, _, err = cli(capsys, *args, "--device", "cpu", "--top-k", "5", "-o", str(tmp_path / "out"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    line = " ".join(err.split())
    assert f"micebench train --model mice-l4+3 --init {folder} --train msmarco-passage/train" in line
    assert "make train-demo" in line and "--untrained" in line
    assert not (tmp_path / "out" / "adi" / "mice-ce7" / "run.trec").exists()


@pytest.fixture(scope="module")
def tiny4_bert_spread(tmp_path_factory, minilm_path) -> str:
    """A tiny random 4-layer BERT cross-encoder with larger weights (initializer range 0.3), whose scores differ
    between documents and attention variants by far more than the tolerance (the default 0.02 gives scores
    that agree to 1e-7 whatever the attention does)."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(3)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
        num_labels=1, initializer_range=0.3,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("tiny4-spread")
    BertForSequenceClassification(config).eval().save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return str(folder)


def _reference_scores(source, tokenizer, queries, docs, k, m, attention) -> np.ndarray:
    from tests.mice_reference import mice_score

    state, config = source.state_dict(), source.config.to_dict()
    ids = [tokenizer(text)["input_ids"] for text in (*queries, *docs)]
    return np.array([mice_score(state, config, ids[i], ids[len(queries) + j], k, m, **attention)
                     for i in range(len(queries)) for j in range(len(docs))])  # fmt: skip


@pytest.mark.parametrize(
    ("k", "m", "attention"),
    [(2, 2, {}), (1, 3, {}), (2, 2, {"query_attends_cls": True}), (2, 2, {"cls_attends_document": True})],
)
def test_bert_mice_equals_the_eager_reference_from_the_equations(tiny4_bert_spread, k, m, attention):
    """Ranking (`score`) and training (`forward`) paths of BERT-MICE against tests/mice_reference.py, which
    re-implements the paper's equations with torch.nn.functional from the source cross-encoder's weights."""
    from transformers import AutoModelForSequenceClassification

    source = AutoModelForSequenceClassification.from_pretrained(tiny4_bert_spread).eval()
    ranker = _mice(tiny4_bert_spread, k=k, m=m, **attention)
    tok = ranker.tokenizer
    queries = [QUERY, "what is wifi"]
    expected = _reference_scores(source, tok, queries, DOCS[:3], k, m, attention)
    other = _reference_scores(source, tok, queries, DOCS[:3], k, m, {"query_attends_cls": not attention})
    assert np.abs(expected - other).max() > 1e-3  # the tolerance below tells the attention variants apart
    ranked = np.concatenate([ranker.score(q, DOCS[:3]) for q in queries])
    np.testing.assert_allclose(ranked, expected, atol=1e-5, rtol=0)
    q = tok(queries, return_tensors="pt", padding=True)
    d = tok(DOCS[:3] * 2, return_tensors="pt", padding=True)
    with torch.no_grad():
        trained = ranker.model(q["input_ids"], q["attention_mask"], d["input_ids"], d["attention_mask"],
                               torch.tensor([0, 0, 0, 1, 1, 1]))[:, 0]  # fmt: skip
    np.testing.assert_allclose(trained.numpy(), expected, atol=1e-5, rtol=0)
