"""`micebench latency`: model-only timing of several rankers, interleaved, on synthetic exact-length inputs.

Each model is one of `ce`, a schedule preset (`mask2`, ...), `mice-l<k>+<m>[:none|states|kv]` or
`colbert[:none|precomputed]`. The real ranker classes are used (their fast paths are what is measured); weights
come from `--checkpoint` or are random, from an architecture config built in code (saved to a temporary folder
with the packaged BERT tokenizer), so nothing is downloaded.
"""

from __future__ import annotations

import math
import os
import platform
import resource
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from micebench.errors import MicebenchError
from micebench.latency import flops as F
from micebench.latency.architectures import architecture_config
from micebench.latency.timer import Clock, interleaved
from micebench.rankers.models import count_parameters, pick_device, pick_dtype
from micebench.schedules import is_preset


@dataclass
class LatencyConfig:
    """One latency run; stored verbatim in the result."""

    models: list[str] = field(default_factory=lambda: ["ce", "mice-l4+3:states"])
    batch: int = 64
    query_len: int = 32
    doc_len: int = 512
    precompute: str = "none"
    device: str = "auto"
    dtype: str = "fp32"
    warmup: int = 3
    repeats: int = 10
    arch: str = "minilm-l12"
    checkpoint: str | None = None
    include_tokenization: bool = False
    docs_per_query: int = 1000
    compile: bool = False
    seed: int = 0


@dataclass
class BenchModel:
    """A prepared model: a zero-argument call that scores one batch, its FLOPs and facts."""

    name: str
    kind: str
    precompute: str
    call: Callable[[], Any]
    flops_per_doc: float
    params: int
    tokenize: Callable[[], Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def parse_model(spec: str, default_precompute: str) -> tuple[str, str]:
    """`mice-l4+3:kv` -> ("mice-l4+3", "kv"); checks that the precompute mode exists for that model."""
    name, _, mode = spec.partition(":")
    mode = mode or default_precompute
    if name == "ce" or name == "masked-ce" or is_preset(name):
        if mode not in ("none",):
            if ":" in spec:
                raise MicebenchError(f"{spec}: a cross-encoder has nothing to precompute (documents meet the query)")
            mode = "none"
        return name, mode
    if name.startswith("mice-l"):
        if mode not in ("none", "states", "kv"):
            raise MicebenchError(f"{spec}: MICE precompute is none, states or kv")
        return name, mode
    if name == "colbert":
        if mode in ("states", "precomputed", "embeddings"):
            mode = "precomputed"
        elif mode == "kv":
            raise MicebenchError(f"{spec}: ColBERT has no cross-attention, so no kv mode (use precomputed)")
        elif mode != "none":
            raise MicebenchError(f"{spec}: ColBERT precompute is none or precomputed")
        return name, mode
    raise MicebenchError(f"unknown model {spec!r} for latency (ce, mask<...>, mice-l<k>+<m>[:mode], colbert[:mode])")


def synthetic_ids(tokenizer: Any, rows: int, length: int, gen: torch.Generator) -> torch.Tensor:
    """`[CLS] w... [SEP]` of exactly `length` tokens, words drawn from the ordinary vocabulary."""
    low = max(tokenizer.all_special_ids) + 1
    body = torch.randint(low, tokenizer.vocab_size, (rows, length - 2), generator=gen)
    cls = torch.full((rows, 1), tokenizer.cls_token_id)
    sep = torch.full((rows, 1), tokenizer.sep_token_id)
    return torch.cat([cls, body, sep], dim=1)


def _texts(tokenizer: Any, ids: torch.Tensor) -> list[str]:
    return tokenizer.batch_decode(ids[:, 1:-1])


class LatencyBench:
    """Builds the models of a LatencyConfig on one device and measures them."""

    def __init__(self, config: LatencyConfig):
        self.config = config
        if config.batch < 1:
            raise MicebenchError(f"batch must be at least 1 (got {config.batch})")
        for spec in config.models:  # names and modes first, before any model work
            parse_model(spec, config.precompute)
        if config.query_len < 3 or config.doc_len < 3:
            raise MicebenchError("query and document lengths count [CLS] and [SEP]: use at least 3 tokens")
        self.device = pick_device(config.device)
        self.dtype = pick_dtype(config.dtype)
        self.gen = torch.Generator().manual_seed(config.seed)
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.checkpoint = config.checkpoint or self._random_checkpoint(config.arch)
        self.hf_config = self._read_config(self.checkpoint)
        max_pos = int(self.hf_config.max_position_embeddings)
        if config.doc_len > max_pos or config.query_len > max_pos:
            raise MicebenchError(
                f"document length {config.doc_len} / query length {config.query_len} exceed the model's maximum of "
                f"{max_pos} positions"
            )
        self.shape = F.Shape(
            self.hf_config.num_hidden_layers,
            self.hf_config.hidden_size,
            self.hf_config.intermediate_size,
            max_pos,
            glu=self.hf_config.model_type == "modernbert",
        )

    def _random_checkpoint(self, arch: str) -> str:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from micebench.rankers.models import resolve_model

        hf_logging.disable_progress_bar()

        config = architecture_config(arch)
        torch.manual_seed(self.config.seed)
        self._tmp = tempfile.TemporaryDirectory(prefix="micebench-latency-")
        AutoModelForSequenceClassification.from_config(config).save_pretrained(self._tmp.name)
        AutoTokenizer.from_pretrained(resolve_model("minilm-l6")).save_pretrained(self._tmp.name)
        return self._tmp.name

    @staticmethod
    def _read_config(checkpoint: str) -> Any:
        from transformers import AutoConfig

        from micebench.rankers.models import load_pretrained

        return load_pretrained(AutoConfig, checkpoint)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()

    # -- model builders -----------------------------------------------------------------------------------------
    def build(self, spec: str) -> BenchModel:
        name, mode = parse_model(spec, self.config.precompute)
        if name == "ce" or name == "masked-ce" or is_preset(name):
            return self._cross_encoder(name)
        if name.startswith("mice-l"):
            return self._mice(name, mode)
        return self._colbert(mode)

    def _load(self, name: str, **options: Any) -> Any:
        from micebench.rankers.base import load_ranker

        torch.manual_seed(self.config.seed)
        return load_ranker(
            name,
            checkpoint=self.checkpoint,
            device=str(self.device),
            dtype=self.config.dtype,
            batch_size=self.config.batch,
            **options,
        )

    def _pairs(self, tokenizer: Any) -> tuple[torch.Tensor, torch.Tensor]:
        b, lq, ld = self.config.batch, self.config.query_len, self.config.doc_len
        return synthetic_ids(tokenizer, 1, lq, self.gen), synthetic_ids(tokenizer, b, ld, self.gen)

    def _cross_encoder(self, name: str) -> BenchModel:
        ranker = self._load(name) if name != "masked-ce" else self._load(name, schedule="none")
        q, d = self._pairs(ranker.tokenizer)
        length = F.cross_encoder_length(self.config.query_len, self.config.doc_len, self.shape)
        ids = torch.cat([q.expand(len(d), -1), d[:, 1:]], dim=1)[:, :length]
        ids[:, -1] = ranker.tokenizer.sep_token_id
        types = torch.zeros_like(ids)
        types[:, q.shape[1] :] = 1
        batch = {"input_ids": ids, "token_type_ids": types, "attention_mask": torch.ones_like(ids)}
        batch = {k: v.to(ranker.device) for k, v in batch.items()}
        module = self._maybe_compile(ranker.model)
        if module is not ranker.model:
            ranker.model = module

        def call() -> Any:
            with torch.inference_mode():
                return ranker.forward(batch).logits

        q_text, d_text = _texts(ranker.tokenizer, q) * len(d), _texts(ranker.tokenizer, d)
        tokenize = lambda: ranker.tokenize_pairs(q_text, d_text)  # noqa: E731
        return BenchModel(
            name,
            "cross-encoder",
            "none",
            call,
            F.cross_encoder(self.config.query_len, self.config.doc_len, self.shape),
            count_parameters(ranker.model),
            tokenize,
            {"attention": ranker.model.config._attn_implementation, "sequence_length": length},
        )

    def _mice(self, name: str, mode: str) -> BenchModel:
        from micebench.store.document_store import PackedTensors

        ranker = self._load(name, untrained=True)
        q, d = self._pairs(ranker.tokenizer)
        q_ids, q_mask = q.to(self.device), torch.ones_like(q).to(self.device)
        d_ids, d_mask = d.to(self.device), torch.ones_like(d).to(self.device)
        model = ranker.model
        rows = torch.arange(len(d), device=self.device)
        if mode == "none":

            def call() -> Any:
                with torch.inference_mode():
                    qs = (model.encode_bottom(q_ids, q_mask), q_mask)
                    return ranker._score(qs, d_mask, d_states=model.encode_bottom(d_ids, d_mask))
        else:
            with torch.inference_mode():
                fields, _ = ranker.store_fields(mode)
                tensors, mask = ranker.store_encode_ids(d_ids, d_mask, mode)
                packed = {f: tensors[f][mask.bool()].to(self.dtype) for f in fields}
            store = PackedTensors(packed, mask.sum(1).to(self.device))

            def call() -> Any:
                with torch.inference_mode():
                    qs = (model.encode_bottom(q_ids, q_mask), q_mask)
                    return ranker.score_rows(qs, store, mode, rows)

        q_text, d_text = _texts(ranker.tokenizer, q)[0], _texts(ranker.tokenizer, d)
        tokenize = (
            (lambda: (ranker._tokenize([q_text], 64), ranker._tokenize(d_text, 512)))
            if mode == "none"
            else (lambda: ranker._tokenize([q_text], 64))
        )
        flops = F.mice(
            self.config.query_len,
            self.config.doc_len,
            self.shape,
            model.mice.merge_layer,
            model.mice.top_layers,
            self.config.batch,
            mode,
        )
        return BenchModel(name, "mice", mode, call, flops, count_parameters(model), tokenize, {"attention": "sdpa"})

    def _colbert(self, mode: str) -> BenchModel:
        from micebench.store.document_store import PackedTensors

        ranker = self._load("colbert", query_length=self.config.query_len, doc_length=self.config.doc_len)
        q, d = self._pairs(ranker.tokenizer)
        q_ids, d_ids = q.to(self.device), d.to(self.device)
        q_mask, d_mask = torch.ones_like(q_ids), torch.ones_like(d_ids)
        if mode == "none":

            def call() -> Any:
                with torch.inference_mode():
                    emb = ranker._embed(d_ids, d_mask)
                    return ranker.maxsim(ranker._embed(q_ids, q_mask)[0], emb, d_mask)
        else:
            with torch.inference_mode():
                emb = ranker._embed(d_ids, d_mask)
            store = PackedTensors({"embeddings": emb[d_mask.bool()]}, d_mask.sum(1))
            rows = torch.arange(len(d), device=self.device)

            def call() -> Any:
                with torch.inference_mode():
                    tensors, keep = store.gather(rows)
                    return ranker.maxsim(ranker._embed(q_ids, q_mask)[0], tensors["embeddings"], keep)

        dim = ranker.projection.out_features
        flops = F.colbert(self.config.query_len, self.config.doc_len, self.shape, dim, self.config.batch, mode)
        params = count_parameters(ranker.encoder) + count_parameters(ranker.projection)
        return BenchModel("colbert", "colbert", mode, call, flops, params, None, {"attention": "sdpa", "dim": dim})

    def _maybe_compile(self, module: Any) -> Any:
        return torch.compile(module) if self.config.compile else module

    # -- measurement --------------------------------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        models = [self.build(spec) for spec in self.config.models]
        labels = [f"{m.name}:{m.precompute}" if m.kind != "cross-encoder" else m.name for m in models]
        if len(set(labels)) != len(labels):
            raise MicebenchError("the same model is listed twice")
        clock = Clock(self.device)
        cuda = self.device.type == "cuda"
        try:
            stats = interleaved(
                dict(zip(labels, (m.call for m in models), strict=True)), clock, self.config.warmup, self.config.repeats
            )
        except torch.cuda.OutOfMemoryError:
            raise MicebenchError(
                f"out of GPU memory at batch {self.config.batch}: latency never changes the batch by itself, "
                "lower --batch"
            ) from None
        tokenize = {}
        if self.config.include_tokenization:
            calls = {lab: m.tokenize for lab, m in zip(labels, models, strict=True) if m.tokenize is not None}
            tokenize = interleaved(calls, Clock("cpu"), 1, max(3, self.config.repeats // 2))
        peaks = {}
        for label, model in zip(labels, models, strict=True):
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                model.call()
                torch.cuda.synchronize()
                peaks[label] = (torch.cuda.max_memory_allocated() - base) / 2**20
        rows = []
        reference = next((lab for lab in labels if lab in ("ce",)), None)
        for label, model in zip(labels, models, strict=True):
            timing = stats[label].as_dict()
            seconds = stats[label].median
            row = {
                "model": model.name,
                "label": label,
                "precompute": model.precompute,
                "batch": self.config.batch,
                "query_len": self.config.query_len,
                "doc_len": self.config.doc_len,
                "params": model.params,
                "flops_per_doc": model.flops_per_doc,
                **timing,
                "docs_per_s": self.config.batch / seconds,
                "per_query_ms": math.ceil(self.config.docs_per_query / self.config.batch) * seconds * 1e3,
                "achieved_gflops": model.flops_per_doc * self.config.batch / seconds / 1e9,
                "peak_memory_mb": peaks.get(label),
                **model.extra,
            }
            if label in tokenize:
                row["tokenize_ms"] = tokenize[label].median * 1e3
                row["total_ms"] = row["median_ms"] + row["tokenize_ms"]
            rows.append(row)
        if reference is not None:
            ref = next(r for r in rows if r["label"] == reference)
            for row in rows:
                row["speedup_vs_ce"] = ref["median_ms"] / row["median_ms"]
                row["flop_ratio_vs_ce"] = ref["flops_per_doc"] / row["flops_per_doc"]
                row["share_of_flop_ratio"] = row["speedup_vs_ce"] / row["flop_ratio_vs_ce"]
        return rows

    def environment(self) -> dict[str, Any]:
        from micebench.results import environment

        device_name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else _cpu_name()
        return {
            "device": str(self.device),
            "device_name": device_name,
            "threads": torch.get_num_threads(),
            "dtype": self.config.dtype,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "weights": self.config.checkpoint or f"random ({self.config.arch})",
            "timing": "CUDA events" if self.device.type == "cuda" else "wall clock (perf_counter)",
            "covers": "model only per batch (one query, `batch` documents)"
            + ("; tokenisation timed separately" if self.config.include_tokenization else ""),
            **environment(),
            "config": asdict(self.config),
        }


def measure(config: LatencyConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Build, time and describe the models of `config`; returns (rows, environment)."""
    bench = LatencyBench(config)
    try:
        return bench.run(), bench.environment()
    finally:
        bench.close()


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} logical cores)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_latency(rows: list[dict[str, Any]], meta: dict[str, Any], folder: Path, run: str) -> tuple[Path, Path]:
    """results/latency/<run>.json (meta + rows) and .csv (rows), written atomically."""
    import json

    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = folder / f"{run}.json", folder / f"{run}.csv"
    from micebench.atomic import atomic_write_text

    atomic_write_text(json_path, json.dumps({"meta": meta, "rows": rows}, indent=2, default=_jsonable) + "\n")
    atomic_write_text(csv_path, pd.DataFrame(rows).to_csv(index=False))
    return json_path, csv_path


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
