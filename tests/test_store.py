"""Document stores: memory-mapped gathers, int8, format-1 stores, candidate-only and extended precomputes, errors.

Stores are built from synthetic tensors or from a stand-in ranker whose token vectors come from the words of a
text (no model), so every test runs in well under a second.
"""

from __future__ import annotations

import json
import mmap
import zlib
from pathlib import Path

import pytest
import torch

from micebench.errors import MicebenchError
from micebench.store.document_store import DocumentStore, PackedTensors, StoreWriter
from micebench.store.shards import quantize
from tests.conftest import write_beir

DIM = 8
META = {"kind": "fake", "mode": "states", "fingerprint": "fp-1"}


def word_vector(word: str) -> torch.Tensor:
    """A fixed random vector per word."""
    generator = torch.Generator().manual_seed(zlib.crc32(word.encode()))
    return torch.randn(DIM, generator=generator)


def doc_tensor(text: str, scale: float = 1.0) -> torch.Tensor:
    """The (tokens, DIM) vectors the stand-in ranker stores for `text`."""
    return torch.stack([word_vector(w) for w in text.split()]) * scale


class WordRanker:
    """Stands in for MICE or ColBERT in `precompute`: one vector per word, fields `states` or `k0`/`v0`."""

    label = "words"

    def __init__(self, fingerprint: str = "fp-1", batch_size: int = 2):
        self.fingerprint, self.batch_size = fingerprint, batch_size
        self.encoded: list[str] = []

    def store_fields(self, mode: str) -> tuple[list[str], str]:
        if mode not in ("states", "kv"):
            raise MicebenchError(f"unknown store mode {mode!r}")
        return (["states"] if mode == "states" else ["k0", "v0"]), "fake"

    def store_fingerprint(self, mode: str) -> str:
        return self.fingerprint

    def store_encode(self, texts: list[str], mode: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        self.encoded.extend(texts)
        width = max(len(t.split()) for t in texts)
        x, mask = torch.zeros(len(texts), width, DIM), torch.zeros(len(texts), width, dtype=torch.long)
        for i, text in enumerate(texts):
            x[i, : len(text.split())] = doc_tensor(text)
            mask[i, : len(text.split())] = 1
        fields, _ = self.store_fields(mode)
        return {f: x * (j + 1) for j, f in enumerate(fields)}, mask

    def describe(self) -> dict[str, str]:
        return {"ranker": "words"}


TEXTS = {f"d{i}": " ".join(f"w{(i * 7 + j) % 23}" for j in range(1 + i % 5)) for i in range(12)}


def collection(tmp_path: Path) -> Path:
    """12 documents, 2 judged queries, and a shipped bm25 run ranking 4 documents per query."""
    corpus = [{"_id": d, "title": "", "text": t} for d, t in TEXTS.items()]
    queries = [{"_id": "q1", "text": "first"}, {"_id": "q2", "text": "second"}]
    folder = write_beir(tmp_path / "c", corpus, queries, [("q1", "d1", 1), ("q2", "d2", 1)])
    (folder / "candidates").mkdir()
    run = {"q1": ["d3", "d1", "d5", "d7"], "q2": ["d5", "d2", "d8", "d9"]}
    lines = [f"{q} Q0 {d} {r + 1} {10 - r} bm25" for q, docs in run.items() for r, d in enumerate(docs)]
    (folder / "candidates" / "bm25.trec").write_text("\n".join(lines) + "\n")
    return folder


def build(tmp_path: Path, **options) -> tuple[Path, WordRanker, list[str]]:
    """Precompute a store of the test collection with the stand-in ranker; returns folder, ranker, messages."""
    from micebench.data import load_dataset
    from micebench.store.precompute import precompute

    ranker = options.pop("ranker", None) or WordRanker()
    said: list[str] = []
    folder = options.pop("folder", tmp_path / "store")
    dataset = load_dataset(str(collection(tmp_path) if not (tmp_path / "c").exists() else tmp_path / "c"))
    options.setdefault("dtype", "fp32")
    path = precompute(ranker, dataset, folder, options.pop("mode", "states"), say=said.append, **options)
    return path, ranker, said


def synthetic_store(folder: Path, dtype: torch.dtype, docs: dict[str, torch.Tensor], chunk: int = 3) -> Path:
    """Write `docs` ({id: (tokens, DIM)}) with StoreWriter directly, `chunk` documents per shard."""
    writer = StoreWriter(folder, META, ["states"], dtype)
    ids = list(docs)
    for index, start in enumerate(range(0, len(ids), chunk)):
        part = ids[start : start + chunk]
        writer.write_chunk(index, part, [len(docs[d]) for d in part], {"states": [docs[d] for d in part]})
    return writer.finish({"documents": "synthetic"})


def random_docs(count: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 9, (count,), generator=generator).tolist()
    return {f"doc-{i}": torch.randn(n, DIM, generator=generator) for i, n in enumerate(lengths)}


def padded(tensors: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(t) for t in tensors)
    out, mask = torch.zeros(len(tensors), width, DIM), torch.zeros(len(tensors), width, dtype=torch.long)
    for i, t in enumerate(tensors):
        out[i, : len(t)], mask[i, : len(t)] = t, 1
    return out, mask


def test_packed_tensors_keep_batches_where_they_are(monkeypatch):
    """No pinning (which fails on a GPU tensor) when the target is the tensors' own device."""
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: pytest.fail("pinned a batch already on target"))
    packed = PackedTensors({"x": torch.arange(12.0).view(6, 2)}, torch.tensor([1, 2, 3]))
    tensors, mask = packed.gather(torch.tensor([2, 0]))
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]] and tensors["x"][0, 2].tolist() == [10.0, 11.0]


# -- reading --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("dtype", "atol"), [(torch.float32, 0), (torch.float16, 2e-3), (torch.bfloat16, 2e-2), (torch.int8, None)]
)
def test_gather_returns_the_stored_documents(tmp_path, dtype, atol):
    docs = random_docs(10)
    store = DocumentStore(synthetic_store(tmp_path / "s", dtype, docs), "fake", "fp-1", "states", dtype=torch.float32)
    ids = ["doc-7", "doc-0", "doc-4", "doc-9"]
    tensors, mask = store.gather(store.positions(ids))
    expected, expected_mask = padded([docs[d] for d in ids])
    assert torch.equal(mask, expected_mask) and tensors["states"].dtype == torch.float32
    got = tensors["states"]
    if dtype == torch.int8:  # symmetric per token: off by at most half a step of that token's scale
        step = expected.abs().amax(-1, keepdim=True) / 127
        assert ((got - expected).abs() <= step / 2 + 1e-6).all()
    else:
        torch.testing.assert_close(got, expected, atol=atol, rtol=0)
    assert (got[mask == 0] == 0).all()
    assert store.manifest["dtype"] == str(dtype).replace("torch.", "") and len(store) == 10


def test_gather_in_the_stored_dtype_and_an_empty_batch(tmp_path):
    docs = random_docs(5)
    store = DocumentStore(synthetic_store(tmp_path / "s", torch.float16, docs), "fake", "fp-1")
    tensors, mask = store.gather(store.positions(["doc-3"]))
    assert tensors["states"].dtype == torch.float16 and torch.equal(
        tensors["states"][0].float(), docs["doc-3"].half().float()
    )
    tensors, mask = store.gather(torch.zeros(0, dtype=torch.long))
    assert tensors["states"].shape == (0, 0, DIM) and mask.shape == (0, 0)


def test_lookups(tmp_path):
    docs = {"b": torch.ones(2, DIM), "a": torch.ones(1, DIM), "ü-long-id": torch.ones(3, DIM)}
    store = DocumentStore(synthetic_store(tmp_path / "s", torch.float32, docs, chunk=2), "fake", "fp-1")
    assert store.positions(["ü-long-id", "b", "a"]).tolist() == [2, 0, 1]
    assert store.missing(["a", "zz", "a-much-longer-id-than-any"]) == ["zz", "a-much-longer-id-than-any"]
    assert "b" in store and "c" not in store and store.docnos == ["b", "a", "ü-long-id"]
    with pytest.raises(MicebenchError, match="'zz' is not in the store"):
        store.positions(["a", "zz"])


def test_opening_maps_the_index_and_reads_no_shard(tmp_path, monkeypatch):
    import safetensors.torch

    folder = synthetic_store(tmp_path / "s", torch.float16, random_docs(9))
    monkeypatch.setattr(safetensors.torch, "load_file", lambda *a, **k: pytest.fail("a shard was loaded whole"))
    store = DocumentStore(folder, "fake", "fp-1")
    assert all(isinstance(a.base.obj, mmap.mmap) for a in (store.index.keys, store.index.order, store.index.rows))
    assert not (store._tokens >= 0).any()
    store.gather(store.positions(["doc-4"]))
    assert (store._tokens >= 0).tolist() == [False, True, False]  # only the shard holding doc-4 was mapped


def test_truncated_or_corrupt_shards_are_named(tmp_path):
    folder = synthetic_store(tmp_path / "s", torch.float16, random_docs(9))
    shard = folder / "shard-00001.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(b"\xff" * 16 + data[16:])  # same size, unreadable header: found at first read
    store = DocumentStore(folder, "fake", "fp-1")
    store.gather(store.positions(["doc-0", "doc-8"]))  # shards 0 and 2 are fine
    with pytest.raises(MicebenchError, match=r"corrupt store shard .*shard-00001\.safetensors"):
        store.gather(store.positions(["doc-4"]))
    shard.write_bytes(data[: len(data) // 2])  # truncated: found when the store is opened
    with pytest.raises(MicebenchError, match=r"truncated or corrupt store shard .*shard-00001\.safetensors"):
        DocumentStore(folder, "fake", "fp-1")


def test_format_1_stores_are_read_and_can_be_extended(tmp_path):
    from safetensors.torch import save_file

    docs = random_docs(5)
    folder = tmp_path / "old"
    folder.mkdir()
    order = [["doc-0", "doc-1", "doc-2"], ["doc-3", "doc-4"]]
    for i, ids in enumerate(order):
        packed = {"states": torch.cat([docs[d] for d in ids]).half()}
        packed["lengths"] = torch.tensor([len(docs[d]) for d in ids], dtype=torch.int32)
        save_file(packed, str(folder / f"shard-{i:05d}.safetensors"))
    (folder / "docnos.json").write_text(json.dumps([d for ids in order for d in ids]))
    shards = [{"file": f"shard-{i:05d}.safetensors", "docs": len(ids)} for i, ids in enumerate(order)]
    manifest = {**META, "fields": ["states"], "dtype": "float16", "num_docs": 5, "shards": shards}
    (folder / "manifest.json").write_text(json.dumps({**manifest, "bytes": 1000, "status": "complete"}))
    store = DocumentStore(folder, "fake", "fp-1", dtype=torch.float32)
    tensors, mask = store.gather(store.positions(["doc-4", "doc-1"]))
    expected, _ = padded([docs["doc-4"].half().float(), docs["doc-1"].half().float()])
    assert torch.equal(tensors["states"], expected)

    more = random_docs(3, seed=1)
    writer = StoreWriter(folder, META, ["states"], torch.float16, extend=True)
    writer.write_chunk(
        0, ["new-0", "new-1"], [len(more["doc-0"]), len(more["doc-1"])], {"states": [more["doc-0"], more["doc-1"]]}
    )
    writer.finish({"documents": "more"})
    store = DocumentStore(folder, "fake", "fp-1", dtype=torch.float32)
    assert store.manifest["format"] == 2 and len(store) == 7 and not (folder / "docnos.json").exists()
    tensors, _ = store.gather(store.positions(["new-1", "doc-2"]))
    assert torch.equal(tensors["states"][0, : len(more["doc-1"])], more["doc-1"].half().float())
    assert torch.equal(tensors["states"][1, : len(docs["doc-2"])], docs["doc-2"].half().float())


def test_int8_quantisation_and_size():
    x = torch.randn(50, 384) * torch.rand(50, 1) * 10
    x[3] = 0
    values, scales = quantize(x)
    assert values.dtype == torch.int8 and scales.dtype == torch.float32 and scales[3] == 0
    torch.testing.assert_close(scales, x.abs().amax(-1) / 127)  # symmetric: the largest value maps to 127
    assert ((values.float() * scales[:, None] - x).abs() <= scales[:, None] / 2 + 1e-6).all()


# -- precompute -----------------------------------------------------------------------------------------------------
def test_candidates_come_query_by_query_by_rank_each_once():
    from micebench.store.precompute import candidate_ids

    run = {"q2": {"d5": 3.0, "d2": 4.0, "d1": 1.0}, "q1": {"d3": 1.0, "d1": 2.0}}
    assert candidate_ids(run) == ["d1", "d3", "d2", "d5"]


def test_candidate_store_holds_each_candidate_once(tmp_path):
    folder, ranker, said = build(tmp_path, first_stage="dataset:bm25", top_k=3, dtype="int8")
    store = DocumentStore(folder, "fake", "fp-1", "states", dtype=torch.float32)
    assert store.docnos == ["d3", "d1", "d5", "d2", "d8"]  # query by query, by rank, each once
    assert sorted(ranker.encoded[5:]) == sorted(TEXTS[d] for d in store.docnos)  # after the size sample
    (source,) = store.manifest["sources"]
    assert source["documents"] == "candidates" and source["first_stage"] == "dataset:bm25" and source["top_k"] == 3
    assert source["candidates"] == 5 and source["added"] == 5 and source["queries"] == 2
    assert said[0].startswith("projected store size: 5 documents x 2.8 tokens x 12 bytes per token (int8)")
    tensors, mask = store.gather(store.positions(["d8", "d1"]))
    expected, expected_mask = padded([doc_tensor(TEXTS["d8"]), doc_tensor(TEXTS["d1"])])
    assert torch.equal(mask, expected_mask) and (tensors["states"] - expected).abs().max() < 0.03


def test_int8_kv_store_keeps_every_field(tmp_path):
    folder, _, _ = build(tmp_path, mode="kv", dtype="int8", chunk_docs=5)
    store = DocumentStore(folder, "fake", "fp-1", "kv", dtype=torch.float32)
    assert store.manifest["fields"] == ["k0", "v0"] and store.manifest["quantization"]["scale"] == "float32"
    tensors, mask = store.gather(store.positions(["d4", "d11", "d0"]))
    for j, field in enumerate(("k0", "v0")):
        expected, expected_mask = padded([doc_tensor(TEXTS[d], j + 1) for d in ("d4", "d11", "d0")])
        step = expected.abs().amax(-1, keepdim=True) / 127
        assert torch.equal(mask, expected_mask) and ((tensors[field] - expected).abs() <= step / 2 + 1e-6).all()
    fp16, _, _ = build(tmp_path, folder=tmp_path / "fp16", mode="kv", dtype="fp16", chunk_docs=5)
    assert tensor_bytes(folder) / tensor_bytes(fp16) == pytest.approx((8 + 4) / (8 * 2))  # 384 dims: 0.505


def tensor_bytes(folder: Path) -> int:
    """Bytes of the field tensors (and scales) in a store's shards, read from their headers."""
    from micebench.store.shards import read_header

    total = 0
    for path in folder.glob("shard-*.safetensors"):
        header = read_header(path)[0]
        total += sum(e["data_offsets"][1] - e["data_offsets"][0] for n, e in header.items() if n != "lengths")
    return total


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.int8])
def test_gather_to_cuda_equals_cpu(tmp_path, dtype):
    folder = synthetic_store(tmp_path / "s", dtype, random_docs(20))
    on_cpu = DocumentStore(folder, "fake", "fp-1", dtype=torch.float32)
    on_gpu = DocumentStore(folder, "fake", "fp-1", device="cuda", dtype=torch.float32)
    for ids in (["doc-3", "doc-17", "doc-0"], ["doc-9"], [f"doc-{i}" for i in range(20)]):
        expected, expected_mask = on_cpu.gather(on_cpu.positions(ids))
        got, mask = on_gpu.gather(on_gpu.positions(ids))
        assert got["states"].device.type == "cuda" and mask.device.type == "cuda"
        assert torch.equal(got["states"].cpu(), expected["states"]) and torch.equal(mask.cpu(), expected_mask)


def test_extending_adds_only_missing_documents_and_refuses_another_model(tmp_path):
    folder, _, _ = build(tmp_path, first_stage="dataset:bm25", top_k=2)
    with pytest.raises(MicebenchError, match="already exists.*--extend"):
        build(tmp_path, first_stage="dataset:bm25", top_k=4)
    for options, what in (({"dtype": "fp16"}, "dtype"), ({"ranker": WordRanker("fp-2")}, "fingerprint")):
        with pytest.raises(MicebenchError, match=f"cannot extend .*: its {what} is"):
            build(tmp_path, first_stage="dataset:bm25", top_k=4, extend=True, **options)
    folder, ranker, said = build(tmp_path, first_stage="dataset:bm25", top_k=4, extend=True)
    store = DocumentStore(folder, "fake", "fp-1", dtype=torch.float32)
    assert store.docnos == ["d3", "d1", "d5", "d2", "d7", "d8", "d9"]
    assert said[0].startswith("projected store size: 3 documents")
    assert sorted(ranker.encoded[3:]) == sorted(TEXTS[d] for d in ("d7", "d8", "d9"))
    assert [s["added"] for s in store.manifest["sources"]] == [4, 3] and store.manifest["generation"] == 1
    assert sorted(p.name for p in folder.glob("index-*")) == [f"index-{n}-0001.npy" for n in ("keys", "order", "rows")]
    for docno in store.docnos:
        tensors, _ = store.gather(store.positions([docno]))
        assert torch.equal(tensors["states"][0], doc_tensor(TEXTS[docno])), docno
    _, ranker, said = build(tmp_path, first_stage="dataset:bm25", top_k=4, extend=True)
    assert said == [f"nothing to encode: {folder} already holds every requested document"]
    assert len(DocumentStore(folder, "fake", "fp-1").manifest["sources"]) == 3


def test_whole_corpus_extension_after_a_limited_build(tmp_path):
    build(tmp_path, limit=5, chunk_docs=2)
    folder, ranker, _ = build(tmp_path, extend=True, chunk_docs=2)
    store = DocumentStore(folder, "fake", "fp-1")
    assert store.docnos == list(TEXTS) and len(store.manifest["shards"]) == 3 + 4
    assert store.manifest["sources"][0] == {
        "dataset": store.manifest["dataset"],
        "documents": "corpus",
        "limit": 5,
        "added": 5,
    }


def interrupt_at_chunk(monkeypatch, index: int, error: BaseException) -> None:
    """Make StoreWriter fail when it is about to write chunk `index`."""
    original = StoreWriter.write_chunk

    def write_chunk(self, number, *args):
        if number == index:
            raise error
        return original(self, number, *args)

    monkeypatch.setattr(StoreWriter, "write_chunk", write_chunk)


@pytest.mark.parametrize("extend", [False, True])
def test_an_interrupted_precompute_resumes_to_an_identical_store(tmp_path, monkeypatch, extend):
    options = {"mode": "kv", "chunk_docs": 2, "first_stage": "dataset:bm25", "top_k": 4, "extend": extend}
    for name in ("straight", "resumed") if extend else ():  # a store of the top-1 candidates (d3, d5) to extend
        build(tmp_path, folder=tmp_path / name, mode="kv", first_stage="dataset:bm25", top_k=1)
    straight, _, _ = build(tmp_path, folder=tmp_path / "straight", **options)
    with monkeypatch.context() as patch:
        interrupt_at_chunk(patch, 2, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            build(tmp_path, folder=tmp_path / "resumed", **options)
    if extend:  # the store being extended is intact meanwhile
        assert len(DocumentStore(tmp_path / "resumed", "fake", "fp-1")) == 2
    with pytest.raises(MicebenchError, match="use --resume"):
        build(tmp_path, folder=tmp_path / "resumed", **options)
    with pytest.raises(MicebenchError, match="another model or mode, or other options .different: top_k"):
        build(tmp_path, folder=tmp_path / "resumed", **{**options, "top_k": 3}, resume=True)
    resumed, ranker, _ = build(tmp_path, folder=tmp_path / "resumed", **options, resume=True)
    new = 5 if extend else 7
    assert len(ranker.encoded) == new + new - 4  # the size sample, then what the 2 finished chunks lacked
    names = sorted(p.name for p in straight.iterdir())
    assert names == sorted(p.name for p in resumed.iterdir())
    for name in names:
        assert (straight / name).read_bytes() == (resumed / name).read_bytes(), name
    assert not (tmp_path / ".resumed.partial").exists()


def test_a_failed_precompute_keeps_a_partial_store_only_when_resumable(tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        interrupt_at_chunk(patch, 0, MicebenchError("encoder failed"))
        with pytest.raises(MicebenchError, match="^encoder failed$"):
            build(tmp_path, chunk_docs=4)
    assert not (tmp_path / ".store.partial").exists()
    with monkeypatch.context() as patch:
        interrupt_at_chunk(patch, 1, MicebenchError("encoder failed"))
        with pytest.raises(
            MicebenchError, match=r"encoder failed; 1 finished shards .*rerun with --resume to continue"
        ):
            build(tmp_path, chunk_docs=4)
    assert (tmp_path / ".store.partial").is_dir()
    folder, _, _ = build(tmp_path, chunk_docs=4, resume=True)
    assert len(DocumentStore(folder, "fake", "fp-1")) == 12


def test_disk_space_is_checked_against_the_projection(tmp_path, monkeypatch):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1000))
    with pytest.raises(MicebenchError, match=r"not enough disk space for the store .*needs about 1\.\d KiB, 1000 B"):
        build(tmp_path, dtype="fp32")
    assert not (tmp_path / "store").exists() and not (tmp_path / ".store.partial").exists()
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=10**9))
    build(tmp_path, dtype="fp32")


@pytest.mark.parametrize(
    ("option", "value"), [("--chunk-docs", "0"), ("--batch-size", "0"), ("--limit", "-1"), ("--top-k", "0")]
)
def test_non_positive_counts_are_refused_before_any_work(capsys, tmp_path, option, value):
    from tests.test_cli import cli

    args = ["precompute", "--model", "mice-l2+2", "--checkpoint", str(tmp_path / "absent"), "--dataset", "absent"]
    code, _, err = cli(capsys, *args, "--first-stage", "bm25", option, value, "-o", str(tmp_path / "s"))
    assert code == 2 and f"{option} must be at least 1 (got {value})" in err and len(err.strip().splitlines()) == 1


def test_precompute_command_with_candidates_and_int8(capsys, tmp_path, monkeypatch):
    import micebench.rankers.base
    from tests.test_cli import cli

    ranker = WordRanker()
    monkeypatch.setattr(micebench.rankers.base, "load_ranker", lambda *a, **k: ranker)
    folder = collection(tmp_path)
    args = ["precompute", "--model", "mice", "--dataset", str(folder), "--device", "cpu", "-o", str(tmp_path / "s")]
    code, out, err = cli(capsys, *args, "--first-stage", "dataset:bm25", "--top-k", "2", "--dtype", "int8")
    assert code == 0, err
    assert "projected store size: 4 documents" in out and "4 documents (4 added)" in out and "int8" in out
    code, out, err = cli(capsys, *args, "--first-stage", "dataset:bm25", "--top-k", "4", "--extend", "--dtype", "int8")
    assert code == 0 and "7 documents (3 added)" in out, err
    code, _, err = cli(capsys, *args, "--top-k", "4")
    assert code == 2 and "--top-k applies to --first-stage" in err
    code, _, err = cli(capsys, *args, "--dtype", "fp8")
    assert code == 2 and "unknown store dtype 'fp8'" in err
