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
from typing import Any, ClassVar

import numpy as np
import torch

from micebench.errors import MicebenchError
from micebench.latency.architectures import architecture_config
from micebench.latency.load import LoadMeter
from micebench.latency.timer import Clock, interleaved, peak_memory_mb, peak_rss_mb
from micebench.models.hf import count_parameters, pick_device, pick_dtype


@dataclass
class LatencyConfig:
    """One latency run; stored verbatim in the result."""

    models: list[str] = field(default_factory=lambda: ["ce", "mice-l4+3:states"])
    batch: int = 64
    query_len: int = 32
    doc_len: int = 512
    precompute: str = "none"
    device: str = "auto"
    #: compute precision(s): fp32 | fp16 | bf16 | int8, or a comma list to time every model on each, interleaved
    dtype: str = "fp32"
    warmup: int = 3
    repeats: int = 10
    arch: str = "minilm-l12"
    checkpoint: str | None = None
    include_tokenization: bool = False
    docs_per_query: int = 1000
    compile: bool = False
    seed: int = 0
    #: CPU threads for torch (None: torch's default, every core)
    threads: int | None = None
    #: other ranker options (schedule, MICE attention, ColBERT dim...): each timed model gets those it declares
    options: dict[str, Any] = field(default_factory=dict)

    #: the paper's timing protocol (`--paper-setup`): batch 128, 512-token documents, 32-token queries, fp32,
    #: tokenisation timed apart
    PAPER_SETUP: ClassVar[dict[str, Any]] = {
        "batch": 128, "doc_len": 512, "query_len": 32, "dtype": "fp32", "include_tokenization": True
    }  # fmt: skip

    def __post_init__(self) -> None:
        if self.repeats < 1 or self.warmup < 0:
            raise MicebenchError("--repeats must be at least 1 and --warmup at least 0")

    @property
    def precisions(self) -> list[str]:
        """The compute precisions to time, in the order given (`--dtype fp32,int8`)."""
        return [p.strip() for p in str(self.dtype).split(",") if p.strip()]


@dataclass
class BenchModel:
    """A prepared model: a zero-argument call that scores one batch, its FLOPs and facts."""

    name: str
    precompute: str
    call: Callable[[], Any]
    flops_per_doc: float
    params: int
    tokenize: Callable[[], Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: the row's name: the model, with `:mode` for models that have more than one latency mode
    label: str = ""
    #: the compute precision it runs in (fp32, bf16, int8...)
    precision: str = "fp32"

    @property
    def key(self) -> str:
        """The model's name in a run timing several precisions: `label@precision`."""
        return f"{self.label}@{self.precision}"


def parse_model(spec: str, default_precompute: str) -> tuple[str, str]:
    """`mice-l4+3:kv` -> ("mice-l4+3", "kv"): the model must be Benchmarkable and the mode one it declares.

    Without `:mode` the run-wide default applies where the model has it (a cross-encoder has nothing to
    precompute, so it is timed as `none`). Only the registry is consulted: no model loads.
    """
    from micebench.rankers.base import Benchmarkable, rankers_with, resolve_ranker

    name, _, mode = spec.partition(":")
    cls, _ = resolve_ranker(name)
    if not issubclass(cls, Benchmarkable):
        timed = ", ".join(rankers_with(Benchmarkable))
        raise MicebenchError(f"model {name!r} cannot be timed by latency (timed: {timed} and their presets)")
    return name, cls.resolve_bench_mode(name, mode, default_precompute)


def bench_modes() -> set[str]:
    """Every mode (and alias) some timed ranker knows: what `--precompute`, the default mode, may name."""
    from micebench.rankers.base import Benchmarkable, rankers_with, resolve_ranker

    classes = [resolve_ranker(name)[0] for name in rankers_with(Benchmarkable)]
    return {mode for cls in classes for mode in (*cls.bench_modes, *cls.bench_mode_aliases)}


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
        if config.docs_per_query < 1:
            raise MicebenchError(f"--docs-per-query must be at least 1 (got {config.docs_per_query})")
        if not config.models:
            raise MicebenchError("--models names no model (a comma list, e.g. ce,mice-l4+3:kv)")
        known = bench_modes()
        if config.precompute not in known:
            raise MicebenchError(f"unknown --precompute {config.precompute!r} (use {', '.join(sorted(known))})")
        for spec in config.models:  # names and modes first, before any model work
            parse_model(spec, config.precompute)
        check_options_apply(config)
        if config.query_len < 3 or config.doc_len < 3:
            raise MicebenchError("query and document lengths count [CLS] and [SEP]: use at least 3 tokens")
        self.threads = checked_threads(config.threads)
        self.device = pick_device(config.device)
        if self.device.type == "cuda":  # events, synchronisation and memory statistics follow the current GPU
            torch.cuda.set_device(self.device)
        if not config.precisions:
            raise MicebenchError("--dtype names no precision (fp32, fp16, bf16, int8, or a comma list)")
        if len(set(config.precisions)) != len(config.precisions):
            raise MicebenchError("the same precision is listed twice in --dtype")
        for precision in config.precisions:
            pick_dtype(precision)
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
        self._threads_before = torch.get_num_threads()  # set last: a refused config leaves torch as it was
        torch.set_num_threads(self.threads)
        self.load = LoadMeter(os.cpu_count() or 1, self.threads)

    def _random_checkpoint(self, arch: str) -> str:
        """A random encoder of `arch` with the packaged tokenizer, in a temporary folder; saved without a classifier
        head (the cross-encoders give themselves a fresh one) so that no timed model leaves weights unused."""
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from micebench.models.hf import resolve_model

        hf_logging.disable_progress_bar()

        config = architecture_config(arch)
        torch.manual_seed(self.config.seed)
        self._tmp = tempfile.TemporaryDirectory(prefix="micebench-latency-")
        AutoModel.from_config(config).save_pretrained(self._tmp.name)
        AutoTokenizer.from_pretrained(resolve_model("minilm-l6")).save_pretrained(self._tmp.name)
        return self._tmp.name

    @staticmethod
    def _read_config(checkpoint: str) -> Any:
        from transformers import AutoConfig

        from micebench.models.hf import load_pretrained

        return load_pretrained(AutoConfig, checkpoint)

    def close(self) -> None:
        torch.set_num_threads(self._threads_before)  # a test or notebook calling on gets its threads back
        if self._tmp is not None:
            self._tmp.cleanup()

    # -- models -------------------------------------------------------------------------------------------------
    def build(self, spec: str, precision: str | None = None) -> BenchModel:
        """Load the ranker of `spec` on the bench's weights in `precision` (default: the first of `--dtype`) and
        prepare its timed call on synthetic tokens."""
        from micebench.rankers.base import declared_options, load_ranker

        name, mode = parse_model(spec, self.config.precompute)
        torch.manual_seed(self.config.seed)
        given = {
            **self.config.options,
            "checkpoint": self.checkpoint,
            "device": str(self.device),
            "dtype": precision or self.config.precisions[0],
            "batch_size": self.config.batch,
            "untrained": True,
        }
        ranker = load_ranker(name, **declared_options(name, **given))
        b, lq, ld = self.config.batch, self.config.query_len, self.config.doc_len
        query_ids = synthetic_ids(ranker.tokenizer, 1, lq, self.gen)
        doc_ids = synthetic_ids(ranker.tokenizer, b, ld, self.gen)
        if self.config.compile:
            for module in ranker.bench_modules():
                module.compile()
        call = ranker.bench_call(query_ids, doc_ids, mode)
        query_text, doc_texts = _texts(ranker.tokenizer, query_ids)[0], _texts(ranker.tokenizer, doc_ids)
        return BenchModel(
            name,
            mode,
            call,
            ranker.bench_flops(lq, ld, b, mode),
            sum(count_parameters(m) for m in ranker.bench_modules(everything=True)),
            ranker.bench_tokenize(query_text, doc_texts, mode),
            ranker.bench_facts(),
            label=name if len(type(ranker).bench_modes) == 1 else f"{name}:{mode}",
            precision=precision or self.config.precisions[0],
        )

    # -- measurement --------------------------------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        if len({parse_model(spec, self.config.precompute) for spec in self.config.models}) != len(self.config.models):
            raise MicebenchError("the same model is listed twice")
        models = [self.build(spec, p) for p in self.config.precisions for spec in self.config.models]
        labels = [m.key for m in models]
        clock = Clock(self.device)
        cuda = self.device.type == "cuda"
        calls = dict(zip(labels, (m.call for m in models), strict=True))
        try:
            stats = self.time_calls(calls, clock)
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
            peaks[label] = peak_memory_mb(self.device, model.call) if cuda else peak_rss_mb(model.call)
        rows = []
        for label, model in zip(labels, models, strict=True):
            timing = stats[label].as_dict()
            seconds = stats[label].median
            row = {
                "model": model.name,
                "label": model.label,
                "precision": model.precision,
                "dtype": model.precision,
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
                "busy": self.load.busy,
            }
            if label in tokenize:
                row["tokenize_ms"] = tokenize[label].median * 1e3
                row["total_ms"] = row["median_ms"] + row["tokenize_ms"]
            rows.append(row)
        for precision in self.config.precisions:  # every ratio at equal precision: ce in the same precision
            mine = [r for r in rows if r["precision"] == precision]
            ref = next((r for r in mine if r["label"] == "ce"), None)
            for row in mine if ref is not None else []:
                row["speedup_vs_ce"] = ref["median_ms"] / row["median_ms"]
                row["flop_ratio_vs_ce"] = ref["flops_per_doc"] / row["flops_per_doc"]
                row["share_of_flop_ratio"] = row["speedup_vs_ce"] / row["flop_ratio_vs_ce"]
            base = next((r for r in rows if r["label"] == "ce" and r["precision"] == self.config.precisions[0]), None)
            for row in mine if base is not None and len(self.config.precisions) > 1 else []:
                row["speedup_vs_ce_" + self.config.precisions[0]] = base["median_ms"] / row["median_ms"]
        return rows

    def time_calls(self, calls: dict[str, Callable[[], Any]], clock: Clock) -> dict[str, Any]:
        """Interleaved timing with progress; the first call of each model (a warm-up call) gives the time the rest
        will take, which is said before it starts. The machine's load is measured over the timed calls."""
        from micebench.progress import progress_bar

        first = {label: clock.time(fn) for label, fn in calls.items()}
        warmup = max(self.config.warmup - 1, 0)
        rounds = warmup + self.config.repeats
        total = rounds * len(calls)
        with progress_bar("timing", total=total, unit="calls") as bar:
            bar.describe(
                f"timing {len(calls)} models, {rounds} more calls each: about {sum(first.values()) * rounds:.0f} s "
                f"(first calls: {', '.join(f'{k} {v:.2f} s' for k, v in first.items())})"
            )
            stats = interleaved(calls, clock, warmup, self.config.repeats, on_warm=self.load.start, tick=bar.advance)
        self.load.stop()
        return stats

    def environment(self) -> dict[str, Any]:
        from micebench.results import environment

        device_name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else _cpu_name()
        return {
            "device": str(self.device),
            "device_name": device_name,
            "threads": torch.get_num_threads(),
            "load": self.load.facts(),
            "dtype": self.config.dtype,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_memory": "CUDA allocator peak above the memory allocated before the call"
            if self.device.type == "cuda"
            else "peak resident memory (Linux VmHWM, reset before the call) above the resident memory before it",
            "weights": self.config.checkpoint or f"random ({self.config.arch})",
            "timing": "CUDA events" if self.device.type == "cuda" else "wall clock (perf_counter)",
            "covers": "model only per batch (one query, `batch` documents)"
            + ("; tokenisation timed separately" if self.config.include_tokenization else ""),
            **environment(),
            "config": asdict(self.config),
        }


def check_options_apply(config: LatencyConfig) -> None:
    """Refuse a ranker option that none of the timed models declares (it would change nothing)."""
    from micebench.rankers.base import accepts_option, ranker_options

    names = [parse_model(spec, config.precompute)[0] for spec in config.models]
    for option in config.options:
        if not any(accepts_option(name, option) for name in names):
            flag = "--" + option.replace("_", "-")
            raise MicebenchError(f"{flag} applies to none of the timed models ({', '.join(names)})")
    for name in names:
        takes = {k: v for k, v in config.options.items() if accepts_option(name, k)}
        ranker_options(name, **takes)  # types and ranges, and no contradiction with the name (mice-l4+3 --top-layers 2)


def checked_threads(threads: int | None) -> int:
    """The CPU threads to time with: `threads` (1 to the machine's logical cores, so that a user can time below
    the cores other processes leave free), or torch's current number when None."""
    if threads is None:
        return torch.get_num_threads()
    cores = os.cpu_count() or 1
    if not 1 <= threads <= cores:
        raise MicebenchError(f"--threads must be between 1 and {cores}, the machine's logical cores (got {threads})")
    return threads


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
