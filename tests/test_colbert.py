"""ColBERT: MaxSim against a direct computation, checkpoint formats, precomputed embeddings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from micebench import load_ranker
from tests.conftest import write_beir, write_pylate_dense
from tests.test_precision_and_throughput import colbert_by_hand

QUERY = "how do goldfish grow"
DOCS = ["Goldfish grow, according to the size of their tank!", "Wi-Fi is a family of wireless protocols.", "x"]


def _reference(
    folder,
    weight,
    query,
    docs,
    q_marker,
    d_marker,
    qlen=32,
    dlen=180,
    *,
    expansion=True,
    attend=False,
    skip=None,
    bias=None,
    act=None,
):
    """MaxSim written out directly (ColBERTv2 and PyLate): HF encoder; queries padded with [MASK] to `qlen` when
    expanding (attended to only with attend_to_expansion_tokens; without expansion no padding); projection
    activation(x W^T + b); L2 norm; documents without the skiplist tokens (each word converted as one token;
    default: punctuation); max over document tokens, summed over query tokens."""
    import string

    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()

    def embed(text, marker, length, query_side):
        ids = tok(text, truncation=True, max_length=length - 1)["input_ids"]
        ids = ids[:1] + [marker] + ids[1:]
        attn = [1] * len(ids)
        if query_side and expansion:
            pad = length - len(ids)
            ids, attn = ids + [tok.mask_token_id] * pad, attn + [1 if attend else 0] * pad
        with torch.no_grad():
            h = model(input_ids=torch.tensor([ids]), attention_mask=torch.tensor([attn])).last_hidden_state[0]
            projected = h @ weight.T + (bias if bias is not None else 0)
            projected = act(projected) if act is not None else projected
        return torch.nn.functional.normalize(projected, dim=-1), ids

    q, _ = embed(query, q_marker, qlen, True)
    skipped = {tok.convert_tokens_to_ids(w) for w in (skip if skip is not None else string.punctuation)}
    out = []
    for doc in docs:
        d, ids = embed(doc, d_marker, dlen, False)
        keep = torch.tensor([i not in skipped for i in ids])
        out.append(torch.einsum("qd,ld->ql", q, d[keep]).max(-1).values.sum().item())
    return np.array(out)


def _pylate_reference(folder, weight, q_marker, d_marker, **settings):
    """The reference with the PyLate test checkpoint's lengths (24 query, 100 document tokens)."""
    return _reference(folder, weight, QUERY, DOCS, q_marker, d_marker, 24, 100, **settings)


def test_fresh_projection_maxsim_matches_reference(tiny_bert_encoder):
    ranker = load_ranker("colbert", checkpoint=tiny_bert_encoder, device="cpu", batch_size=2)
    assert ranker.format == "fresh projection" and ranker.projection.out_features == 128
    tok = ranker.tokenizer
    expected = _reference(
        tiny_bert_encoder,
        ranker.projection.weight.detach(),
        QUERY,
        DOCS,
        tok.convert_tokens_to_ids("[unused0]"),
        tok.convert_tokens_to_ids("[unused1]"),
    )
    np.testing.assert_allclose(ranker.score(QUERY, DOCS), expected, atol=1e-5, rtol=0)


def test_colbertv2_checkpoint_layout(tmp_path, tiny_bert_encoder):
    """BERT weights plus `linear.weight` in one file, as colbert-ir/colbertv2.0 ships them."""
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "colbertv2"
    shutil.copytree(tiny_bert_encoder, folder)
    state = load_file(str(folder / "model.safetensors"))
    weight = torch.randn(24, 32, generator=torch.Generator().manual_seed(5))
    save_file({**state, "linear.weight": weight}, str(folder / "model.safetensors"))
    (folder / "artifact.metadata").write_text(json.dumps({"query_maxlen": 16, "doc_maxlen": 64}))
    ranker = load_ranker("colbert", checkpoint=str(folder), device="cpu")
    assert ranker.format == "colbertv2" and (ranker.query_length, ranker.doc_length) == (16, 64)
    tok = ranker.tokenizer
    expected = _reference(
        str(folder),
        weight,
        QUERY,
        DOCS,
        tok.convert_tokens_to_ids("[unused0]"),
        tok.convert_tokens_to_ids("[unused1]"),
        16,
        64,
    )
    np.testing.assert_allclose(ranker.score(QUERY, DOCS), expected, atol=1e-5, rtol=0)


def test_pylate_checkpoint_layout(tmp_path, tiny_bert_encoder):
    from transformers import AutoTokenizer

    folder, weight = _pylate_folder(tmp_path, tiny_bert_encoder)
    tok = AutoTokenizer.from_pretrained(folder)
    ranker = load_ranker("colbert", checkpoint=str(folder), device="cpu")
    assert ranker.format == "pylate" and ranker.q_marker == len(tok) - 2 and ranker.d_marker == len(tok) - 1
    expected = _reference(str(folder), weight, QUERY, DOCS, ranker.q_marker, ranker.d_marker, 24, 100)
    np.testing.assert_allclose(ranker.score(QUERY, DOCS), expected, atol=1e-5, rtol=0)


def test_precomputed_embeddings_equal_on_the_fly(tmp_path, tiny_bert_encoder):
    import pandas as pd

    from micebench.data import load_dataset
    from micebench.errors import MicebenchError
    from micebench.store.precompute import precompute

    corpus = [{"_id": f"d{i}", "title": "", "text": t} for i, t in enumerate(DOCS)]
    folder = write_beir(tmp_path / "c", corpus, [{"_id": "q", "text": QUERY}], [("q", "d0", 1)])
    ranker = load_ranker("colbert", checkpoint=tiny_bert_encoder, device="cpu")
    store = precompute(ranker, load_dataset(str(folder)), tmp_path / "store", "embeddings", "fp32")
    # the token ids a --token-means codec uses: the tokenizer's, the [D] marker after [CLS], punctuation left out
    tensors, keep = ranker.store_encode(DOCS[:2], "embeddings")
    for i, text in enumerate(DOCS[:2]):
        ids = ranker.tokenizer(text)["input_ids"]
        want = [t for t in [ids[0], ranker.d_marker, *ids[1:]] if t not in ranker.skiplist.tolist()]
        assert tensors["token_ids"][i][keep[i].bool()].tolist() == want
    stored = load_ranker("colbert", checkpoint=tiny_bert_encoder, device="cpu", precomputed=str(store))
    frame = pd.DataFrame({"qid": "q", "query": QUERY, "docno": ["d2", "d0", "d1"], "text": "", "score": 0.0})
    got = stored.rerank(frame).set_index("docno")["score"]
    np.testing.assert_allclose(got[["d0", "d1", "d2"]].to_numpy(), ranker.score(QUERY, DOCS), atol=1e-5, rtol=0)
    with pytest.raises(MicebenchError, match="has mode .embeddings.; mice uses states or kv"):
        load_ranker("mice-l1+1", checkpoint=tiny_bert_encoder, device="cpu", precomputed=str(store))


def test_training_scores_equal_ranking_scores(tiny_bert_encoder):
    """`score_pairs` (queries embedded in one batch, the loss's path) and `score` both give ColBERT's scores as
    written by hand from the tokenizer, encoder and projection (tests/test_precision_and_throughput.py)."""
    ranker = load_ranker("colbert", checkpoint=tiny_bert_encoder, device="cpu", batch_size=2)
    docs = ["goldfish grow in a tank", "wireless radio networks", "a tank of water"]
    queries = ["goldfish tank", "wifi radio", "goldfish tank"]
    with torch.inference_mode():
        pairs = ranker.score_pairs(queries, docs).double().numpy()
        expected = np.array([colbert_by_hand(ranker, q, [d])[0] for q, d in zip(queries, docs, strict=True)])
    ranked = [ranker.score(q, [d])[0] for q, d in zip(queries, docs, strict=True)]
    assert np.ptp(expected) > 1e-2  # the pairs' scores differ by far more than the tolerance
    np.testing.assert_allclose(pairs, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ranked, expected, rtol=1e-5, atol=1e-5)


def _pylate_folder(tmp_path, encoder, settings=None, dense_config=None, bias=None):
    """A PyLate-layout copy of the tiny encoder (its [Q]/[D] tokens added) whose config sets `settings`."""
    import shutil

    from transformers import AutoModel, AutoTokenizer

    folder = tmp_path / "pylate"
    shutil.copytree(encoder, folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.add_tokens(["[Q] ", "[D] "])
    tok.save_pretrained(folder)
    model = AutoModel.from_pretrained(folder)
    model.resize_token_embeddings(len(tok))
    model.save_pretrained(folder)
    weight = torch.randn(16, 32, generator=torch.Generator().manual_seed(6))
    tensors = {"linear.weight": weight} | ({"linear.bias": bias} if bias is not None else {})
    write_pylate_dense(folder, tensors, dense_config)
    base = {"query_prefix": "[Q] ", "document_prefix": "[D] ", "query_length": 24, "document_length": 100}
    (folder / "config_sentence_transformers.json").write_text(json.dumps({**base, **(settings or {})}))
    return folder, weight


@pytest.mark.parametrize(
    ("settings", "expected_kw"),
    [
        ({"attend_to_expansion_tokens": True}, {"attend": True}),
        ({"do_query_expansion": False}, {"expansion": False}),
        ({"do_query_expansion": False, "attend_to_expansion_tokens": True}, {"expansion": False}),
        ({"skiplist_words": ["grow", "!", "of"]}, {"skip": ["grow", "!", "of"]}),
    ],
)
def test_pylate_settings_are_honoured(tmp_path, tiny_bert_encoder, settings, expected_kw):
    folder, weight = _pylate_folder(tmp_path, tiny_bert_encoder, settings)
    ranker = load_ranker("colbert", checkpoint=str(folder), device="cpu")
    expected = _pylate_reference(str(folder), weight, ranker.q_marker, ranker.d_marker, **expected_kw)
    np.testing.assert_allclose(ranker.score(QUERY, DOCS), expected, atol=1e-5, rtol=0)
    default = _pylate_reference(str(folder), weight, ranker.q_marker, ranker.d_marker)
    assert np.abs(expected - default).max() > 1e-3  # the setting really changes the scores


def test_pylate_dense_bias_and_activation_are_honoured(tmp_path, tiny_bert_encoder):
    bias = torch.randn(16, generator=torch.Generator().manual_seed(7))
    dense = {
        "in_features": 32,
        "out_features": 16,
        "bias": True,
        "activation_function": "torch.nn.modules.activation.Tanh",
    }
    folder, weight = _pylate_folder(tmp_path, tiny_bert_encoder, dense_config=dense, bias=bias)
    ranker = load_ranker("colbert", checkpoint=str(folder), device="cpu")
    expected = _pylate_reference(str(folder), weight, ranker.q_marker, ranker.d_marker, bias=bias, act=torch.tanh)
    np.testing.assert_allclose(ranker.score(QUERY, DOCS), expected, atol=1e-5, rtol=0)


def test_pylate_query_expansion_off_scores_a_batch_of_queries_as_one_at_a_time(tmp_path, tiny_bert_encoder):
    """Without expansion, the padding of a batch of queries (training) adds nothing to MaxSim."""
    folder, _ = _pylate_folder(tmp_path, tiny_bert_encoder, {"do_query_expansion": False})
    ranker = load_ranker("colbert", checkpoint=str(folder), device="cpu")
    queries = [QUERY, "wifi"]
    with torch.no_grad():
        batched = ranker.score_pairs(queries, [DOCS[0], DOCS[1]]).numpy()
    alone = [ranker.score(q, [d])[0] for q, d in zip(queries, DOCS[:2], strict=True)]
    np.testing.assert_allclose(batched, alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("dense", "message"),
    [
        ({"activation_function": "torch.nn.modules.activation.Softmax"}, "unsupported Dense activation_function"),
        ({"use_residual": True}, "sets Dense use_residual, which colbert does not support"),
    ],
)
def test_pylate_dense_settings_colbert_cannot_honour_are_refused(
    capsys, tmp_path, tiny_bert_encoder, data_dir, dense, message
):
    from tests.test_cli import cli

    folder, _ = _pylate_folder(tmp_path, tiny_bert_encoder, dense_config=dense)
    args = ["run", "--model", "colbert", "--checkpoint", str(folder), "--dataset", str(data_dir / "adi")]
    code, _, err = cli(capsys, *args, "--device", "cpu", "-o", str(tmp_path / "o"))
    assert code == 2 and message in " ".join(err.split()) and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_a_second_pylate_dense_module_is_refused(capsys, tmp_path, tiny_bert_encoder, data_dir):
    from tests.test_cli import cli

    folder, _ = _pylate_folder(tmp_path, tiny_bert_encoder)
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 2, "name": "2", "path": "1_Dense", "type": "pylate.models.Dense.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    args = ["run", "--model", "colbert", "--checkpoint", str(folder), "--dataset", str(data_dir / "adi")]
    code, _, err = cli(capsys, *args, "--device", "cpu", "-o", str(tmp_path / "o"))
    assert code == 2 and "has 2 Dense modules; colbert reads only one" in " ".join(err.split()), err
