"""`ce`: any Hugging Face sequence-classification cross-encoder, batched, SDPA attention."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from micebench.errors import MicebenchError
from micebench.models.batching import length_sorted_batches, pad_multiple, pad_rows, scores_to_host, to_device
from micebench.models.checkpoints import check_family
from micebench.models.hf import capped_length, classifier_options, load_model, logits_to_scores
from micebench.models.onnx import is_onnx
from micebench.models.precision import classifier_head, keep_fp32, modules_dtype
from micebench.rankers.capabilities import Benchmarkable, Trainable
from micebench.rankers.memory import oom_backoff
from micebench.rankers.model import ModelRanker
from micebench.rankers.options import CrossEncoderOptions
from micebench.rankers.registry import register_ranker

log = logging.getLogger(__name__)
#: weights of a classifier's score head (BERT, RoBERTa, ELECTRA, DistilBERT: classifier; ModernBERT: head and
#: classifier; decoder rerankers: score): missing from a checkpoint, they are drawn afresh
HEAD_KEYS = ("classifier.", "score.", "head.", "pre_classifier.")


@register_ranker("ce", "cross-encoder: [CLS] query [SEP] document [SEP] with full attention")
class CrossEncoderRanker(Trainable, Benchmarkable, ModelRanker):
    """A standard cross-encoder; the relevance score is the classifier logit."""

    name = "ce"
    Options = CrossEncoderOptions
    onnx_backend = True

    def __init__(self, options: CrossEncoderOptions):
        check_family(options.checkpoint, self.name)  # a MICE or ColBERT checkpoint would lose weights silently
        super().__init__(options)
        import torch
        from transformers import AutoModelForSequenceClassification

        self.max_length = options.max_length
        extra = classifier_options(self.checkpoint)
        self.load_tokenizer()
        self.untrained = options.untrained
        self.head_seed = 0 if options.head_seed is None else options.head_seed

        def load() -> Any:
            return load_model(
                AutoModelForSequenceClassification,
                self.checkpoint,
                self.device,
                self.dtype,
                attn_implementation=options.attn_implementation,
                **extra,
            )

        if extra:  # not a classifier: its score head is drawn afresh, from the seed (the same on every load)
            torch.manual_seed(self.head_seed)
        self.model = load()
        self.fresh_head = [k for k in getattr(self.model, "micebench_missing_keys", ()) if k.startswith(HEAD_KEYS)]
        if self.fresh_head and not extra:  # a classifier whose weights lack the head: drawn again from the seed
            torch.manual_seed(self.head_seed)
            self.model = load()
        self._warn_fresh_head = bool(self.fresh_head) and not self.untrained  # once, when it first scores
        if self.dtype != torch.float32:  # scores from an fp32 head: bf16 logits would tie
            keep_fp32(*classifier_head(self.model))
        self.quantize([self.model], keep=classifier_head(self.model))
        self.max_length = options.max_length = capped_length(options.max_length, self.model.config)
        self._torch = torch
        self.onnx = None
        if is_onnx(self.precision):  # the loaded fp32 model, exported (and quantised) for ONNX Runtime
            from micebench.models.onnx import OnnxClassifier

            example = dict(
                self.tokenizer(["a query", "q"], ["a longer document text", "d"], padding=True, return_tensors="pt")
            )
            self.onnx = OnnxClassifier(self.model, example, self.precision, torch.get_num_threads())

    def no_head_message(self) -> str:
        """Why a checkpoint without a trained score head is refused, and what to do."""
        return (
            f"{self.checkpoint} has no trained score head ({', '.join(self.fresh_head[:2])} drawn afresh from seed "
            f"{self.head_seed}): refused; train it (`micebench train --model {self.name} --init {self.checkpoint}`) "
            "or pass --untrained (untrained=True) to evaluate it as it is"
        )

    def check_ready_for_effectiveness(self) -> None:
        if self.fresh_head and not self.untrained:
            raise MicebenchError(self.no_head_message())

    def effective_options(self) -> dict[str, Any]:
        return {**super().effective_options(), "head_seed": self.head_seed}

    def describe(self) -> dict[str, Any]:
        facts = super().describe()
        return {**facts, "fresh_head_seed": self.head_seed} if self.fresh_head else facts

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
        """Model output for a tokenised batch, moved to the model's device if it is not there (kwargs such as
        output_attentions go to the model); on ONNX Runtime, an output with the logits only."""
        if self.onnx is not None:
            if kwargs:
                raise MicebenchError(f"{', '.join(kwargs)} is not available on ONNX Runtime (--dtype {self.precision})")
            from types import SimpleNamespace

            return SimpleNamespace(logits=self.onnx(dict(batch)))
        return self.model(**to_device(dict(batch), self.device), **kwargs)

    def encode_pairs(self, query: str, docs: list[str]) -> Any:
        """Unpadded token lists of every `[CLS] q [SEP] d [SEP]` pair, truncated as `tokenize_pairs` truncates."""
        return self.tokenizer([query] * len(docs), docs, truncation="longest_first", max_length=self.max_length)

    def host_batch(self, encoded: Any, rows: Any) -> dict[str, Any]:
        """Rows of `encode_pairs` output as a padded host batch (to a multiple of 8 on CUDA)."""
        return pad_rows(self.tokenizer, encoded, rows, pad_multiple(self.device), self.max_length)

    def score_batch(self, batch: dict[str, Any]) -> Any:
        """Scores of a padded host batch, left on the device (fp32)."""
        return logits_to_scores(self.forward(batch).logits.float())

    @oom_backoff
    def score(self, query: str, docs: list[str]) -> np.ndarray:
        """Pairs tokenised once, scored in length-sorted batches; the scores reach the host in one copy."""
        if not query.strip():
            raise MicebenchError("empty query text")
        if self._warn_fresh_head:
            self._warn_fresh_head = False
            log.warning(
                "%s has no trained score head: a fresh one drawn from seed %d scores at random (untrained=True "
                "silences this; runs and Reranker refuse it without)",
                self.checkpoint,
                self.head_seed,
            )
        with self._torch.inference_mode():
            return scores_to_host(((i, self.score_batch(b)) for i, b in self.host_batches(query, docs)), len(docs))

    def host_batches(self, query: str, docs: list[str]) -> Iterator[tuple[Any, dict[str, Any]]]:
        """(positions, padded host batch) of the pairs, tokenised once up front, in length-sorted batches: all
        the tokenisation `score` does."""
        encoded = self.encode_pairs(query, docs) if docs else None
        for idx in length_sorted_batches(docs, self.batch_size):
            yield idx, self.host_batch(encoded, idx)

    # -- Trainable --------------------------------------------------------------------------------------------
    def trainable_module(self) -> Any:
        return self.model

    def score_pairs(self, queries: list[str], docs: list[str]) -> Any:
        return logits_to_scores(self.forward(self.tokenize_pairs(queries, docs)).logits)

    def save_checkpoint(self, folder: Path) -> None:
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)

    # -- Benchmarkable ----------------------------------------------------------------------------------------
    def bench_call(self, query_ids: Any, doc_ids: Any, mode: str) -> Callable[[], Any]:
        """`[CLS] q [SEP] d [SEP]` of exactly the cross-encoder length for the given query and document lengths."""
        from micebench.models import flops

        torch = self._torch
        length = flops.cross_encoder_length(query_ids.shape[1], doc_ids.shape[1], flops.shape_of(self.model.config))
        ids = torch.cat([query_ids.expand(len(doc_ids), -1), doc_ids[:, 1:]], dim=1)[:, :length]
        ids[:, -1] = self.tokenizer.sep_token_id
        types = torch.zeros_like(ids)
        types[:, query_ids.shape[1] :] = 1
        batch = {"input_ids": ids, "token_type_ids": types, "attention_mask": torch.ones_like(ids)}
        batch = {k: v.to(self.device) for k, v in batch.items()}
        self._bench_length = ids.shape[1]

        def call() -> Any:
            with torch.inference_mode():
                return logits_to_scores(self.forward(batch).logits.float()).cpu().numpy()

        return call

    def bench_modules(self, everything: bool = False) -> list[Any]:
        return [self.model]

    def bench_flops(self, query_len: int, doc_len: int, batch: int, mode: str) -> float:
        from micebench.models import flops

        return flops.cross_encoder(query_len, doc_len, flops.shape_of(self.model.config))

    def bench_tokenize(self, query: str, docs: list[str], mode: str) -> Callable[[], Any] | None:
        return lambda: list(self.host_batches(query, docs))

    def bench_facts(self) -> dict[str, Any]:
        facts = {"attention": self.model.config._attn_implementation}
        if hasattr(self, "_bench_length"):
            facts["sequence_length"] = self._bench_length
        return facts

    def weight_modules(self) -> list[Any]:
        return [self.model]

    def head_dtype(self) -> Any:
        return modules_dtype(*classifier_head(self.model))

    def details(self) -> dict[str, Any]:
        facts = {"max_length": self.max_length, "batch_size": self.batch_size, "oom_backoffs": self.oom_backoffs}
        if self.onnx is not None:
            from micebench.models.onnx import ONNX_INT8_METHOD

            facts["backend"] = f"onnxruntime {self.onnx.onnxruntime}"
            if self.precision == "onnx-int8":
                facts["quantization"] = ONNX_INT8_METHOD
        return facts
