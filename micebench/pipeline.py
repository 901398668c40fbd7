"""One evaluation run in named stages: check inputs -> candidates -> store -> ranker -> resumable scoring ->
evaluation -> write.

Every input is checked (model options, dataset, result folder, candidates and their texts or ids, a precomputed
store) before the model loads, so a bad input costs no model load. A failed run leaves nothing behind but
progress that `--resume` can continue, and the error says so.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from micebench.data import Dataset, load_dataset
from micebench.data.check import check_judged_queries
from micebench.data.trec import Run, ranked
from micebench.errors import DataError, MicebenchError, first_line
from micebench.evaluation import DEFAULT_MEASURES, Evaluation
from micebench.evaluation.measures import to_ranx
from micebench.firststage.candidates import Candidates, first_stage
from micebench.frames import candidates_frame, check_queries, refuse_absent_candidates, warn_absent_judged
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
        """Result-folder name of the ranker: `--name`, else the model's label plus a given checkpoint's name, and
        the compute precision when it is not fp32 (`ce-int8`: the paths of one model never share a folder)."""
        if self.name:
            return self.name
        cls, _ = resolve_ranker(self.model)
        label = cls.run_label(self.model, self.options)
        checkpoint = self.options.get("checkpoint")
        if checkpoint:
            from micebench.models.hf import resolve_model

            label = f"{label}-{Path(resolve_model(checkpoint)).name}"
        precision = self.options.get("dtype")
        return f"{label}-{precision}" if isinstance(precision, str) and precision != "fp32" else label


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


#: seeds numpy accepts (np.random.seed refuses any other)
SEED_RANGE = (0, 2**32 - 1)


def check_config(config: RunConfig) -> None:
    """What a run's configuration can be checked for without data or weights: model name and options, sizes,
    seed and measures. `run` and every run of an experiment file pass here before anything is written."""
    cls, _ = resolve_ranker(config.model)
    cls.check_before_load(ranker_options(config.model, **config.options))
    if config.top_k < 1:
        raise MicebenchError(f"--top-k must be at least 1 (got {config.top_k})")
    if config.chunk_queries < 1:
        raise MicebenchError(f"--chunk-queries must be at least 1 (got {config.chunk_queries})")
    if not SEED_RANGE[0] <= config.seed <= SEED_RANGE[1]:
        raise MicebenchError(f"seed must be between {SEED_RANGE[0]} and 2**32 - 1 (got {config.seed})")
    if not config.measures:
        raise MicebenchError("measures must name at least one measure (e.g. nDCG@10)")
    for measure in config.measures:
        to_ranx(measure)


def check_inputs(config: RunConfig) -> tuple[Dataset, Path]:
    """Model name and options, sizes, dataset, queries and the result folder: all before any model work."""
    check_config(config)
    dataset = load_dataset(config.dataset, config.data_dir, config.split)
    folder = result_folder(config, dataset.name)
    if folder.exists() and not config.overwrite:
        state = "finished" if is_complete(folder) else "existing"
        raise MicebenchError(f"{state} result at {folder} (use --overwrite to replace it)")
    check_queries(dataset.judged_queries())
    check_judged_queries(dataset)
    return dataset, folder


def candidate_stage(config: RunConfig, dataset: Dataset) -> tuple[Candidates, pd.DataFrame]:
    """First-stage candidates of the judged queries as a frame, with texts when the ranker reads them.

    A ranker that reads no text gets its candidate ids checked against the corpus all the same (ids only)."""
    cls, fixed = resolve_ranker(config.model)
    candidates = first_stage(dataset, config.first_stage, config.top_k)
    if cls.requires_bm25_first_stage and not candidates.is_bm25:
        raise MicebenchError(
            f"model {config.model!r} is the BM25 first stage itself; use --first-stage auto|bm25|dataset:bm25 "
            "(or --model first-stage to evaluate other candidates as they are)"
        )
    with_text = cls.reads_text({**config.options, **fixed})
    frame = candidates_frame(dataset, candidates, with_text)
    if not with_text:
        check_ids_in_corpus(dataset, frame, candidates)
    return candidates, frame


def check_ids_in_corpus(dataset: Dataset, frame: pd.DataFrame, candidates: Candidates) -> None:
    """For rankers that read ids only (rankers that read texts are checked as they read them): refuse candidates
    that the corpus lacks, and warn with their count about judged documents it lacks; one pass over the corpus's
    ids at most, none when the first stage read every id already."""
    judged = set().union(*dataset.qrels().values())
    if candidates.corpus_ids is not None:  # drawn from this corpus: only the judged ids need checking
        warn_absent_judged(dataset, len(judged - candidates.corpus_ids))
        return
    wanted = set(frame["docno"].unique())
    absent = set(dataset.absent_docs(wanted | judged))
    refuse_absent_candidates(dataset, sorted(absent & wanted))
    warn_absent_judged(dataset, len(absent & judged))


def store_stage(config: RunConfig, dataset: Dataset, frame: pd.DataFrame) -> None:
    """A `--precomputed` store must come from this dataset's corpus and hold every candidate (before the model)."""
    folder = config.options.get("precomputed")
    if not folder:
        return
    from micebench.store.manifest import open_index, read_manifest

    manifest = read_manifest(folder)
    check_store_dataset(str(folder), manifest, dataset)
    docnos = frame["docno"].unique().tolist()
    try:
        absent = sorted(open_index(Path(folder), manifest).absent(docnos))
    except (OSError, KeyError, ValueError) as error:
        raise MicebenchError(f"cannot read the index of the document store {folder}: {first_line(error)}") from None
    if absent:
        raise DataError(
            f"{len(absent)} of {len(docnos)} candidate documents are not in the store {folder} (e.g. {absent[0]!r}): "
            "add them with `micebench precompute --extend`"
        )


def check_store_dataset(folder: str, manifest: Mapping[str, Any], dataset: Dataset) -> None:
    """Refuse a store built on another corpus than the run's dataset (stores that record none are let through)."""
    records = [manifest.get("dataset")] + [s.get("dataset") for s in manifest.get("sources", []) if isinstance(s, dict)]
    records = [r for r in records if isinstance(r, dict)]
    if not records:
        return
    wanted = corpus_keys(dataset.describe())
    if any(corpus_keys(r) & wanted for r in records):
        return
    built = " and ".join(dict.fromkeys(repr(str(r.get("name"))) for r in records))
    raise DataError(
        f"store {folder} holds documents of {built}, not of {dataset.name!r}: precompute a store for {dataset.name!r}"
    )


def corpus_keys(record: Mapping[str, Any]) -> set[str]:
    """What identifies the corpus (the document ids) of a dataset record (`Dataset.describe()`): its fingerprint,
    its local folder, and for the registry's datasets and ir_datasets ids the ir_datasets corpus they share
    (trec-dl-19, trec-dl-20 and msmarco-dev all read msmarco-passage)."""
    from micebench.data.registry import SHORT_NAMES

    keys = {f"fingerprint:{record['fingerprint']}"} if record.get("fingerprint") else set()
    kind, _, target = str(record.get("source", "")).partition(":")
    irds_ids: list[str] = []
    if kind == "local":
        local = Path(target.split("#", 1)[0])
        keys.add(f"folder:{local}")
        irds_ids += [s.irds_id for s in SHORT_NAMES.values() if local.name in s.mirror_folders]
    elif kind == "ir_datasets":
        irds_ids.append(target)
    short = SHORT_NAMES.get(str(record.get("name")))
    if short is not None:
        irds_ids.append(short.irds_id)
    return keys | {f"docs:{docs_parent(i)}" for i in irds_ids}


def docs_parent(irds_id: str) -> str:
    """The ir_datasets id whose corpus `irds_id` uses (itself when unknown)."""
    try:
        import ir_datasets

        return ir_datasets.docs_parent_id(irds_id) or irds_id
    except (ImportError, KeyError):
        return irds_id


def ranker_stage(config: RunConfig, device: str | None) -> Ranker:
    """Load the ranker with the given options (the device a torchrun rank must use replaces the given one)."""
    from micebench.rankers.base import load_ranker, option_names

    options = dict(config.options)
    if device is not None and device != options.get("device", "auto") and "device" in option_names(config.model):
        options["device"] = device
    if "head_seed" in option_names(config.model) and options.get("head_seed") is None:
        options["head_seed"] = config.seed  # a fresh score head is drawn from the run's seed, as the API's from 0
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
        part = frame.iloc[np.sort(rows)].reset_index(drop=True)
        scores = ranker.score_candidates(part).tolist()
        partial.append(list(zip(part["qid"], part["docno"], scores, strict=True)))


def score_at_once(ranker: Ranker, frame: pd.DataFrame) -> Run:
    """The whole frame scored in one call, as a run, without progress records (for rankers that record none)."""
    from micebench.runstate import assign_rows

    ranker.prepare(frame)
    scores: Run = {}
    assign_rows(scores, frame["qid"].tolist(), frame["docno"].tolist(), ranker.score_candidates(frame).tolist())
    return scores


def finished_run(scores: Run, frame: pd.DataFrame, candidates: Candidates, top_k: int) -> Run:
    """The scores of every query as a run (a full-corpus first stage keeps the best `top_k`)."""
    missing = set(frame["qid"].unique()) - scores.keys()
    if missing:
        raise MicebenchError(f"{len(missing)} queries have no scores after re-ranking (e.g. {sorted(missing)[0]!r})")
    return {q: dict(ranked(docs)[:top_k]) if candidates.full_corpus else docs for q, docs in scores.items()}


def all_tied(scores: Iterable[float]) -> bool:
    """Whether a query's scores are all the same (to a millionth of their size: identical inputs, float noise)."""
    values = list(scores)
    low, high = min(values), max(values)
    return high - low <= 1e-6 * max(abs(low), abs(high))


def check_informative(run: Run, config: RunConfig) -> None:
    """Refuse scores that rank nothing: every query with two or more candidates scored them all the same."""
    ranked_queries = [docs.values() for docs in run.values() if len(docs) > 1]
    if not ranked_queries or not all(all_tied(scores) for scores in ranked_queries):
        return
    max_length = config.options.get("max_length")
    if max_length is not None:
        raise MicebenchError(
            f"every query's candidates scored the same: is --max-length {max_length} too small to hold any "
            "document token? (no result written)"
        )
    raise MicebenchError(
        f"every query's candidates scored the same with {config.ranker_label()!r}: the scores rank nothing "
        "(no result written)"
    )


def settle_failure(partial: Any, world: Any, error: BaseException) -> BaseException:
    """After a failed run: progress with no finished query is removed; otherwise it is kept for `--resume`, and the
    error (a one-line one, or a note on any other) says so."""
    try:
        done = partial.done() if partial.folder.is_dir() else set()
    except OSError:  # unreadable progress: leave it where it is, and the error as it is
        return error
    if not done:
        if world.rank == 0:  # under torchrun the others may still be writing into it
            partial.remove()
        return error
    queries = f"{len(done)} scored {'query is' if len(done) == 1 else 'queries are'}"
    hint = f"{queries} kept in {partial.folder}; rerun with --resume to continue"
    if isinstance(error, MicebenchError):
        return type(error)(f"{error}; {hint}")
    error.add_note(hint)
    return error


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
    """The provenance record of a run: configuration, the options that took effect, data, timings, environment,
    and the checkpoint's training verdict (so `report` can mark a run that did not learn after the checkpoint moved)."""
    from micebench.training.health import recorded_verdict

    verdict = recorded_verdict(config.options.get("checkpoint"))
    return {
        "config": asdict(config),
        "config_hash": digest,
        "ranker_label": config.ranker_label(),
        "ranker_options": ranker.effective_options(),
        "ranker": ranker.describe(),
        "dataset": dataset.describe(),
        "first_stage": {
            "source": candidates.source,
            "top_k": config.top_k,
            "pairs": pairs,
            "queries": sum(1 for docs in candidates.run.values() if docs),  # the re-ranked ones (time per query)
        },
        "seed": config.seed,
        "world_size": world_size,
        "timings": timings,
        **({"training_verdict": verdict} if verdict is not None else {}),
        **environment(),
    }


def run_experiment(config: RunConfig, ranker: Ranker | None = None) -> RunResult | None:
    """Run one (dataset, ranker) evaluation and write its result folder; see RunConfig for the knobs.

    Under torchrun every rank scores its share of the queries; rank 0 merges and writes (others return None).
    A failure removes what the run created unless some queries were scored: then `--resume` continues it.
    """
    from micebench.runstate import Distributed, PartialScores, ResultLock, config_hash

    started = time.perf_counter()
    dataset, folder = check_inputs(config)
    world = Distributed.from_env(config.options.get("device", "auto"))
    seed_everything(config.seed)

    with ResultLock(folder, world.rank):
        partial = PartialScores(folder, config_hash(asdict(config)), world.rank)
        partial.check(config.resume, config.overwrite)
        try:
            return run_stages(config, ranker, dataset, folder, partial, world, started)
        except BaseException as error:
            settled = settle_failure(partial, world, error)
            if settled is error:
                raise
            raise settled from None


def run_stages(
    config: RunConfig, ranker: Ranker | None, dataset: Dataset, folder: Path, partial: Any, world: Any, started: float
) -> RunResult | None:
    """The stages of `run_experiment` once the result folder is locked and its progress checked."""
    timings: dict[str, float] = {}
    candidates, frame = candidate_stage(config, dataset)
    store_stage(config, dataset, frame)
    timings["first_stage_s"] = time.perf_counter() - started
    world.barrier()

    t0 = time.perf_counter()
    if ranker is None:
        ranker = ranker_stage(config, world.device(config.options.get("device", "auto")))
    timings["load_model_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if ranker.records_progress:
        partial.create()
        score_in_chunks(ranker, frame, partial, world, config.chunk_queries)
        world.barrier()
        scores = partial.finished_run() if world.rank == 0 else None
    else:
        scores = score_at_once(ranker, frame) if world.rank == 0 else None
        world.barrier()
    timings["rerank_s"] = time.perf_counter() - t0
    if scores is None:
        return None
    run = finished_run(scores, frame, candidates, config.top_k)
    try:
        check_informative(run, config)
    except MicebenchError:
        partial.remove()  # nothing to resume: the same configuration gives the same scores
        raise

    t0 = time.perf_counter()
    evaluation = dataset.evaluate(run, config.measures)
    timings["evaluate_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started

    manifest = run_manifest(config, partial.digest, ranker, dataset, candidates, len(frame), world.world, timings)
    write_result(folder, run, evaluation, manifest, tag=slug_tag(config.ranker_label()), overwrite=config.overwrite)
    partial.remove()
    return RunResult(folder, evaluation, manifest)


def slug_tag(label: str) -> str:
    """A run tag without whitespace (TREC format)."""
    return "".join(ch if not ch.isspace() else "_" for ch in label)
