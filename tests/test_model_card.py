"""Model cards: `train` writes README.md into its checkpoint; huggingface_hub's ModelCard parser reads it offline."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from micebench.training.model_card import CardFacts, card_header, card_text
from tests.test_cli import cli
from tests.test_training import collection  # noqa: F401 - the fixture

ModelCard = pytest.importorskip("huggingface_hub").ModelCard


def test_a_trained_mice_carries_its_card(tmp_path, tiny_bert_ce, collection, capsys):  # noqa: F811
    out = tmp_path / "mice"
    args = ["train", "--model", "mice-l1+1", "--init", tiny_bert_ce, "--train", str(collection), "--loss", "bce"]
    args += ["--steps", "4", "--batch-size", "4", "--warmup", "1", "--lr", "0.001", "--seed", "5", "--every", "2"]
    args += ["--validate", str(collection), "--validate-top-k", "5", "--max-length", "32", "--negatives", "3"]
    code, _, err = cli(capsys, *args, "--device", "cpu", "-o", str(out))
    assert code == 0, err

    card = ModelCard.load(out / "best" / "README.md")  # a local path: the parser, no download
    meta = json.loads((out / "best" / "micebench_training.json").read_text())
    data = card.data.to_dict()
    assert data["library_name"] == "micebench" and data["pipeline_tag"] == "text-ranking"
    assert "base_model" not in data  # a local folder is no hub id
    assert {"micebench", "reranker", "mice"} <= set(data["tags"]) and data["datasets"] == [str(collection)]
    (result,) = card.data.eval_results
    assert result.metric_type == "ndcg_at_10" and result.task_type == "text-ranking"
    assert result.metric_value == pytest.approx(meta["validation"], abs=1e-4)

    text = card.text
    for line in ("| family | mice |", "| shape | MICE-l1+1 |", "| loss | bce |", "| seed | 5 |", "| teacher | none"):
        assert line in text
    assert "| batch | 4 triples x 1 accumulation |" in text and "| learning rate | 0.001 " in text
    curve = pd.read_csv(out / "curves.csv").dropna(subset=["validation"])
    for step, value in zip(curve["step"], curve["validation"], strict=True):  # the whole curve, written at the end
        assert f"| {step} | {value:.4f} |" in text
    assert "micebench run --model mice-l1+1 --checkpoint my-checkpoint" in text
    assert "needs micebench" in text
    # hidden 32, one top layer: states 2 x 32 B per token in fp16, int8 32 + 4 B, kv 2m x that of fp16 states
    assert "| states fp16 | 64 B | 5.2 KiB |" in text and "| states int8 | 36 B |" in text
    assert "| kv fp16 | 128 B | 10.4 KiB |" in text


def test_a_cross_encoder_card_names_its_hub_base_model():
    train = {"init": "minilm-l12-ce", "train": "msmarco-passage/train", "validate_top_k": 20, "loss": "margin-mse"}
    train |= {"steps": 10, "batch_size": 32, "grad_accumulation": 1, "lr": 7e-6, "warmup": 5, "seed": 12}
    train |= {"teacher": "ce", "teacher_scores": None, "schedule": None}
    facts = CardFacts("ce", 10, 0.5, "RR@10", "msmarco-dev", [{"step": 10, "validation": 0.5}], "bm25", 100)
    header = card_header(train, facts, "my-ce")
    assert header["base_model"] == "cross-encoder/ms-marco-MiniLM-L12-v2" and header["library_name"] == "transformers"
    card = ModelCard(card_text(train, facts, {"hidden_size": 384}, "my-ce"))
    assert card.data.eval_results[0].metric_type == "mrr_at_10" and card.data.datasets[-1] == "msmarco-dev"
    assert "needs micebench" not in card.text and "| teacher | ce |" in card.text
