"""`micebench train`: assemble the training set, the student, the teacher and the validator, then train."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from micebench.atomic import atomic_write_text
from micebench.errors import MicebenchError
from micebench.training.data import (
    QuerySubset,
    TrainingSet,
    Triple,
    holdout_queries,
    mine_bm25_triples,
    read_teacher_scores,
    write_teacher_scores,
)
from micebench.training.loop import TrainConfig, Trainer, make_validator


def student_options(config: TrainConfig) -> dict[str, Any]:
    """The student's ranker options: `--init` as its checkpoint, plus the options of `config` that were given.

    The model must be Trainable and must declare every given option (else one line naming it), checked before
    any weights load.
    """
    from micebench.rankers.base import Trainable, option_names, ranker_options, rankers_with, resolve_ranker

    cls, _ = resolve_ranker(config.model)
    if not issubclass(cls, Trainable):
        trainable = ", ".join(rankers_with(Trainable))
        raise MicebenchError(f"model {config.model!r} cannot be trained (trainable: {trainable} and their presets)")
    options: dict[str, Any] = {
        "checkpoint": config.init,
        "device": config.device,
        "max_length": config.max_length,
        "schedule": config.schedule,
        "merge_layer": config.merge_layer,
        "top_layers": config.top_layers,
        **config.extra,
    }
    if "untrained" in option_names(config.model):
        options["untrained"] = True  # a student is untrained by definition
    from micebench.pipeline import SEED_RANGE

    seed_ok = isinstance(config.seed, int) and SEED_RANGE[0] <= config.seed <= SEED_RANGE[1]  # else: --seed's error
    if "head_seed" in option_names(config.model) and options.get("head_seed") is None and seed_ok:
        options["head_seed"] = config.seed  # a fresh score head is drawn from the training seed
    ranker_options(config.model, **options)
    return options


def load_student(config: TrainConfig) -> Any:
    """The ranker to train, initialised from `--init` (a cross-encoder/base model, or a MICE checkpoint)."""
    from micebench.rankers.base import load_ranker

    options = student_options(config)
    try:
        return load_ranker(config.model, **options)
    except MicebenchError as err:
        raise MicebenchError(f"--init {config.init!r} does not fit a {config.model} student: {err}") from None


def _teacher_specs(spec: str) -> list[tuple[str, str | None]]:
    """`MODEL[:CHECKPOINT]`, or several joined by commas (an ensemble)."""
    specs = []
    for part in spec.split(","):
        model, _, checkpoint = part.strip().partition(":")
        if not model:
            raise MicebenchError(f"--teacher {spec!r}: empty teacher name")
        specs.append((model, checkpoint or None))
    return specs


def _teacher_scores(
    model: str, checkpoint: str | None, pairs: pd.DataFrame, dataset: Any, device: str, max_length: int | None
) -> np.ndarray:
    """One teacher's score for every row of `pairs` (qid, query, docno, text), through the ranker's own `rerank`
    (a dense teacher encodes each distinct document once). `bm25` scores with the training corpus's statistics,
    the scores BM25 retrieval ranks by, not with those of each query's short list alone."""
    from micebench.rankers.base import declared_options, load_ranker

    shared = {"checkpoint": checkpoint, "device": device, "untrained": True, "max_length": max_length}
    teacher = load_ranker(model, **declared_options(model, **shared))
    teacher.check_ready_for_effectiveness()
    return teacher.score_frame(pairs, dataset)


def score_with_teacher(
    training: TrainingSet, spec: str, device: str, max_length: int | None = None, dataset: Any = None
) -> TrainingSet:
    """Run a teacher once over every (query, positive) and (query, negative) pair, reading as many tokens as the
    student will (`max_length`). An ensemble (`bm25,dense`) sums its members' scores after z-normalising each
    member per query over that query's training documents, so no member dominates by its scale."""
    specs = _teacher_specs(spec)
    pairs = pd.DataFrame(
        sorted({(t.qid, d) for t in training.triples for d in (t.pos, t.neg)}), columns=["qid", "docno"]
    )
    pairs["query"] = pairs["qid"].map(training.queries)
    pairs["text"] = pairs["docno"].map(training.docs)
    total = np.zeros(len(pairs), dtype=np.float64)
    for model, checkpoint in specs:
        values = _teacher_scores(model, checkpoint, pairs, dataset, device, max_length)
        if len(specs) > 1:
            by_query = pd.Series(values).groupby(pairs["qid"].to_numpy())
            spread = by_query.transform(lambda v: v.std(ddof=0)).to_numpy()
            values = (values - by_query.transform("mean").to_numpy()) / np.where(spread > 0, spread, 1.0)
        total += values
    bad = np.flatnonzero(~np.isfinite(total))
    if len(bad):
        row = pairs.iloc[bad[0]]
        raise MicebenchError(
            f"teacher {spec} gave {len(bad)} non-finite scores (e.g. query {row['qid']!r}, document "
            f"{row['docno']!r}): a teacher must score every training pair with a finite number"
        )
    scores = dict(zip(zip(pairs["qid"], pairs["docno"], strict=True), total.tolist(), strict=True))
    triples = [Triple(t.qid, t.pos, t.neg, scores[(t.qid, t.pos)], scores[(t.qid, t.neg)]) for t in training.triples]
    return TrainingSet(triples, training.queries, training.docs, f"{training.source}; teacher {spec}")


def _teacher_files(spec: str | None) -> dict[str, list[int]]:
    """Size and modification time of each local teacher checkpoint's files: a retrained teacher invalidates the
    cached scores even under the same path."""
    found: dict[str, list[int]] = {}
    for _, checkpoint in _teacher_specs(spec) if spec else []:
        if checkpoint and Path(checkpoint).is_dir():
            for file in sorted(f for f in Path(checkpoint).iterdir() if f.is_file()):
                stat = file.stat()
                found[str(file)] = [stat.st_size, stat.st_mtime_ns]
    return found


def training_split(train: str, data_dir: str | None, split: str | None) -> str | None:
    """The qrels split to train on: a local folder's `train` by default; an ir_datasets id names its split itself."""
    from micebench.data.registry import data_dir as mirror
    from micebench.data.registry import where

    if split is None:
        return "train" if where(train, mirror(data_dir))[0] == "local" else None
    return split


def build_training_set(
    config: TrainConfig, data_dir: str | None, split: str | None, dataset: Any = None, held_out: set[str] | None = None
) -> TrainingSet:
    """The training triples with their teacher scores; `held_out` queries (the validation split) are left out."""
    from micebench.data import load_dataset
    from micebench.data.check import check_judged_queries

    split = training_split(config.train, data_dir, split)
    dataset = dataset if dataset is not None else load_dataset(config.train, data_dir, split)
    check_judged_queries(dataset)  # as `run` refuses them
    held_out = held_out or set()
    cache = Path(config.output) / "teacher_scores.tsv"
    # the cache is reused only for the same teacher, triples and token budget (its sidecar says which)
    key = json.dumps(
        {
            "teacher": config.teacher,
            "teacher_files": _teacher_files(config.teacher),
            "train": config.train,
            "split": split,
            "max_length": config.max_length,
            "negatives_depth": config.negatives_depth,
            "negatives_per_query": config.negatives_per_query,
            "seed": config.seed,
        }
        | ({"holdout": config.holdout} if config.holdout else {}),
        sort_keys=True,
    )
    sidecar = cache.with_suffix(".json")
    if config.teacher_scores:
        return without_queries(read_teacher_scores(config.teacher_scores, dataset), held_out)
    if config.teacher and cache.is_file() and sidecar.is_file() and sidecar.read_text() == key:
        return read_teacher_scores(cache, dataset)
    sidecar.unlink(missing_ok=True)
    training = mine_bm25_triples(
        dataset, config.negatives_depth, config.negatives_per_query, config.seed, exclude=held_out
    )
    if config.teacher:
        training = score_with_teacher(training, config.teacher, config.device, config.max_length, dataset)
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_teacher_scores(training, cache)
        atomic_write_text(sidecar, key)
    return training


def without_queries(training: TrainingSet, held_out: set[str]) -> TrainingSet:
    """The training set less the triples of the held-out validation queries."""
    if not held_out:
        return training
    triples = [t for t in training.triples if t.qid not in held_out]
    queries = {q: t for q, t in training.queries.items() if q not in held_out}
    return TrainingSet(triples, queries, training.docs, f"{training.source} less {len(held_out)} held-out queries")


def check_training_numbers(
    config: TrainConfig, seeds: int = 1, max_minutes: float | None = None, warmup_given: bool = False
) -> None:
    """Every numeric training option in its range, in one line naming the option, before any data or model work
    (a negative learning rate would otherwise fail inside torch's optimiser after the model has loaded).

    A warm-up longer than the run is refused when given; the default (5000) is capped to --steps, as ever."""
    import math

    whole = {
        "--steps": (config.steps, 1),
        "--batch-size": (config.batch_size, 1),
        "--grad-accumulation": (config.grad_accumulation, 1),
        "--seeds": (seeds, 1),
        "--warmup": (config.warmup, 0),
        "--negatives": (config.negatives_per_query, 1),
        "--group-size": (config.group_size, 2),
        "--validate-top-k": (config.validate_top_k, 1),
        "--every": (config.every, 1),
    }
    for flag, (value, least) in whole.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise MicebenchError(f"{flag} must be a whole number of at least {least} (got {value!r})")
    from micebench.pipeline import SEED_RANGE

    if isinstance(config.seed, bool) or not isinstance(config.seed, int):
        raise MicebenchError(f"--seed must be a whole number (got {config.seed!r})")
    last_seed = config.seed + max(seeds, 1) - 1
    if config.seed < SEED_RANGE[0] or last_seed > SEED_RANGE[1]:
        span = f"--seed {config.seed}" if seeds == 1 else f"--seed {config.seed} --seeds {seeds} (up to {last_seed})"
        raise MicebenchError(f"{span}: every seed must be between {SEED_RANGE[0]} and 2**32 - 1")
    if config.holdout < 0 or config.patience < 0:
        raise MicebenchError(
            f"--holdout and --patience must be whole numbers of at least 0 (got {config.holdout}, {config.patience})"
        )
    from micebench.training.loop import check_recipe_names

    check_recipe_names(config)
    if config.holdout and config.validate:
        raise MicebenchError("give --validate DATASET or --holdout N (validate on held-out training queries), not both")
    if config.patience and not (config.validate or config.holdout):
        raise MicebenchError("--patience needs validation: --holdout N or --validate DATASET")
    if warmup_given and config.warmup > config.steps:
        raise MicebenchError(f"--warmup {config.warmup} is longer than --steps {config.steps}")
    if not (isinstance(config.lr, int | float) and math.isfinite(config.lr) and config.lr > 0):
        raise MicebenchError(f"--lr must be a finite number above 0 (got {config.lr!r})")
    if max_minutes is not None and not (math.isfinite(max_minutes) and max_minutes > 0):
        raise MicebenchError(f"--max-minutes must be a finite number above 0 (got {max_minutes!r})")


def train_models(
    config: TrainConfig,
    seeds: int = 1,
    resume: bool = False,
    max_minutes: float | None = None,
    data_dir: str | None = None,
    split: str | None = None,
    warmup_given: bool = False,
    stop_after: int | None = None,
) -> list[Path]:
    """Train one model per seed (seed, seed+1, ...); with several seeds each goes to `<output>/seed-<s>/`."""
    from micebench.data import load_dataset
    from micebench.pipeline import seed_everything

    student_options(config)  # the model can be trained and takes every option given, before any other check
    check_training_numbers(config, seeds, max_minutes, warmup_given)
    if stop_after is not None and not 1 <= stop_after:
        raise MicebenchError(f"--stop-after must be a whole number of at least 1 (got {stop_after})")
    if config.loss == "margin-mse" and not (config.teacher or config.teacher_scores):
        raise MicebenchError("margin-mse needs --teacher (a ranker spec) or --teacher-scores (a TSV file)")
    if resume and seeds == 1 and not (Path(config.output) / "last" / "state.pt").is_file():
        # before the teacher scores every training pair (minutes), not after
        raise MicebenchError(f"nothing to resume in {config.output} (no last/state.pt)")
    validator = None
    if config.validate:
        validator = make_validator(load_dataset(config.validate, data_dir), config.validate_top_k)
    dataset, held_out = None, set()
    if config.holdout:
        dataset = load_dataset(config.train, data_dir, training_split(config.train, data_dir, split))
        held_out = holdout_queries(dataset, config.holdout)
        subset = QuerySubset(dataset, held_out, f"{config.holdout} held-out training queries")
        validator = make_validator(subset, config.validate_top_k)
    training = build_training_set(config, data_dir, split, dataset, held_out)
    written = []
    for offset in range(seeds):
        run_config = (
            config
            if seeds == 1
            else replace(
                config, seed=config.seed + offset, output=str(Path(config.output) / f"seed-{config.seed + offset}")
            )
        )
        # resuming several seeds: the finished ones are kept, the interrupted one continues, the rest begin
        begun = seeds == 1 or (Path(run_config.output) / "last").exists()
        seed_everything(run_config.seed)
        student = load_student(run_config)
        trainer = Trainer(run_config, student, training, validator)
        written.append(trainer.run(resume=resume and begun, max_minutes=max_minutes, stop_after=stop_after))
        if trainer.health is not None and not trainer.health["learned"]:
            from micebench.training.health import warning_text

            name = f"{config.model} seed {run_config.seed}"
            print(warning_text(name, trainer.health), file=sys.stderr, flush=True)
    return written
