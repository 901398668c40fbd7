"""A ranker is one file: a toy bi-encoder defined here alone gets `run`, `precompute`, `train` and `latency`.

The family below is registered from this test file only; nothing in the package names it. It declares its
options, a store (one pooled vector per document), differentiable scoring and a timed call, and every command
works through those declarations.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from micebench.models.batching import length_sorted_batches
from micebench.rankers import base
from micebench.rankers.base import Benchmarkable, ModelOptions, ModelRanker, StoreBacked, Trainable
from tests.test_cli import cli


@dataclass
class ToyOptions(ModelOptions):
    checkpoint: str = ""
    batch_size: int = 8
    precomputed: str | None = None


class ToyBiEncoder(StoreBacked, Trainable, Benchmarkable, ModelRanker):
    """Toy bi-encoder: [CLS] vectors of a tiny BERT, dot product."""

    name = "toy-bi"
    Options = ToyOptions
    store_kind = "toy"
    store_modes = ("vectors",)
    bench_modes = ("none", "precomputed")

    def __init__(self, options: ToyOptions):
        super().__init__(options)  # device, dtype, batch size and checkpoint
        from transformers import AutoModel

        self.load_tokenizer()
        self.model = AutoModel.from_pretrained(options.checkpoint).to(self.device).eval()
        self.open_store(options.precomputed)

    def weight_modules(self) -> list[Any]:
        return [self.model]

    def embed(self, ids: Any, mask: Any) -> Any:
        return self.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, :1]  # (B, 1, H)

    def encode(self, texts: list[str]) -> Any:
        batch = self.tokenizer(texts, truncation=True, max_length=64, padding=True, return_tensors="pt")
        return self.embed(batch["input_ids"], batch["attention_mask"])

    def score(self, query: str, docs: list[str]) -> np.ndarray:
        scores = np.empty(len(docs))
        with torch.inference_mode():
            q = self.encode([query])[0, 0]
            for idx in length_sorted_batches(docs, self.batch_size):
                scores[idx] = (self.encode([docs[i] for i in idx])[:, 0] @ q).double().numpy()
        return scores

    # StoreBacked
    def store_fields(self, mode: str) -> tuple[list[str], str]:
        return ["vector"], self.store_kind

    def store_fingerprint(self, mode: str) -> str:
        from micebench.models.hf import weight_fingerprint

        return weight_fingerprint("toy", self.model)

    def store_encode(self, texts: list[str], mode: str) -> tuple[dict[str, Any], Any]:
        vectors = self.encode(texts)
        return {"vector": vectors}, torch.ones(vectors.shape[:2], dtype=torch.long)

    def encode_stored_query(self, query: str) -> Any:
        return self.encode([query])[0, 0]

    def score_gathered(self, query: Any, tensors: dict[str, Any], mask: Any, padded: bool) -> Any:
        return tensors["vector"][:, 0].float() @ query

    # Trainable
    def trainable_module(self) -> Any:
        return self.model

    def score_pairs(self, queries: list[str], docs: list[str]) -> Any:
        return (self.encode(queries)[:, 0] * self.encode(docs)[:, 0]).sum(-1)

    def save_checkpoint(self, folder: Path) -> None:
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)

    # Benchmarkable
    def bench_call(self, query_ids: Any, doc_ids: Any, mode: str) -> Callable[[], Any]:
        ones = torch.ones_like
        stored = self.embed(doc_ids, ones(doc_ids)).detach() if mode == "precomputed" else None

        def call() -> Any:
            with torch.inference_mode():
                docs = stored if stored is not None else self.embed(doc_ids, ones(doc_ids))
                return (docs[:, 0] @ self.embed(query_ids, ones(query_ids))[0, 0]).numpy()

        return call

    def bench_flops(self, query_len: int, doc_len: int, batch: int, mode: str) -> float:
        return float(doc_len if mode == "none" else 1)

    def bench_modules(self, everything: bool = False) -> list[Any]:
        return [self.model]


@pytest.fixture
def toy_family(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register the toy family for one test (the registry is left as it was afterwards)."""
    base._load_builtins()
    monkeypatch.setitem(base._REGISTRY, "toy-bi", ToyBiEncoder)
    monkeypatch.setitem(base._DESCRIPTIONS, "toy-bi", "toy bi-encoder")


@pytest.mark.slow
def test_a_ranker_defined_in_one_file_gets_every_command(toy_family, capsys, tmp_path, data_dir, tiny_bert_encoder):
    adi = str(data_dir / "adi")
    common = ["--dataset", adi, "--checkpoint", tiny_bert_encoder, "--device", "cpu"]
    out = str(tmp_path / "results")
    label = f"toy-bi-{Path(tiny_bert_encoder).name}"

    code, _, err = cli(capsys, "run", "--model", "toy-bi", *common, "--first-stage", "bm25", "--top-k", "10", "-o", out)
    assert code == 0, err
    manifest = json.loads((tmp_path / "results" / "adi" / label / "manifest.json").read_text())
    assert manifest["ranker_options"] == {
        "checkpoint": tiny_bert_encoder,
        "device": "cpu",
        "dtype": "fp32",
        "batch_size": 8,
        "precomputed": None,
    }

    store = str(tmp_path / "store")
    code, _, err = cli(capsys, "precompute", "--model", "toy-bi", *common, "--output", store, "--dtype", "fp32")
    assert code == 0, err
    code, _, err = cli(
        capsys, "run", "--model", "toy-bi", *common, "--first-stage", "bm25", "--top-k", "10", "-o", out,
        "--precomputed", store, "--name", "toy-stored",
    )  # fmt: skip
    assert code == 0, err

    def scores(folder: str) -> dict[tuple[str, str], float]:
        lines = (tmp_path / "results" / "adi" / folder / "run.trec").read_text().splitlines()
        return {(q, d): float(s) for q, _, d, _, s, _ in (line.split() for line in lines)}

    on_the_fly, stored = scores(label), scores("toy-stored")
    assert stored.keys() == on_the_fly.keys()
    np.testing.assert_allclose([stored[k] for k in on_the_fly], list(on_the_fly.values()), rtol=1e-5, atol=1e-5)

    code, _, err = cli(
        capsys, "train", "--model", "toy-bi", "--init", tiny_bert_encoder, "--train", adi, "--split", "test",
        "--loss", "bce", "--steps", "1", "--batch-size", "2", "--warmup", "0", "--negatives", "2",
        "--device", "cpu", "-o", str(tmp_path / "trained"),
    )  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "trained" / "best" / "config.json").is_file()
    assert json.loads((tmp_path / "trained" / "best" / "micebench_training.json").read_text())["step"] == 1

    code, _, err = cli(
        capsys, "latency", "--models", "toy-bi,toy-bi:precomputed", "--checkpoint", tiny_bert_encoder,
        "--device", "cpu", "--batch", "4", "--query-len", "8", "--doc-len", "16", "--warmup", "0",
        "--repeats", "1", "-o", out, "--name", "toy",
    )  # fmt: skip
    assert code == 0, err
    rows = json.loads((tmp_path / "results" / "latency" / "toy.json").read_text())["rows"]
    assert [(r["label"], r["flops_per_doc"]) for r in rows] == [("toy-bi:none", 16.0), ("toy-bi:precomputed", 1.0)]


def test_the_toy_family_declares_its_options(toy_family):
    """An option the toy does not declare is refused before its model would load."""
    from micebench.errors import MicebenchError

    with pytest.raises(MicebenchError, match="option --max-length does not apply to model 'toy-bi'"):
        base.load_ranker("toy-bi", checkpoint="unused", max_length=12)
    assert base.rankers_with(StoreBacked) == ["colbert", "mice", "toy-bi"]
    assert base.rankers_with(Trainable) == ["ce", "colbert", "masked-ce", "mice", "toy-bi"]
