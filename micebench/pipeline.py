"""One evaluation run in named stages: check inputs -> candidates -> ranker -> resumable scoring -> evaluation -> write.

Every input is checked (model options, dataset, result folder, candidates and their texts) before the model
loads, so a bad input costs no model load and leaves nothing behind.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from micebench.data import Dataset, load_dataset
from micebench.data.trec import Run, ranked
from micebench.errors import DataError, MicebenchError
from micebench.evaluation import DEFAULT_MEASURES, Evaluation, evaluate
from micebench.firststage.candidates import Candidates, first_stage
from micebench.frames import candidates_frame, check_queries
from micebench.rankers.base import Ranker, ranker_options, resolve_ranker
from micebench.results import environment, is_complete, result_dir, write_result

log = logging.getLogger("micebench")


@dataclass
class RunConfig:
    """Everything that decides a run's output; stored verbatim in its manifest."""

    model: str
    dataset: str
    first_stage: str = "auto"
    top_k: int = 100
    #: the ranker options given (checkpoint, max_length, device, ...), checked against the model's declaration
    options: dict[str, Any] = field(default_factory=dict)
    output: str = "results"
    seed: int = 0
    data_dir: str | None = None
    split: str | None = None
    name: str | None = None
    overwrite: bool = False
    measures: list[str] = field(default_factory=lambda: list(DEFAULT_MEASURES))
    #: put the result in a seed-<S> sub-folder (experiments with several seeds)
    seed_folder: bool = False
    #: continue an interrupted run from its recorded per-query progress
    resume: bool = False
    #: queries scored between two durable progress records
    chunk_queries: int = 16

    def __post_init__(self) -> None:
        self.options = {k: v for k, v in self.options.items() if v is not None}

    def ranker_label(self) -> str:
        """Result-folder name of the ranker: `--name`, else the model's label plus a given checkpoint's name."""
        if self.name:
            return self.name
        cls, _ = resolve_ranker(self.model)
        label = cls.run_label(self.model, self.options)
        checkpoint = self.options.get("checkpoint")
        if checkpoint:
            from micebench.models.hf import resolve_model

            return f"{label}-{Path(resolve_model(checkpoint)).name}"
        return label


@dataclass
class RunResult:
    """What a finished run produced."""

    folder: Path
    evaluation: Evaluation
    manifest: dict[str, Any]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (when loaded) for reproducible runs."""
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.manual_seed(seed)


def result_folder(config: RunConfig, dataset_name: str) -> Path:
    """Where a run's result lives: `<output>/<dataset>/<ranker>[/seed-<S>]`."""
    folder = result_dir(config.output, dataset_name, config.ranker_label())
    return folder / f"seed-{config.seed}" if config.seed_folder else folder


# -- stages ---------------------------------------------------------------------------------------------------


def check_inputs(config: RunConfig) -> tuple[Dataset, Path]:
    """Model name and options, sizes, dataset, queries and the result folder: all before any model work."""
    ranker_options(config.model, **config.options)
    if config.top_k < 1:
        raise MicebenchError(f"--top-k must be at least 1 (got {config.top_k})")
    if config.chunk_queries < 1:
        raise MicebenchError(f"--chunk-queries must be at least 1 (got {config.chunk_queries})")
    dataset = load_dataset(config.dataset, config.data_dir, config.split)
    folder = result_folder(config, dataset.name)
    if folder.exists() and not config.overwrite:
        state = "finished" if is_complete(folder) else "existing"
        raise MicebenchError(f"{state} result at {folder} (use --overwrite to replace it)")
    check_queries(dataset.judged_queries())
    orphans = sorted(set(dataset.qrels()) - set(dataset.queries()))
    if orphans:
        raise DataError(f"{len(orphans)} judged query ids are absent from the queries (e.g. {orphans[0]!r})")
    return dataset, folder


def candidate_stage(config: RunConfig, dataset: Dataset) -> tuple[Candidates, pd.DataFrame]:
    """First-stage candidates of the judged queries as a frame, with texts when the ranker reads them."""
    cls, fixed = resolve_ranker(config.model)
    candidates = first_stage(dataset, config.first_stage, config.top_k)
    if cls.requires_bm25_first_stage and not candidates.is_bm25:
        raise MicebenchError(
            f"model {config.model!r} is the BM25 first stage itself; use --first-stage auto|bm25|dataset:bm25 "
            "(or --model first-stage to evaluate other candidates as they are)"
        )
    with_text = cls.reads_text({**config.options, **fixed})
    return candidates, candidates_frame(dataset, candidates, with_text)


def ranker_stage(config: RunConfig, device: str | None) -> Ranker:
    """Load the ranker with the given options (the device a torchrun rank must use replaces the given one)."""
    from micebench.rankers.base import load_ranker, option_names

    options = dict(config.options)
    if device is not None and device != options.get("device", "auto") and "device" in option_names(config.model):
        options["device"] = device
    ranker = load_ranker(config.model, **options)
    ranker.check_ready_for_effectiveness()
    return ranker


def score_in_chunks(ranker: Ranker, frame: pd.DataFrame, partial: Any, world: Any, chunk_queries: int) -> None:
    """Re-rank this rank's queries chunk by chunk, recording each finished chunk; skips recorded ones."""
    qids = sorted(frame["qid"].unique())[world.rank :: world.world]
    done = partial.done()
    todo = [q for q in qids if q not in done]
    if not todo:
        return
    ranker.prepare(frame)  # whole-frame work (e.g. dense embeddings), identical however the run is split
    groups = frame.groupby("qid", sort=False).indices
    for start in range(0, len(todo), chunk_queries):
        chunk = todo[start : start + chunk_queries]
        rows = np.concatenate([groups[q] for q in chunk])
        scored = ranker.rerank(frame.iloc[np.sort(rows)].reset_index(drop=True))
        partial.append(list(zip(scored["qid"], scored["docno"], scored["score"].astype(float), strict=True)))


def finished_run(partial: Any, frame: pd.DataFrame, candidates: Candidates, top_k: int) -> Run:
    """The merged scores of every rank as a run (a full-corpus first stage keeps the best `top_k`)."""
    scores = partial.finished_run()
    missing = set(frame["qid"].unique()) - scores.keys()
    if missing:
        raise MicebenchError(f"{len(missing)} queries have no scores after re-ranking (e.g. {sorted(missing)[0]!r})")
    return {q: dict(ranked(docs)[:top_k]) if candidates.full_corpus else docs for q, docs in scores.items()}


def run_manifest(
    config: RunConfig,
    digest: str,
    ranker: Ranker,
    dataset: Dataset,
    candidates: Candidates,
    pairs: int,
    world_size: int,
    timings: dict[str, float],
) -> dict[str, Any]:
    """The provenance record of a run: configuration, the options that took effect, data, timings, environment."""
    return {
        "config": asdict(config),
        "config_hash": digest,
        "ranker_label": config.ranker_label(),
        "ranker_options": ranker.effective_options(),
        "ranker": ranker.describe(),
        "dataset": dataset.describe(),
        "first_stage": {"source": candidates.source, "top_k": config.top_k, "pairs": pairs},
        "seed": config.seed,
        "world_size": world_size,
        "timings": timings,
        **environment(),
    }


def run_experiment(config: RunConfig, ranker: Ranker | None = None) -> RunResult | None:
    """Run one (dataset, ranker) evaluation and write its result folder; see RunConfig for the knobs.

    Under torchrun every rank scores its share of the queries; rank 0 merges and writes (others return None).
    """
    from micebench.runstate import Distributed, PartialScores, ResultLock, config_hash

    timings: dict[str, float] = {}
    started = time.perf_counter()
    dataset, folder = check_inputs(config)
    world = Distributed.from_env(config.options.get("device", "auto"))
    seed_everything(config.seed)

    with ResultLock(folder, world.rank):
        partial = PartialScores(folder, config_hash(asdict(config)), world.rank)
        partial.check(config.resume, config.overwrite)
        candidates, frame = candidate_stage(config, dataset)
        timings["first_stage_s"] = time.perf_counter() - started
        world.barrier()

        t0 = time.perf_counter()
        if ranker is None:
            ranker = ranker_stage(config, world.device(config.options.get("device", "auto")))
        timings["load_model_s"] = time.perf_counter() - t0

        partial.create()
        t0 = time.perf_counter()
        score_in_chunks(ranker, frame, partial, world, config.chunk_queries)
        timings["rerank_s"] = time.perf_counter() - t0
        world.barrier()
        if world.rank != 0:
            return None
        run = finished_run(partial, frame, candidates, config.top_k)

        t0 = time.perf_counter()
        evaluation = evaluate(dataset.qrels(), run, config.measures, rel_level=dataset.relevance_level)
        timings["evaluate_s"] = time.perf_counter() - t0
        timings["total_s"] = time.perf_counter() - started

        manifest = run_manifest(config, partial.digest, ranker, dataset, candidates, len(frame), world.world, timings)
        write_result(folder, run, evaluation, manifest, tag=slug_tag(config.ranker_label()), overwrite=config.overwrite)
        partial.remove()
    return RunResult(folder, evaluation, manifest)


def slug_tag(label: str) -> str:
    """A run tag without whitespace (TREC format)."""
    return "".join(ch if not ch.isspace() else "_" for ch in label)
