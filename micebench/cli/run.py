"""`micebench run`: one model on one dataset, a suite (NanoBEIR), or an experiment file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from micebench.cli.app import DataDirOption, DeterministicOption, app, guide, out, use_deterministic_kernels
from micebench.cli.flags import with_ranker_flags
from micebench.errors import MicebenchError

if TYPE_CHECKING:
    from micebench.pipeline import RunConfig, RunResult


@app.command(epilog=guide("run"))
@with_ranker_flags()
def run(
    model: Annotated[str | None, typer.Option("--model", "-m", help="Ranker name (see `micebench models`).")] = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", "-d", help="Short name, ir_datasets id or BEIR folder path.")
    ] = None,
    config_file: Annotated[
        str | None,
        typer.Option("--config", help="Experiment TOML: rankers x datasets x seeds (docs/guides/experiments.md)."),
    ] = None,
    first_stage: Annotated[
        str, typer.Option(help="auto | bm25 | dataset:<run> | full | path to a TREC run file.")
    ] = "auto",
    top_k: Annotated[
        int,
        typer.Option("--top-k", help="Candidates per query from the first stage (documents, >= 1; the paper: 1000)."),
    ] = 100,
    output: Annotated[str, typer.Option("--output", "-o", help="Results root folder.")] = "results",
    seed: Annotated[int, typer.Option(help="Random seed recorded in the manifest (integer).")] = 0,
    split: Annotated[str | None, typer.Option(help="qrels split of a local folder (default: test).")] = None,
    name: Annotated[str | None, typer.Option(help="Ranker label for the result folder.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing result.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its recorded progress.")] = False,
    chunk_queries: Annotated[
        int, typer.Option(help="Queries scored between two durable progress records (>= 1).")
    ] = 16,
    deterministic: DeterministicOption = False,
    data_dir: DataDirOption = None,
    model_options: dict[str, Any] | None = None,
) -> None:
    """Re-rank a dataset's first-stage candidates with one model, evaluate, and write the result folder."""
    from micebench.pipeline import RunConfig, run_experiment

    if deterministic:
        use_deterministic_kernels()

    given = dict(model_options or {})
    if config_file is not None:
        if model is not None or dataset is not None:
            raise MicebenchError("--config runs the file's rankers and datasets: drop --model and --dataset")
        device = given.pop("device", None)  # where the whole file runs; every other option is per ranker
        if given:
            flag = "--" + next(iter(given)).replace("_", "-")
            raise MicebenchError(f"{flag} is set per ranker with --config: write it in the experiment file")
        _run_experiment_file(config_file, overwrite, data_dir, device, resume)
        return
    if model is None or dataset is None:
        raise MicebenchError("run needs --model and --dataset (or --config experiment.toml)")

    config = RunConfig(
        model=model,
        dataset=dataset,
        first_stage=first_stage,
        top_k=top_k,
        options=given,
        output=output,
        seed=seed,
        data_dir=data_dir,
        split=split,
        name=name,
        overwrite=overwrite,
        resume=resume,
        chunk_queries=chunk_queries,
    )
    from micebench.suites import is_suite

    if is_suite(dataset):
        _run_suite(config)
        return
    result = run_experiment(config)
    if result is None:  # a non-zero torchrun rank: rank 0 reports
        return
    table = Table(title=f"{result.manifest['dataset']['name']} · {config.ranker_label()}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for measure, value in result.evaluation.means.items():
        table.add_row(measure, f"{value:.4f}")
    out().print(table)
    timing = result.manifest["timings"]
    out().print(
        f"{result.evaluation.num_queries} queries, {result.manifest['first_stage']['pairs']} pairs "
        f"({result.manifest['first_stage']['source']}); re-ranking {timing['rerank_s']:.1f}s; "
        f"written to {result.folder}"
    )


def _run_suite(config: RunConfig) -> None:
    """`run --dataset nanobeir`: each member's first measures as it finishes, then where `report` adds the mean."""
    from micebench.results import slug
    from micebench.suites import run_suite

    def announce(run: RunConfig, result: RunResult | None) -> None:
        if result is None:
            out().print(f"{run.dataset}: finished result kept (use --overwrite to redo it)", markup=False)
            return
        means = ", ".join(f"{k} {v:.4f}" for k, v in list(result.evaluation.means.items())[:2])
        out().print(f"{run.dataset} · {run.ranker_label()}: {means}", markup=False)

    results = run_suite(config, announce)
    folder = Path(config.output) / slug(config.dataset)
    out().print(f"{len(results)} runs done; `micebench report --results {folder}` adds the mean", markup=False)


def _run_experiment_file(
    path: str, overwrite: bool, data_dir: str | None, device: str | None, resume: bool = False
) -> None:
    from micebench.experiments import run_experiment_file

    done, skipped = run_experiment_file(path, overwrite, data_dir, device, resume, say=out().print)
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        out().print(f"{done} runs done, {skipped} finished results kept (use --overwrite to redo them)")
