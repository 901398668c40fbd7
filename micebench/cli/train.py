"""`micebench train`: distillation or label training of any trainable family, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from micebench.cli.app import DataDirOption, DeterministicOption, app, guide, out, use_deterministic_kernels
from micebench.cli.flags import with_ranker_flags
from micebench.rankers.options import TRAINABLE

#: declared options `train` does not offer: its own flags set them (--init is the checkpoint, --batch-size counts
#: triples, --max-length, --schedule and the MICE shape are recorded in the recipe, --dtype is the training
#: forward's precision), the student is untrained by definition and reads no document store; its scoring batch
#: (validation only) keeps the family's default
TRAIN_LEAVES_OUT = (
    "checkpoint", "device", "dtype", "batch_size", "max_length", "schedule", "merge_layer", "top_layers",
    "precomputed", "untrained",
)  # fmt: skip


@app.command(epilog=guide("train"))
@with_ranker_flags(owned=TRAIN_LEAVES_OUT, families=TRAINABLE)
def train(
    model: Annotated[str, typer.Option("--model", "-m", help="ce | masked-ce | mice | mice-l<k>+<m> | colbert.")],
    init: Annotated[str, typer.Option(help="Initial weights (cross-encoder, base model or MICE checkpoint).")],
    train_source: Annotated[str, typer.Option("--train", help="Dataset with train qrels (BM25 hard negatives).")],
    teacher: Annotated[
        str | None,
        typer.Option(
            help="Teacher ranker MODEL[:CHECKPOINT], run once and cached; several joined by commas (bm25,dense) "
            "form an ensemble: per-query z-scores summed."
        ),
    ] = None,
    teacher_scores: Annotated[str | None, typer.Option(help="Teacher scores TSV: pos neg qid pos_id neg_id.")] = None,
    loss: Annotated[str, typer.Option(help="margin-mse | bce | listwise.")] = "margin-mse",
    steps: Annotated[int, typer.Option(help="Optimiser steps (>= 1).")] = 125_000,
    batch_size: Annotated[int, typer.Option(help="Triples per step (>= 1; listwise: queries per step).")] = 32,
    lr: Annotated[float, typer.Option(help="AdamW learning rate (> 0; weight decay 0).")] = 7e-6,
    warmup: Annotated[
        int | None,
        typer.Option(help="Linear warm-up steps, then linear decay (0 to --steps; default 5000, at most --steps)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="First seed (integer).")] = 12,
    seeds: Annotated[int, typer.Option(help="Models to train: seed, seed+1, ... (>= 1).")] = 1,
    schedule: Annotated[str | None, typer.Option(help="masked-ce schedule.")] = None,
    merge_layer: Annotated[int | None, typer.Option(help="MICE merge layer k (1 <= k < the model's layers).")] = None,
    top_layers: Annotated[
        int | None, typer.Option(help="MICE top layers m (>= 1; k + m <= the model's layers).")
    ] = None,
    max_length: Annotated[
        int | None,
        typer.Option(
            help="Maximum tokens per input (>= 5 for ce and masked-ce, >= 3 otherwise; default: the student's own)."
            " The teacher reads as many."
        ),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(help="qrels split of a local training folder (default train; not for ir_datasets ids)."),
    ] = None,
    negatives: Annotated[int, typer.Option(help="BM25 hard negatives per query (>= 1).")] = 20,
    group_size: Annotated[
        int, typer.Option(help="listwise: documents per query in the softmax, 1 positive + G-1 negatives (>= 2).")
    ] = 2,
    validate: Annotated[str | None, typer.Option(help="Validation dataset (best checkpoint kept).")] = None,
    validate_top_k: Annotated[int, typer.Option(help="Candidates per validation query (documents, >= 1).")] = 20,
    every: Annotated[int, typer.Option(help="Validate and checkpoint every N steps (>= 1).")] = 1000,
    holdout: Annotated[
        int,
        typer.Option(
            help="Validate on N of the training queries, held out of training (>= 0; a fixed seeded split; 0: none)."
        ),
    ] = 0,
    patience: Annotated[
        int,
        typer.Option(help="Stop when P validations in a row do not improve on the best (>= 0; 0: train to --steps)."),
    ] = 0,
    teacher_norm: Annotated[
        str,
        typer.Option(help="none | margin-rms: divide teacher scores by the root mean square of the training margins."),
    ] = "none",
    grad_accumulation: Annotated[int, typer.Option(help="Micro-batches per step (>= 1).")] = 1,
    output: Annotated[str, typer.Option("--output", "-o", help="Training folder.")] = "checkpoints/run",
    resume: Annotated[bool, typer.Option(help="Continue the run in --output.")] = False,
    max_minutes: Annotated[
        float | None, typer.Option(help="Stop cleanly with a checkpoint after M minutes (> 0).")
    ] = None,
    stop_after: Annotated[
        int | None,
        typer.Option(
            help="Stop cleanly with a checkpoint after step N of the schedule (>= 1; a probe; --resume goes on)."
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N | mps.")] = "auto",
    dtype: Annotated[
        str,
        typer.Option(
            help="auto | fp32 | bf16: the training forward's precision (bf16 autocast, fp32 master weights; auto: "
            "bf16 on CUDA, fp32 elsewhere). Validation scores in fp32."
        ),
    ] = "auto",
    deterministic: DeterministicOption = False,
    data_dir: DataDirOption = None,
    model_options: dict[str, Any] | None = None,
) -> None:
    """Train a ranker by distillation (Margin-MSE from a teacher) or from labels, resumably (the paper's recipe)."""
    from micebench.training.loop import TrainConfig
    from micebench.training.run import train_models

    if deterministic:
        use_deterministic_kernels()

    config = TrainConfig(
        model=model,
        init=init,
        train=train_source,
        loss=loss,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        warmup=5000 if warmup is None else warmup,
        seed=seed,
        grad_accumulation=grad_accumulation,
        teacher=teacher,
        teacher_scores=teacher_scores,
        schedule=schedule,
        merge_layer=merge_layer,
        top_layers=top_layers,
        max_length=max_length,
        negatives_per_query=negatives,
        group_size=group_size,
        validate=validate,
        validate_top_k=validate_top_k,
        every=every,
        holdout=holdout,
        patience=patience,
        teacher_norm=teacher_norm,
        output=output,
        device=device,
        dtype=dtype,
        extra=dict(model_options or {}),
    )
    import time

    start = time.perf_counter()
    folders = train_models(
        config,
        seeds=seeds,
        resume=resume,
        max_minutes=max_minutes,
        stop_after=stop_after,
        data_dir=data_dir,
        split=split,
        warmup_given=warmup is not None,
    )
    for folder in folders:
        out().print(f"checkpoint: {folder}; curves in {Path(folder).parent}/curves.csv|png")
    out().print(f"training took {time.perf_counter() - start:.0f}s")
