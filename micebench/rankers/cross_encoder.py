"""`ce`: any Hugging Face sequence-classification cross-encoder, batched, SDPA attention."""

from __future__ import annotations

from typing import Any

import numpy as np

from micebench.errors import MicebenchError
from micebench.rankers.base import Ranker, register_ranker
from micebench.rankers.batching import length_sorted_batches
from micebench.rankers.memory import oom_backoff
from micebench.rankers.models import (
    DEFAULT_CROSS_ENCODER,
    classifier_options,
    count_parameters,
    load_pretrained,
    logits_to_scores,
    pick_device,
    pick_dtype,
)


@register_ranker("ce", "cross-encoder: [CLS] query [SEP] document [SEP] with full attention")
class CrossEncoderRanker(Ranker):
    """A standard cross-encoder; the relevance score is the classifier logit."""

    name = "ce"

    def __init__(
        self,
        checkpoint: str = DEFAULT_CROSS_ENCODER,
        device: str = "auto",
        batch_size: int = 32,
        max_length: int = 512,
        dtype: str = "fp32",
        attn_implementation: str = "sdpa",
        **_: Any,
    ):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.checkpoint = checkpoint
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype)
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        extra = classifier_options(checkpoint)
        self.tokenizer = load_pretrained(AutoTokenizer, checkpoint)
        self.model = load_pretrained(
            AutoModelForSequenceClassification, checkpoint, attn_implementation=attn_implementation, **extra
        )
        self.model.to(self.device, dtype=self.dtype).eval()
        self._torch = torch

    def tokenize_pairs(self, queries: list[str], docs: list[str]) -> Any:
        """`[CLS] q [SEP] d [SEP]` batches, truncated longest-first to `max_length` (as sentence-transformers)."""
        return self.tokenizer(
            queries,
            docs,
            truncation="longest_first",
            max_length=self.max_length,
            padding=True,
            return_tensors="pt",
        ).to(self.device)

    def forward(self, batch: Any, **kwargs: Any) -> Any:
        """Model output for a tokenised batch (kwargs such as output_attentions go to the model)."""
        return self.model(**batch, **kwargs)

    @oom_backoff
    def score(self, query: str, docs: list[str]) -> np.ndarray:
        if not query.strip():
            raise MicebenchError("empty query text")
        scores = np.empty(len(docs), dtype=np.float64)
        with self._torch.inference_mode():
            for idx in length_sorted_batches(docs, self.batch_size):
                batch = self.tokenize_pairs([query] * len(idx), [docs[i] for i in idx])
                logits = self.forward(batch).logits.float()
                scores[idx] = logits_to_scores(logits).cpu().numpy()
        return scores

    def describe(self) -> dict[str, Any]:
        return {
            "ranker": self.name,
            "checkpoint": self.checkpoint,
            "parameters": count_parameters(self.model),
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "attention": self.model.config._attn_implementation,
            "max_length": self.max_length,
            "batch_size": self.batch_size,
            "oom_backoffs": getattr(self, "oom_backoffs", 0),
        }
