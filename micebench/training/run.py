"""`micebench train`: assemble the training set, the student, the teacher and the validator, then train."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from micebench.errors import MicebenchError
from micebench.training.data import (
    TrainingSet,
    Triple,
    mine_bm25_triples,
    read_teacher_scores,
    write_teacher_scores,
)
from micebench.training.loop import TrainConfig, Trainer, make_validator
from micebench.training.students import Student


def load_student(config: TrainConfig) -> Student:
    """The ranker to train, initialised from `--init` (a cross-encoder/base model, or a MICE checkpoint)."""
    from micebench.rankers.base import load_ranker

    options: dict[str, Any] = {"checkpoint": config.init, "device": config.device, "max_length": config.max_length}
    if config.model == "masked-ce":
        options["schedule"] = config.schedule or "none"
    if config.model == "mice" or config.model.startswith("mice-l"):
        options.update(merge_layer=config.merge_layer, top_layers=config.top_layers, untrained=True)
    try:
        ranker = load_ranker(config.model, **options)
    except MicebenchError as err:
        raise MicebenchError(f"--init {config.init!r} does not fit a {config.model} student: {err}") from None
    if ranker.name not in ("ce", "masked-ce", "mice", "colbert"):
        raise MicebenchError(f"model {config.model!r} cannot be trained (ce, masked-ce, mice-l<k>+<m>, colbert)")
    return Student(ranker)


def _teacher_spec(spec: str) -> tuple[str, str | None]:
    model, _, checkpoint = spec.partition(":")
    return model, checkpoint or None


def score_with_teacher(training: TrainingSet, spec: str, device: str, max_length: int = 512) -> TrainingSet:
    """Run a teacher ranker once over every (query, positive) and (query, negative) pair, reading as many
    tokens as the student will (`max_length`)."""
    from micebench.rankers.base import load_ranker

    model, checkpoint = _teacher_spec(spec)
    teacher = load_ranker(model, checkpoint=checkpoint, device=device, untrained=True, max_length=max_length)
    teacher.check_ready_for_effectiveness()
    scores: dict[tuple[str, str], float] = {}
    by_query: dict[str, set[str]] = {}
    for t in training.triples:
        by_query.setdefault(t.qid, set()).update((t.pos, t.neg))
    from micebench.progress import progress_bar

    with progress_bar("teacher scoring", total=len(by_query), unit="queries") as bar:
        for qid, docnos in by_query.items():
            ordered = sorted(docnos)
            values = teacher.score(training.queries[qid], [training.docs[d] for d in ordered])
            scores.update({(qid, d): float(v) for d, v in zip(ordered, values, strict=True)})
            bar.advance(1)
    triples = [Triple(t.qid, t.pos, t.neg, scores[(t.qid, t.pos)], scores[(t.qid, t.neg)]) for t in training.triples]
    return TrainingSet(triples, training.queries, training.docs, f"{training.source}; teacher {spec}")


def build_training_set(config: TrainConfig, data_dir: str | None, split: str | None) -> TrainingSet:
    from micebench.data import load_dataset

    dataset = load_dataset(config.train, data_dir, split)
    cache = Path(config.output) / "teacher_scores.tsv"
    if config.teacher_scores:
        return read_teacher_scores(config.teacher_scores, dataset)
    if config.teacher and cache.is_file():
        return read_teacher_scores(cache, dataset)
    training = mine_bm25_triples(dataset, config.negatives_depth, config.negatives_per_query, config.seed)
    if config.teacher:
        training = score_with_teacher(training, config.teacher, config.device, config.max_length)
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_teacher_scores(training, cache)
    return training


def train_models(
    config: TrainConfig,
    seeds: int = 1,
    resume: bool = False,
    max_minutes: float | None = None,
    data_dir: str | None = None,
    split: str | None = None,
) -> list[Path]:
    """Train one model per seed (seed, seed+1, ...); with several seeds each goes to `<output>/seed-<s>/`."""
    from micebench.data import load_dataset
    from micebench.pipeline import seed_everything

    if config.loss == "margin-mse" and not (config.teacher or config.teacher_scores):
        raise MicebenchError("margin-mse needs --teacher (a ranker spec) or --teacher-scores (a TSV file)")
    validator = None
    if config.validate:
        validator = make_validator(load_dataset(config.validate, data_dir), config.validate_top_k)
    training = build_training_set(config, data_dir, split)
    written = []
    for offset in range(seeds):
        run_config = (
            config
            if seeds == 1
            else replace(
                config, seed=config.seed + offset, output=str(Path(config.output) / f"seed-{config.seed + offset}")
            )
        )
        seed_everything(run_config.seed)
        student = load_student(run_config)
        trainer = Trainer(run_config, student, training, validator)
        written.append(trainer.run(resume=resume, max_minutes=max_minutes))
    return written
