"""Numerics and throughput of the model rankers: an fp32 head in bf16 runs, TF32 only on request, a query's
documents tokenised once with one host copy of its scores, CUDA padding to a multiple of 8, store batches sorted
by stored length, and shards written in the background while the next chunk is encoded."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from micebench import load_ranker
from micebench.errors import MicebenchError
from micebench.models import batching
from micebench.models.batching import length_sorted_batches, stored_batches
from micebench.models.hf import (
    TF32_ENV,
    apply_tf32_choice,
    classifier_head,
    matmul_precision,
    pad_multiple,
    pad_rows,
)
from micebench.rankers import colbert, cross_encoder, mice
from tests.conftest import write_beir

QUERY = "how do goldfish grow in a small tank"
_WORDS = (
    "goldfish tank water grow size light filter plant river fish temperature oxygen food bowl pond species "
    "wireless network protocol radio signal router channel band speed local area standard device antenna"
).split()


def varied_docs(count: int, seed: int = 0) -> list[str]:
    """`count` documents of 1 to 80 random words (several batches, padding and ties all possible)."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(_WORDS, size=int(n))) for n in rng.integers(1, 80, size=count)]


def _checkpoint(request: pytest.FixtureRequest, model: str, backbone: str) -> str:
    """The tiny checkpoint a test parameter names (ColBERT reads a bi-encoder)."""
    fixture = {"bert": "tiny_bert_ce", "modernbert": "tiny_modernbert_ce"}[backbone]
    return request.getfixturevalue("tiny_bert_encoder" if model == "colbert" else fixture)


#: the module whose batching each model's `score` uses
RANKER_MODULES = {"ce": cross_encoder, "mask2": cross_encoder, "mice-l1+1": mice, "colbert": colbert}


def _options(model: str) -> dict:
    return {"untrained": True} if model.startswith("mice") else {}


# -- bf16: the head runs in fp32 ----------------------------------------------------------------------------------
def _bf16_scores(model: str, checkpoint: str, docs: list[str]) -> np.ndarray:
    return load_ranker(model, checkpoint=checkpoint, device="cpu", dtype="bf16", **_options(model)).score(QUERY, docs)


@pytest.mark.parametrize(
    ("model", "backbone"), [("ce", "bert"), ("ce", "modernbert"), ("mask2", "modernbert"), ("mice-l2+2", "modernbert")]
)
def test_bf16_scores_come_from_an_fp32_head(request, monkeypatch, model, backbone):
    """With the head in bf16 most of 100 documents tied (then ordered by doc id); in fp32 (nearly) none do."""
    checkpoint = _checkpoint(request, model, backbone)
    docs = varied_docs(100)
    fp32 = load_ranker(model, checkpoint=checkpoint, device="cpu", **_options(model)).score(QUERY, docs)
    ranker = load_ranker(model, checkpoint=checkpoint, device="cpu", dtype="bf16", **_options(model))
    head = ranker.model.head_modules() if model.startswith("mice") else classifier_head(ranker.model)
    assert head and all(p.dtype == torch.float32 for m in head for p in m.parameters())
    assert next(ranker.model.parameters()).dtype == torch.bfloat16
    scores = ranker.score(QUERY, docs)
    with monkeypatch.context() as patch:  # the head left in bf16, as before
        for module in (cross_encoder, mice):
            patch.setattr(module, "keep_fp32", lambda *modules: None)
        bf16_head = _bf16_scores(model, checkpoint, docs)
    # fp32 scores of 100 random texts: the closest two differ by 5 ulps (tiny BERT), 9 (MICE), 150 and more
    # (ModernBERT) on AMD EPYC; another CPU's rounding may tie such a pair, so "none tie" is "at most 3 ties"
    assert len(np.unique(fp32)) >= len(docs) - 3
    assert len(np.unique(scores)) >= 97 > len(np.unique(bf16_head)), (len(np.unique(scores)), len(np.unique(bf16_head)))
    if backbone == "modernbert":  # the tiny BERT's scores barely vary: its errors are the body's, not the head's
        assert np.abs(scores - fp32).mean() < np.abs(bf16_head - fp32).mean()


@pytest.mark.parametrize("model", ["ce", "mice-l1+1", "dense", "colbert"])
def test_describe_names_the_head_dtype_where_it_differs_and_the_matmul_precision(request, model):
    checkpoint = request.getfixturevalue("tiny_bert_ce" if model in ("ce", "mice-l1+1") else "tiny_bert_encoder")
    fp32 = load_ranker(model, checkpoint=checkpoint, device="cpu", **_options(model)).describe()
    bf16 = load_ranker(model, checkpoint=checkpoint, device="cpu", dtype="bf16", **_options(model)).describe()
    assert fp32["matmul_precision"] == bf16["matmul_precision"] == "highest"
    assert "head_dtype" not in fp32 and bf16["dtype"] == "bfloat16"
    if model == "colbert":  # its projection runs in the run's dtype
        assert "head_dtype" not in bf16
    else:  # classifier heads, and dense pooling and normalisation
        assert bf16["head_dtype"] == "float32"


# -- TF32 -----------------------------------------------------------------------------------------------------
@pytest.fixture
def tf32_setting():
    """Restore torch's TF32 flag for CUDA matmuls after the test."""
    before = torch.backends.cuda.matmul.allow_tf32
    yield torch.backends.cuda.matmul
    torch.backends.cuda.matmul.allow_tf32 = before


def test_tf32_only_when_asked_and_only_for_fp32_on_cuda(monkeypatch, tf32_setting):
    cuda = torch.device("cuda")
    tf32_setting.allow_tf32 = False
    monkeypatch.delenv(TF32_ENV, raising=False)
    apply_tf32_choice(cuda, torch.float32)
    assert not tf32_setting.allow_tf32 and matmul_precision(cuda) == "highest"
    monkeypatch.setenv(TF32_ENV, "1")
    apply_tf32_choice("cpu", torch.float32)
    apply_tf32_choice(cuda, torch.bfloat16)
    assert not tf32_setting.allow_tf32
    apply_tf32_choice(cuda, torch.float32)
    assert tf32_setting.allow_tf32 and matmul_precision(cuda) == "high" and matmul_precision("cpu") == "highest"
    monkeypatch.setenv(TF32_ENV, "0")
    apply_tf32_choice(cuda, torch.float32)
    assert not tf32_setting.allow_tf32 and matmul_precision(cuda) == "highest"


def test_a_bad_tf32_value_is_refused_before_the_model_loads(monkeypatch, tmp_path):
    monkeypatch.setenv(TF32_ENV, "fast")
    with pytest.raises(MicebenchError, match=f"^{TF32_ENV} must be 1 or 0 .got 'fast'.$"):
        load_ranker("ce", checkpoint=str(tmp_path / "absent"), device="cpu")


# -- fp32 scores are those of batch-by-batch tokenisation, bit for bit -----------------------------------------------
def _old_scores(ranker, model: str, docs: list[str]) -> np.ndarray:
    """Scores as the rankers computed them before, written here from the tokenizer and the ranker's torch modules
    (not its scoring methods): each batch tokenised and padded alone, scored, copied to the host."""
    from micebench.models.masking import schedule_masks
    from micebench.models.segments import segment_ids

    scores = np.empty(len(docs), dtype=np.float64)
    tok = ranker.tokenizer
    with torch.inference_mode():
        for idx in length_sorted_batches(docs, ranker.batch_size):
            texts = [docs[i] for i in idx]
            if model in ("ce", "mask2"):
                batch = tok([QUERY] * len(idx), texts, truncation="longest_first", max_length=ranker.max_length,
                            padding=True, return_tensors="pt")  # fmt: skip
                if model == "ce":
                    logits = ranker.model(**batch).logits.float()
                else:
                    seg = segment_ids(batch["input_ids"], batch["attention_mask"], tok.sep_token_id)
                    masks = schedule_masks(ranker.schedule, seg, ranker.model.config.num_hidden_layers, torch.float32)
                    with ranker.layer_masks.apply(masks):
                        logits = ranker.model(**batch).logits.float()
                scores[idx] = (logits[:, 0] if logits.shape[-1] == 1 else logits[:, 1] - logits[:, 0]).numpy()
            elif model == "mice-l1+1":
                q = tok([QUERY], truncation=True, max_length=ranker.mice.query_max_length, return_tensors="pt")
                d = tok(texts, truncation=True, max_length=ranker.mice.doc_max_length, padding=True,
                        return_tensors="pt")  # fmt: skip
                logits = ranker.model(q["input_ids"], q["attention_mask"], d["input_ids"], d["attention_mask"],
                                      torch.zeros(len(idx), dtype=torch.long)).float()  # fmt: skip
                scores[idx] = logits[:, 0].numpy()
            else:
                scores[idx] = colbert_by_hand(ranker, QUERY, texts)
    return scores


def colbert_by_hand(ranker, query: str, texts: list[str]) -> np.ndarray:
    """ColBERT by hand: `[CLS] [Q] q [SEP]` padded with [MASK] to the query length, `[CLS] [D] d [SEP]`, projected
    and L2-normalised token embeddings, the sum over query tokens of the best similarity over kept document
    tokens (padding and punctuation left out)."""
    import string

    tok = ranker.tokenizer

    def marked(batch: dict, marker: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        column = torch.full((len(ids), 1), marker, dtype=ids.dtype)
        return torch.cat([ids[:, :1], column, ids[:, 1:]], 1), torch.cat([mask[:, :1], column * 0 + 1, mask[:, 1:]], 1)

    def embed(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = ranker.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        return torch.nn.functional.normalize(ranker.projection(hidden), dim=-1)

    q_ids, q_mask = marked(tok([query], truncation=True, max_length=ranker.query_length - 1, padding="max_length",
                               return_tensors="pt"), ranker.q_marker)  # fmt: skip
    q = embed(q_ids.masked_fill(q_ids == tok.pad_token_id, tok.mask_token_id), q_mask)[0]
    d_ids, d_mask = marked(tok(texts, truncation=True, max_length=ranker.doc_length - 1, padding=True,
                               return_tensors="pt"), ranker.d_marker)  # fmt: skip
    punctuation = [tok.convert_tokens_to_ids(c) for c in string.punctuation]
    keep = d_mask.bool() & ~torch.isin(d_ids, torch.tensor([p for p in punctuation if p != tok.unk_token_id]))
    sims = torch.einsum("qd,bld->bql", q, embed(d_ids, d_mask)).float().masked_fill(~keep[:, None, :], -torch.inf)
    return sims.max(-1).values.sum(-1).double().numpy()


@pytest.mark.parametrize(
    ("model", "backbone"),
    [(m, b) for m in ("ce", "mask2", "mice-l1+1") for b in ("bert", "modernbert")] + [("colbert", "bert")],
)
def test_fp32_scores_equal_batch_by_batch_tokenisation_bit_for_bit(request, model, backbone):
    checkpoint = _checkpoint(request, model, backbone)
    ranker = load_ranker(model, checkpoint=checkpoint, device="cpu", batch_size=3, **_options(model))
    docs = [*varied_docs(14), "", "A very long passage about aquariums and fish food. " * 60]
    np.testing.assert_array_equal(ranker.score(QUERY, docs), _old_scores(ranker, model, docs))


class CountingTokenizer:
    """A tokenizer that counts its calls."""

    def __init__(self, tokenizer):
        self.tokenizer, self.calls = tokenizer, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.tokenizer(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


@pytest.mark.parametrize(("model", "tokenizer_calls"), [("ce", 1), ("mask2", 1), ("mice-l1+1", 2), ("colbert", 2)])
def test_a_query_is_tokenised_once_and_its_scores_copied_to_the_host_once(request, monkeypatch, model, tokenizer_calls):
    """Five batches: one tokenizer call for the documents (MICE and ColBERT: one more for the query) and one copy."""
    ranker = load_ranker(model, checkpoint=_checkpoint(request, model, "bert"), device="cpu", batch_size=2)
    ranker.tokenizer = CountingTokenizer(ranker.tokenizer)
    copies: list[tuple] = []
    cpu = torch.Tensor.cpu
    monkeypatch.setattr(
        torch.Tensor, "cpu", lambda self, *a, **k: copies.append(tuple(self.shape)) or cpu(self, *a, **k)
    )
    scores = ranker.score(QUERY, varied_docs(9))
    assert scores.shape == (9,) and scores.dtype == np.float64
    assert ranker.tokenizer.calls == tokenizer_calls and copies == [(9,)]


# -- padding to a multiple of 8 (CUDA) ------------------------------------------------------------------------------
def test_padding_equals_the_tokenizers_and_rounds_up_on_cuda_only(tiny_bert_ce):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_ce)
    docs = varied_docs(6)
    rows = [4, 0, 5]
    assert pad_multiple(torch.device("cuda")) == 8 and pad_multiple("cuda:1") == 8 and pad_multiple("cpu") is None
    for side in ("right", "left"):
        tokenizer.padding_side = side
        encoded = tokenizer([QUERY] * 6, docs, truncation="longest_first", max_length=64)
        texts = [docs[i] for i in rows]
        expected = tokenizer(
            [QUERY] * 3, texts, truncation="longest_first", max_length=64, padding=True, return_tensors="pt"
        )
        padded = pad_rows(tokenizer, encoded, rows)
        assert padded.keys() == expected.keys()
        assert all(torch.equal(padded[k], expected[k]) for k in expected), side
        rounded = pad_rows(tokenizer, encoded, rows, 8, 64)
        width = expected["input_ids"].shape[1]
        assert rounded["input_ids"].shape[1] == min(-(-width // 8) * 8, 64)
        real = (slice(None), slice(-width, None)) if side == "left" else (slice(None), slice(0, width))
        assert all(torch.equal(rounded[k][real], expected[k]) for k in expected)
        assert int(rounded["attention_mask"].sum()) == int(expected["attention_mask"].sum())
    assert pad_rows(tokenizer, {"input_ids": [[1] * 61]}, [0], 8, 64)["input_ids"].shape == (1, 64)
    assert pad_rows(tokenizer, {"input_ids": [[1] * 61]}, [0], 8, 62)["input_ids"].shape == (1, 62)


@pytest.mark.parametrize("model", ["ce", "mask2", "mice-l1+1", "colbert"])
def test_batches_padded_to_a_multiple_of_8_score_the_same(request, monkeypatch, model):
    """What CUDA runs do, here on the CPU: every batch 8-aligned, the extra padding masked out."""
    ranker = load_ranker(model, checkpoint=_checkpoint(request, model, "bert"), device="cpu", batch_size=3)
    docs = varied_docs(10)
    plain = ranker.score(QUERY, docs)
    module = RANKER_MODULES[model]
    widths: list[int] = []
    original = module.pad_rows

    def recording(*args, **kwargs):
        batch = original(*args, **kwargs)
        widths.append(batch["input_ids"].shape[1])
        return batch

    monkeypatch.setattr(module, "pad_multiple", lambda device: 8)
    monkeypatch.setattr(module, "pad_rows", recording)
    aligned = ranker.score(QUERY, docs)
    assert len(widths) == 4 and all(w % 8 == 0 for w in widths), widths
    np.testing.assert_allclose(aligned, plain, atol=1e-5, rtol=0)


# -- store batches sorted by stored length (GPU) ------------------------------------------------------------------
def test_stored_batches_take_the_longest_first_or_keep_the_order():
    lengths = np.array([3, 9, 1, 9, 5, 2, 7])
    sorted_batches = [b.tolist() for b in stored_batches(lengths, 3, True)]
    assert sorted_batches == [[1, 3, 6], [4, 0, 5], [2]]
    assert [b.tolist() for b in stored_batches(lengths, 3, False)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(stored_batches(np.array([], dtype=np.int32), 3, True)) == []


@pytest.fixture(scope="module")
def stores(tmp_path_factory, tiny_bert_ce, tiny_bert_encoder):
    """A collection of 40 varied documents and its MICE-l1+1 (states, kv) and ColBERT stores, fp32."""
    from micebench.data import load_dataset
    from micebench.store.precompute import precompute

    tmp = tmp_path_factory.mktemp("sorted-stores")
    corpus = [{"_id": f"d{i}", "title": "", "text": t} for i, t in enumerate(varied_docs(40, seed=3))]
    dataset = load_dataset(str(write_beir(tmp / "c", corpus, [{"_id": "q", "text": QUERY}], [("q", "d0", 1)])))
    built = {}
    for model, checkpoint, modes in (
        ("mice-l1+1", tiny_bert_ce, ("states", "kv")),
        ("colbert", tiny_bert_encoder, ("embeddings",)),
    ):
        ranker = load_ranker(model, checkpoint=checkpoint, device="cpu", batch_size=8, **_options(model))
        for mode in modes:
            built[(model, mode)] = (checkpoint, precompute(ranker, dataset, tmp / f"{model}-{mode}", mode, "fp32"))
    return built


@pytest.mark.parametrize(("model", "mode"), [("mice-l1+1", "states"), ("mice-l1+1", "kv"), ("colbert", "embeddings")])
def test_length_sorted_store_batches_map_back_to_the_input_order(stores, monkeypatch, model, mode):
    """What GPU runs do, here on the CPU: batches of similar stored lengths, scores in the order asked."""
    checkpoint, folder = stores[(model, mode)]
    ranker = load_ranker(
        model, checkpoint=checkpoint, device="cpu", batch_size=4, precomputed=str(folder), **_options(model)
    )
    docnos = [f"d{i}" for i in np.random.default_rng(5).permutation(40)]
    cells: list[int] = []
    gather = ranker.store.gather

    def recording(rows):
        tensors, mask = gather(rows)
        cells.append(mask.numel())
        return tensors, mask

    monkeypatch.setattr(ranker.store, "gather", recording)
    in_order = ranker.score_stored(QUERY, docnos)
    unsorted_cells, cells[:] = sum(cells), []
    monkeypatch.setattr(  # StoreBacked.score_stored batches as on a GPU
        batching, "stored_batches", lambda lengths, size, by_length: stored_batches(lengths, size, True)
    )
    by_length = ranker.score_stored(QUERY, docnos)
    assert sum(cells) < unsorted_cells  # less padding
    np.testing.assert_allclose(by_length, in_order, atol=1e-5, rtol=0)
    single = np.concatenate([ranker.score_stored(QUERY, [d]) for d in docnos[:6]])
    np.testing.assert_allclose(by_length[:6], single, atol=1e-5, rtol=0)


# -- precompute: shards written in the background ------------------------------------------------------------------
def test_a_shard_is_written_while_the_next_chunk_is_encoded(tmp_path, monkeypatch):
    from micebench.store.document_store import StoreWriter
    from tests.test_store import WordRanker, build

    writing, next_encoded = threading.Event(), threading.Event()
    seen: dict[str, object] = {}

    class Ranker(WordRanker):
        def store_encode(self, texts, mode):
            if writing.is_set():
                next_encoded.set()
            return super().store_encode(texts, mode)

    original = StoreWriter.write_chunk

    def write_chunk(self, number, *args):
        if number == 0:
            seen["thread"] = threading.current_thread()
            writing.set()
            seen["overlapped"] = next_encoded.wait(timeout=10)
        return original(self, number, *args)

    monkeypatch.setattr(StoreWriter, "write_chunk", write_chunk)
    background, _, _ = build(tmp_path, ranker=Ranker(), folder=tmp_path / "background", chunk_docs=4, mode="kv")
    assert seen["overlapped"] and seen["thread"] is not threading.main_thread()

    import micebench.store.precompute as precompute

    monkeypatch.setattr(StoreWriter, "write_chunk", original)
    monkeypatch.setattr(precompute.BackgroundWriter, "submit", lambda self, *chunk: self._write(*chunk))
    inline, _, _ = build(tmp_path, folder=tmp_path / "inline", chunk_docs=4, mode="kv")
    names = sorted(p.name for p in inline.iterdir())
    assert names == sorted(p.name for p in background.iterdir())
    for name in names:
        assert (inline / name).read_bytes() == (background / name).read_bytes(), name


def test_an_encoding_error_lets_the_shard_in_progress_finish(tmp_path, monkeypatch):
    """The chunk being written when encoding fails is finished and recorded, so --resume keeps it."""
    from micebench.store.document_store import DocumentStore, StoreWriter
    from tests.test_store import WordRanker, build

    release = threading.Event()

    class Failing(WordRanker):
        def store_encode(self, texts, mode):
            if len(self.encoded) >= 12 + 4:  # the size sample, then chunk 0
                release.set()
                raise MicebenchError("encoder failed")
            return super().store_encode(texts, mode)

    original = StoreWriter.write_chunk

    def slow_write(self, number, *args):
        release.wait(timeout=10)  # still writing chunk 0 when chunk 1 fails
        return original(self, number, *args)

    monkeypatch.setattr(StoreWriter, "write_chunk", slow_write)
    with pytest.raises(MicebenchError, match=r"^encoder failed; 1 finished shards .*--resume"):
        build(tmp_path, ranker=Failing(batch_size=4), chunk_docs=4)
    monkeypatch.setattr(StoreWriter, "write_chunk", original)
    folder, ranker, _ = build(tmp_path, chunk_docs=4, resume=True)
    assert len(DocumentStore(folder, "fake", "fp-1")) == 12 and len(ranker.encoded) == 12 + 8
