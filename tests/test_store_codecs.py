"""Compressed stores (`--dtype pq|residual`): codecs against faiss's own decoding and an exact reconstruction
bound, the manifest's record, codebooks reused by --extend and --resume, and bad options refused in one line.

Codebooks are trained by faiss on a few hundred small vectors (dimension 8-16), so each test takes about a second.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from micebench.errors import MicebenchError
from micebench.store.codecs import (
    CODEC_FILE,
    MEAN_SHRINKAGE,
    TOKEN_IDS,
    TOKEN_ROWS,
    PQCodec,
    ResidualCodec,
    codec_spec,
    token_means,
)
from micebench.store.document_store import DocumentStore
from micebench.store.shards import ShardFile
from tests.conftest import write_beir
from tests.test_store import DIM, WordRanker, interrupt_at_chunk

faiss = pytest.importorskip("faiss")


def random_vectors(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Gaussian vectors with unequal scales per dimension (as hidden states have)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)) * np.linspace(0.5, 3.0, d)).astype(np.float32)


def fp16_table_bound(centroids: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """How far a decoding through an fp16 table may lie from the exact one, per vector: each of the M rotated
    sub-vectors (norm at most its centroid's norm: the rotation is orthonormal) rounded at 2^-11 relative, and
    their sum accumulated in fp16 at worst, at most (M + 1) roundings of the sum of their sizes."""
    M = centroids.shape[0]
    sizes = np.linalg.norm(centroids[np.arange(M), codes.astype(np.int64)], axis=-1).sum(-1)  # (n,)
    return (M + 1) * 2.0**-11 * sizes


def faiss_decode(rotation: np.ndarray, centroids: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """faiss's own decoding of pq codes: an OPQ transform and a PQ index holding the same codebooks."""
    M, _, dsub = centroids.shape
    d = M * dsub
    opq = faiss.OPQMatrix(d, M)
    faiss.copy_array_to_vector(np.ascontiguousarray(rotation, dtype=np.float32).reshape(-1), opq.A)
    opq.is_trained = True
    opq.set_is_orthonormal()
    assert opq.is_orthonormal
    index = faiss.IndexPQ(d, M, 8)
    faiss.copy_array_to_vector(np.ascontiguousarray(centroids, dtype=np.float32).reshape(-1), index.pq.centroids)
    index.is_trained = True
    return faiss.IndexPreTransform(opq, index).sa_decode(np.ascontiguousarray(codes))


def test_pq_decoding_equals_faiss_decoding_of_the_same_codes():
    x = random_vectors(600, 16)
    codec = PQCodec.train(x, M=4, seed=0, normalize=False)
    rotation = codec.rotation.numpy()
    assert np.allclose(rotation @ rotation.T, np.eye(16), atol=1e-4)  # OPQ's rotation is orthonormal
    codes = codec.encode("states", torch.from_numpy(x))["states.codes"]
    assert codes.dtype == torch.uint8 and codes.shape == (600, 4)
    # faiss's own index over the same codebooks decodes the same codes (reverse rotation included)
    reference = faiss_decode(rotation, codec.centroids.numpy(), codes.numpy())
    decoded = codec.decode("states", {"states.codes": codes.view(20, 30, 4)}).reshape(600, 16).numpy()
    bound = fp16_table_bound(codec.centroids.numpy(), codes.numpy())
    assert np.all(np.abs(decoded - reference).max(-1) <= bound)
    # and the quantiser is a useful one: far less error than the vectors' own spread
    assert np.mean((decoded - x) ** 2) < 0.3 * np.mean((x - x.mean(0)) ** 2)


@pytest.mark.parametrize("bits", [1, 2])
def test_residual_codec_reconstructs_within_its_buckets(bits):
    x = random_vectors(800, 16, seed=bits)
    codec = ResidualCodec.train(x, K=8, bits=bits, seed=0, normalize=False)
    parts = codec.encode("k0", torch.from_numpy(x))
    ids, packed = parts["k0.centroid"].long().numpy(), parts["k0.residual"]
    assert packed.dtype == torch.uint8 and packed.shape == (800, 16 * bits // 8)
    centroids, cutoffs, weights = (t.numpy() for t in (codec.centroids, codec.cutoffs, codec.weights))
    # nearest centroids (up to float rounding of the distances)
    distances = ((x[:, None, :] - centroids[None]) ** 2).sum(-1)
    assert np.all(distances[np.arange(800), ids] <= distances.min(1) + 1e-4 * distances.max())
    # each dimension's bucket: where its residual falls between the cutoffs (numpy's own search)
    residuals = x - centroids[ids]
    buckets = np.stack([np.searchsorted(cutoffs[:, j], residuals[:, j], side="right") for j in range(16)], 1)
    expected = centroids[ids] + weights[buckets, np.arange(16)]
    decoded = codec.decode("k0", parts).numpy()
    assert np.allclose(decoded, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    # the exact bound: inside an inner bucket, the error is at most the bucket's width
    edges = np.concatenate([np.full((1, 16), -np.inf), cutoffs, np.full((1, 16), np.inf)])
    low, high = edges[buckets, np.arange(16)], edges[buckets + 1, np.arange(16)]
    assert np.all((residuals >= low - 1e-6) & (residuals <= high + 1e-6))
    kept = decoded - centroids[ids]  # the reconstructed residual stays in the residual's bucket
    assert np.all((kept >= low - 1e-5) & (kept <= high + 1e-5))
    inner = np.isfinite(low) & np.isfinite(high)
    error = np.abs(decoded - x)
    assert inner.any() == (bits == 2) and np.all(error[inner] <= (high - low)[inner] + 1e-5)
    # the cutoffs and weights are the training residuals' quantiles (ColBERTv2's buckets), computed here by numpy
    # from this test's own nearest-centroid assignment
    levels = 2**bits
    assert np.allclose(cutoffs, np.quantile(residuals, np.arange(1, levels) / levels, axis=0), atol=1e-5)
    assert np.allclose(weights, np.quantile(residuals, (np.arange(levels) + 0.5) / levels, axis=0), atol=1e-5)
    # weights are the residuals' midpoint quantiles: each lies inside its own bucket
    assert np.all((weights[1:] >= cutoffs - 1e-6) & (weights[:-1] <= cutoffs + 1e-6))


def test_unit_vectors_are_normalised_again_after_decoding():
    x = random_vectors(400, 16)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    codec = ResidualCodec.train(x, K=4, bits=1, seed=0, normalize=True)
    decoded = codec.decode("e", codec.encode("e", torch.from_numpy(x)))
    assert torch.allclose(decoded.norm(dim=-1), torch.ones(400), atol=1e-5)


def test_token_means_are_shrunk_per_token_means_rounded_to_fp16():
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0], [5.0, 1.0], [0.5, 0.25]])
    rows = torch.tensor([1, 1, 2, 1])  # token row 1 three times, row 2 once, row 3 never
    means = token_means(x, rows, 4).numpy()
    overall = np.array([9.5, 9.25]) / 4  # computed by hand
    s = MEAN_SHRINKAGE
    want = np.stack(
        [
            overall,
            (np.array([4.5, 8.25]) + s * overall) / (3 + s),
            (np.array([5.0, 1.0]) + s * overall) / (1 + s),
            overall,  # a row without vectors is the mean vector
        ]
    )
    assert np.array_equal(means, want.astype(np.float16).astype(np.float32))


@pytest.mark.parametrize("name", ["pq", "residual"])
def test_token_means_are_added_back_exactly_and_shrink_the_error(name):
    words = np.random.default_rng(1).standard_normal((300, 16)).astype(np.float32) * 4
    token_ids = np.random.default_rng(2).integers(0, 300, 900)
    x = words[token_ids] + random_vectors(900, 16, seed=3) * 0.2  # a token's vector is mostly its word's
    rows = torch.from_numpy(token_ids + 1)
    means = token_means(torch.from_numpy(x), rows, 301)
    residual = np.ascontiguousarray(x - means.numpy()[rows.numpy()])
    if name == "pq":
        side = PQCodec.train(residual, M=4, seed=0, normalize=False, means=means)
        plain = PQCodec.train(x, M=4, seed=0, normalize=False)
        alone = PQCodec(side.rotation, side.centroids, False)
    else:
        side = ResidualCodec.train(residual, K=8, bits=2, seed=0, normalize=False, means=means)
        plain = ResidualCodec.train(x, K=8, bits=2, seed=0, normalize=False)
        alone = ResidualCodec(side.centroids, side.cutoffs, side.weights, False)
    parts = side.encode("states", torch.from_numpy(x), rows)
    assert all(torch.equal(t, alone.encode("states", torch.from_numpy(residual))[k]) for k, t in parts.items())
    decoded = side.decode("states", {**parts, TOKEN_ROWS: rows.to(torch.int16)}).numpy()
    mean_rows = means.numpy()[rows.numpy()]
    if name == "pq":  # faiss's decoding of the codes plus the token's mean, within the fp16 table's rounding
        codes = parts["states.codes"].numpy()
        reference = faiss_decode(side.rotation.numpy(), side.centroids.numpy(), codes) + mean_rows
        bound = fp16_table_bound(side.centroids.numpy(), codes) + 2.0**-10 * np.linalg.norm(mean_rows, axis=-1)
        assert np.all(np.abs(decoded - reference).max(-1) <= bound)
    else:  # the residual codec's own decoding (checked against numpy above) plus the mean, exactly
        assert np.allclose(decoded, alone.decode("states", parts).numpy() + mean_rows, rtol=0, atol=1e-5)
    # the side information pays: a third of the error (0.1-0.2 measured) of the same codec on the vectors alone
    error = np.mean((decoded - x) ** 2)
    assert error < 0.3 * np.mean((plain.decode("states", plain.encode("states", torch.from_numpy(x))).numpy() - x) ** 2)


# -- stores -----------------------------------------------------------------------------------------------------
class NoisyRanker(WordRanker):
    """WordRanker whose token vectors differ per document (word vector + a small per-(document, position) noise),
    so that a codec has hundreds of distinct vectors to train on."""

    def store_encode(self, texts, mode):
        tensors, mask = super().store_encode(texts, mode)
        for i, text in enumerate(texts):
            generator = torch.Generator().manual_seed(zlib.crc32(text.encode()))
            noise = 0.3 * torch.randn(tensors[next(iter(tensors))].shape[1], DIM, generator=generator)
            for field in tensors:
                tensors[field][i] += noise * mask[i, :, None]
        return tensors, mask


class TokenRanker(NoisyRanker):
    """NoisyRanker that also gives each stored token's id (word w<k> is token 100 + k), as MICE and ColBERT do."""

    def store_encode(self, texts, mode):
        tensors, mask = super().store_encode(texts, mode)
        ids = torch.zeros(mask.shape, dtype=torch.long)
        for i, text in enumerate(texts):
            words = [100 + int(w[1:]) for w in text.split()]
            ids[i, : len(words)] = torch.tensor(words)
        return {**tensors, TOKEN_IDS: ids}, mask


TEXTS = {f"d{i}": " ".join(f"w{(i * 7 + j * 3) % 29}" for j in range(4 + i % 5)) for i in range(80)}


def collection(tmp_path: Path) -> Path:
    """80 documents (about 480 tokens), 2 judged queries, a shipped bm25 run of 30 documents per query."""
    folder = tmp_path / "c"
    if folder.exists():
        return folder
    corpus = [{"_id": d, "title": "", "text": t} for d, t in TEXTS.items()]
    queries = [{"_id": "q1", "text": "first"}, {"_id": "q2", "text": "second"}]
    write_beir(folder, corpus, queries, [("q1", "d1", 1), ("q2", "d2", 1)])
    (folder / "candidates").mkdir()
    lines = [f"q{q} Q0 d{(q * 31 + r) % 80} {r + 1} {100 - r} bm25" for q in (1, 2) for r in range(30)]
    (folder / "candidates" / "bm25.trec").write_text("\n".join(lines) + "\n")
    return folder


def build(tmp_path: Path, dtype: str, ranker: WordRanker | None = None, **options):
    from micebench.data import load_dataset
    from micebench.store.precompute import precompute

    ranker = ranker or NoisyRanker()
    codec = codec_spec(
        dtype,
        *(options.pop(k, None) for k in ("pq_bytes", "residual_bits", "centroids")),
        token_means=options.pop("token_means", False),
    )
    folder = options.pop("folder", tmp_path / "store")
    dataset = load_dataset(str(collection(tmp_path)))
    path = precompute(ranker, dataset, folder, options.pop("mode", "states"), dtype, codec=codec, **options)
    return path, ranker


def test_pq_store_records_its_codec_and_decodes_in_the_gather(tmp_path):
    folder, _ = build(tmp_path, "pq", pq_bytes=4, mode="kv", chunk_docs=16)
    reference, _ = build(tmp_path, "fp32", folder=tmp_path / "fp32", mode="kv", chunk_docs=16)
    manifest = json.loads((folder / "manifest.json").read_text())
    codec = manifest["codec"]
    assert manifest["dtype"] == "pq" and manifest["format"] == 3 and (folder / CODEC_FILE).is_file()
    assert codec["options"] == {"name": "pq", "pq_bytes": 4} and codec["bytes_per_token"] == 2 * 4
    assert codec["fields"]["k0"] == {"dim": DIM, "sub_quantizers": 4, "centroids": 256, "normalize": False}
    training = codec["training"]
    assert training["documents"] == 80 and training["vectors"] == manifest["num_tokens"] and training["seed"] == 0
    assert (
        training["seconds"] > 0
        and codec["encode_seconds"] > 0
        and codec["bytes"] == (folder / CODEC_FILE).stat().st_size
    )
    shard = ShardFile(folder / "shard-00000.safetensors", ["k0.codes", "v0.codes"])
    assert shard.dtypes["k0.codes"] == torch.uint8 and shard.shapes["k0.codes"][1:] == (4,)
    store = DocumentStore(folder, "fake", "fp-1", "kv")
    plain = DocumentStore(reference, "fake", "fp-1", "kv")
    rows = store.positions(["d5", "d1", "d40"])
    got, mask = store.gather(rows)
    want, want_mask = plain.gather(plain.positions(["d5", "d1", "d40"]))
    assert torch.equal(mask, want_mask) and got["k0"].dtype == torch.float32
    keep = mask.bool()
    assert torch.all(got["k0"][~keep] == 0)  # padding stays zero, as in a plain store
    for field in ("k0", "v0"):
        error = (got[field][keep] - want[field][keep]).norm(dim=-1) / want[field][keep].norm(dim=-1)
        assert float(error.mean()) < 0.5, field
    # the gather's decoding is faiss's own decoding of the stored codes
    from safetensors.torch import load_file

    codes = load_file(str(folder / "shard-00000.safetensors"))["k0.codes"]
    books = load_file(str(folder / CODEC_FILE))
    row = store.index.rows[int(rows[1])]
    assert row["shard"] == 0
    start, length = int(row["start"]), int(row["length"])
    expected = faiss_decode(
        books["k0.rotation"].numpy(), books["k0.centroids"].numpy(), codes[start : start + length].numpy()
    )
    bound = fp16_table_bound(books["k0.centroids"].numpy(), codes[start : start + length].numpy())
    assert np.all(np.abs(got["k0"][1, :length].numpy() - expected).max(-1) <= bound)


def gathered(folder: Path, docnos: list[str]) -> dict[str, torch.Tensor]:
    store = DocumentStore(folder, "fake", "fp-1", "kv")
    return store.gather(store.positions(docnos))[0]


def test_token_means_store_keeps_a_token_row_per_token_and_decodes_with_it(tmp_path):
    folder, _ = build(tmp_path, "pq", TokenRanker(), pq_bytes=4, mode="kv", chunk_docs=16, token_means=True)
    plain, _ = build(tmp_path, "pq", TokenRanker(), folder=tmp_path / "plain", pq_bytes=4, mode="kv")
    reference, _ = build(tmp_path, "fp32", folder=tmp_path / "fp32", mode="kv", chunk_docs=16)
    manifest = json.loads((folder / "manifest.json").read_text())
    codec = manifest["codec"]
    assert codec["options"] == {"name": "pq", "pq_bytes": 4, "token_means": True}
    assert codec["token_means"] == {"token_ids": 29, "shrinkage": MEAN_SHRINKAGE, "row_dtype": "int16"}
    assert codec["bytes_per_token"] == 2 * 4 + 2  # two fields' codes and one token row
    from safetensors.torch import load_file

    shard = load_file(str(folder / "shard-00000.safetensors"))
    books = load_file(str(folder / CODEC_FILE))
    assert shard[TOKEN_ROWS].dtype == torch.int16 and books["token_ids"].tolist() == list(range(100, 129))
    # each stored token's row names its word: w<k> is row k + 1
    store = DocumentStore(folder, "fake", "fp-1", "kv")
    row = store.index.rows[int(store.positions(["d3"])[0])]
    start, length = int(row["start"]), int(row["length"])
    words = [int(w[1:]) for w in TEXTS["d3"].split()]
    assert shard[TOKEN_ROWS][start : start + length].tolist() == [k + 1 for k in words]
    # the gather decodes codes and token means together; far closer than the plain pq store of the same size
    got, mask = store.gather(store.positions(["d5", "d3", "d40"]))
    want, alone = (gathered(f, ["d5", "d3", "d40"]) for f in (reference, plain))
    keep = mask.bool()
    for field in ("k0", "v0"):
        side = float(((got[field] - want[field])[keep] ** 2).mean())
        assert side < 0.5 * float(((alone[field] - want[field])[keep] ** 2).mean()), field
    # a token id the training sample lacked takes row 0 (the mean vector)
    loaded = store.codec
    assert loaded.token_rows(torch.tensor([128, 100, 99, 5000])).tolist() == [29, 1, 0, 0]
    # an extension encodes its new documents with the store's codebooks and token table
    # (a residual store here: 20 documents are too few vectors for pq's 256 centroids)
    options = {"first_stage": "dataset:bm25", "residual_bits": 2, "centroids": 8, "token_means": True}
    first, _ = build(tmp_path, "residual", TokenRanker(), folder=tmp_path / "ext", top_k=10, **options)
    books = (first / CODEC_FILE).read_bytes()
    extended, _ = build(tmp_path, "residual", TokenRanker(), folder=tmp_path / "ext", top_k=20, extend=True, **options)
    assert (extended / CODEC_FILE).read_bytes() == books and len(DocumentStore(extended, "fake", "fp-1")) == 40


def test_extend_and_resume_reuse_the_codebooks(tmp_path, monkeypatch):
    options = {"first_stage": "dataset:bm25", "residual_bits": 2, "centroids": 8}
    folder, ranker = build(tmp_path, "residual", top_k=10, **options)
    books = (folder / CODEC_FILE).read_bytes()
    trained_on = len(ranker.encoded)
    with pytest.raises(MicebenchError, match="cannot extend .*its codebooks have bits 2, this precompute asks for 1"):
        build(tmp_path, "residual", top_k=20, extend=True, **{**options, "residual_bits": 1})
    with pytest.raises(MicebenchError, match="cannot extend .*: its dtype is 'residual'"):
        build(tmp_path, "fp16", top_k=20, extend=True, first_stage="dataset:bm25")
    folder, ranker = build(tmp_path, "residual", top_k=20, extend=True, first_stage="dataset:bm25")
    store = DocumentStore(folder, "fake", "fp-1")
    assert (folder / CODEC_FILE).read_bytes() == books and len(store) == 40
    new = 40 - 20
    assert len(ranker.encoded) == 2 * new  # the size sample and the new documents: no training sample
    assert trained_on > 20 and store.manifest["codec"]["options"]["centroids"] == 8
    # an interrupted build keeps its codebooks in the partial store and resumes with them
    again = {"folder": tmp_path / "again", "top_k": 20, "chunk_docs": 8, **options}
    with monkeypatch.context() as patch:
        interrupt_at_chunk(patch, 2, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            build(tmp_path, "residual", **again)
    saved = (tmp_path / ".again.partial" / CODEC_FILE).read_bytes()
    folder, ranker = build(tmp_path, "residual", resume=True, **again)
    assert (folder / CODEC_FILE).read_bytes() == saved
    assert len(ranker.encoded) == 40 + 40 - 16  # the size sample and the chunks left: no training sample
    assert not (folder / "codec.json").exists() and len(DocumentStore(folder, "fake", "fp-1")) == 40


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dtype", "opq"], "unknown store dtype 'opq'"),
        (["--dtype", "pq", "--pq-bytes", "3"], "--pq-bytes 3 does not divide states's 8 dimensions"),
        (["--dtype", "pq", "--pq-bytes", "4", "--limit", "5"], "too few token vectors to train the pq codebooks"),
        (["--dtype", "fp16", "--pq-bytes", "4"], "--pq-bytes applies to --dtype pq"),
        (["--dtype", "residual", "--residual-bits", "3"], "--residual-bits must be 1 or 2 (got 3)"),
        (["--dtype", "residual", "--centroids", "64", "--limit", "3"], "at least 64 needed"),
        (["--dtype", "pq", "--pq-bytes", "4", "--token-means"], "--token-means needs the token id of every stored"),
        (["--dtype", "int8", "--token-means"], "--token-means applies to --dtype pq or residual"),
    ],
)
def test_bad_codec_options_are_refused_in_one_line(capsys, tmp_path, monkeypatch, extra, message):
    import micebench.rankers.base
    from tests.test_cli import cli

    monkeypatch.setattr(micebench.rankers.base, "load_ranker", lambda *a, **k: NoisyRanker())
    out = tmp_path / "s"
    args = ["precompute", "--model", "mice", "--dataset", str(collection(tmp_path)), "--device", "cpu", "-o", str(out)]
    code, _, err = cli(capsys, *args, *extra)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not (tmp_path / ".s.partial").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(("dtype", "options"), [("pq", {"pq_bytes": 4}), ("residual", {"residual_bits": 2})])
def test_codec_stores_decode_on_cuda_as_on_the_cpu(tmp_path, dtype, options):
    folder, _ = build(tmp_path, dtype, **options, centroids=8 if dtype == "residual" else None)
    rows = torch.tensor([3, 0, 7])
    on_cpu, mask = DocumentStore(folder, "fake", "fp-1").gather(rows)
    on_gpu, gpu_mask = DocumentStore(folder, "fake", "fp-1", device="cuda").gather(rows)
    assert torch.equal(gpu_mask.cpu(), mask)
    scale = float(on_cpu["states"].abs().max())
    # pq decodes through an fp16 table: both devices within its rounding bound of the exact value (loosely)
    tolerance = 1e-5 * scale if dtype == "residual" else 2 * (4 + 1) * 2.0**-11 * 4 * scale
    assert torch.allclose(on_gpu["states"].cpu(), on_cpu["states"], rtol=0, atol=tolerance)
