"""One evaluation run: dataset -> candidates -> ranker scores -> run -> metrics -> result folder."""

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
from micebench.rankers.base import Ranker, available_rankers, is_registered, load_ranker
from micebench.rankers.models import resolve_model
from micebench.results import environment, is_complete, result_dir, write_result

log = logging.getLogger("micebench")


@dataclass
class RunConfig:
    """Everything that decides a run's output; stored verbatim in its manifest."""

    model: str
    dataset: str
    first_stage: str = "auto"
    top_k: int = 100
    checkpoint: str | None = None
    schedule: str | None = None
    merge_layer: int | None = None
    top_layers: int | None = None
    precomputed: str | None = None
    untrained: bool = False
    max_length: int | None = None
    batch_size: int | None = None
    device: str = "auto"
    dtype: str = "fp32"
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

    def ranker_label(self) -> str:
        """Result-folder name of the ranker: `--name`, else the model plus a non-default checkpoint's name."""
        if self.name:
            return self.name
        label = self.model if not self.schedule else f"{self.model}-{Path(self.schedule).stem}"
        if self.model == "mice" and self.merge_layer and self.top_layers:
            label = f"mice-l{self.merge_layer}+{self.top_layers}"
        if self.checkpoint:
            return f"{label}-{Path(resolve_model(self.checkpoint)).name}"
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


def check_queries(queries: dict[str, str]) -> None:
    """Refuse empty query texts, naming them."""
    empty = sorted(qid for qid, text in queries.items() if not text.strip())
    if empty:
        raise DataError(f"{len(empty)} judged queries have empty text (e.g. query id {empty[0]!r})")


def candidates_frame(dataset: Dataset, candidates: Candidates, with_text: bool) -> pd.DataFrame:
    """The PyTerrier-style frame (qid, query, docno, text, score) the rankers consume."""
    queries = dataset.judged_queries()
    docnos = {d for docs in candidates.run.values() for d in docs}
    qrels_docs = {d for docs in dataset.qrels().values() for d in docs}
    texts = dataset.doc_texts(docnos | qrels_docs) if with_text else {}
    if with_text:
        missing = sorted(docnos - texts.keys())
        if missing:
            raise DataError(
                f"{len(missing)} candidate documents are not in the corpus of {dataset.name!r} "
                f"(e.g. {missing[0]!r}): the first stage does not match this collection"
            )
        unjudged_text = len(qrels_docs - texts.keys())
        if unjudged_text:
            log.warning("%d judged documents of %s are absent from the corpus", unjudged_text, dataset.name)
        empty = sum(1 for d in docnos if not texts[d].strip())
        if empty:
            log.warning("%d candidate documents have empty text", empty)
    rows = [(qid, docno, score) for qid in sorted(candidates.run) for docno, score in candidates.run[qid].items()]
    if not rows:
        raise DataError("the first stage returned no candidates for any judged query")
    frame = pd.DataFrame(rows, columns=["qid", "docno", "score"], dtype=object)
    frame["score"] = frame["score"].astype(np.float64)
    frame["query"] = frame["qid"].map(queries)
    frame["text"] = frame["docno"].map(texts) if with_text else ""
    return frame[["qid", "query", "docno", "text", "score"]]


def frame_to_run(frame: pd.DataFrame, top_k: int | None = None) -> Run:
    """{qid: {docno: score}} keeping the best `top_k` per query (frame is rank-sorted)."""
    if top_k is not None:
        frame = frame[frame["rank"] <= top_k]
    run: Run = {}
    for qid, docno, score in zip(frame["qid"], frame["docno"], frame["score"], strict=True):
        run.setdefault(qid, {})[docno] = float(score)
    return run


def build_ranker(config: RunConfig) -> Ranker:
    """Load the ranker named by the config with its options."""
    if config.schedule is not None and config.model != "masked-ce":
        raise MicebenchError(f"--schedule applies to --model masked-ce, not {config.model!r}")
    return load_ranker(
        config.model,
        schedule=config.schedule,
        checkpoint=config.checkpoint,
        merge_layer=config.merge_layer,
        top_layers=config.top_layers,
        precomputed=config.precomputed,
        untrained=config.untrained or None,
        max_length=config.max_length,
        batch_size=config.batch_size,
        device=config.device,
        dtype=config.dtype,
    )


def result_folder(config: RunConfig, dataset_name: str) -> Path:
    """Where a run's result lives: `<output>/<dataset>/<ranker>[/seed-<S>]`."""
    folder = result_dir(config.output, dataset_name, config.ranker_label())
    return folder / f"seed-{config.seed}" if config.seed_folder else folder


def run_experiment(config: RunConfig, ranker: Ranker | None = None) -> RunResult | None:
    """Run one (dataset, ranker) evaluation and write its result folder; see RunConfig for the knobs.

    Under torchrun every rank scores its share of the queries; rank 0 merges and writes (others return None).
    """
    from micebench.runstate import Distributed, PartialScores, ResultLock, config_hash

    timings: dict[str, float] = {}
    started = time.perf_counter()
    if ranker is None and not is_registered(config.model):
        known = ", ".join(available_rankers())
        raise MicebenchError(f"unknown model {config.model!r} (available: {known})")
    dataset = load_dataset(config.dataset, config.data_dir, config.split)
    folder = result_folder(config, dataset.name)
    if folder.exists() and not config.overwrite:
        state = "finished" if is_complete(folder) else "existing"
        raise MicebenchError(f"{state} result at {folder} (use --overwrite to replace it)")
    check_queries(dataset.judged_queries())
    orphans = sorted(set(dataset.qrels()) - set(dataset.queries()))
    if orphans:
        raise DataError(f"{len(orphans)} judged query ids are absent from the queries (e.g. {orphans[0]!r})")
    world = Distributed.from_env(config.device)
    seed_everything(config.seed)

    with ResultLock(folder, world.rank):
        partial = PartialScores(folder, config_hash(asdict(config)), world.rank)
        partial.check(config.resume, config.overwrite)
        world.barrier()
        if ranker is None:
            device = world.device(config.device)
            ranker = build_ranker(
                config if device == config.device else RunConfig(**{**asdict(config), "device": device})
            )
        if config.precomputed and getattr(ranker, "store", None) is None:
            raise MicebenchError(
                f"model {config.model!r} does not use a document store (--precomputed is for mice, colbert)"
            )
        ranker.check_ready_for_effectiveness()
        timings["load_model_s"] = time.perf_counter() - started

        t0 = time.perf_counter()
        candidates = first_stage(dataset, config.first_stage, config.top_k)
        if getattr(ranker, "requires_bm25_first_stage", False) and not candidates.is_bm25:
            raise MicebenchError(
                f"model {ranker.name!r} is the BM25 first stage itself; use --first-stage auto|bm25|dataset:bm25 "
                "(or --model first-stage to evaluate other candidates as they are)"
            )
        frame = candidates_frame(dataset, candidates, ranker.needs_text)
        timings["first_stage_s"] = time.perf_counter() - t0

        partial.create()
        t0 = time.perf_counter()
        score_in_chunks(ranker, frame, partial, world, config.chunk_queries)
        timings["rerank_s"] = time.perf_counter() - t0
        world.barrier()
        if world.rank != 0:
            return None
        scores = partial.finished_run()
        missing = set(frame["qid"].unique()) - scores.keys()
        if missing:
            raise MicebenchError(
                f"{len(missing)} queries have no scores after re-ranking (e.g. {sorted(missing)[0]!r})"
            )
        run = {q: dict(ranked(docs)[: config.top_k]) if candidates.full_corpus else docs for q, docs in scores.items()}

        t0 = time.perf_counter()
        evaluation = evaluate(dataset.qrels(), run, config.measures, rel_level=dataset.relevance_level)
        timings["evaluate_s"] = time.perf_counter() - t0
        timings["total_s"] = time.perf_counter() - started

        manifest = {
            "config": asdict(config),
            "config_hash": partial.digest,
            "ranker_label": config.ranker_label(),
            "ranker": ranker.describe(),
            "dataset": dataset.describe(),
            "first_stage": {"source": candidates.source, "top_k": config.top_k, "pairs": len(frame)},
            "seed": config.seed,
            "world_size": world.world,
            "timings": timings,
            **environment(),
        }
        tag = slug_tag(config.ranker_label())
        write_result(folder, run, evaluation, manifest, tag=tag, overwrite=config.overwrite)
        partial.remove()
    return RunResult(folder, evaluation, manifest)


def score_in_chunks(ranker: Ranker, frame: pd.DataFrame, partial: Any, world: Any, chunk_queries: int) -> None:
    """Re-rank this rank's queries chunk by chunk, recording each finished chunk; skips recorded ones."""
    qids = sorted(frame["qid"].unique())[world.rank :: world.world]
    done = partial.done()
    todo = [q for q in qids if q not in done]
    if not todo:
        return
    prepare = getattr(ranker, "prepare", None)
    if prepare is not None:  # whole-frame work (e.g. dense embeddings), identical however the run is split
        prepare(frame)
    groups = frame.groupby("qid", sort=False).indices
    for start in range(0, len(todo), chunk_queries):
        chunk = todo[start : start + chunk_queries]
        rows = np.concatenate([groups[q] for q in chunk])
        scored = ranker.rerank(frame.iloc[np.sort(rows)].reset_index(drop=True))
        partial.append(list(zip(scored["qid"], scored["docno"], scored["score"].astype(float), strict=True)))


def slug_tag(label: str) -> str:
    """A run tag without whitespace (TREC format)."""
    return "".join(ch if not ch.isspace() else "_" for ch in label)
