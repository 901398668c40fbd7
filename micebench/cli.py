"""The `micebench` command line: thin wrappers that parse options, call the library and render with rich."""

from __future__ import annotations

import errno
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table
from rich.text import Text

from micebench.errors import EnvironmentFault, MicebenchError

if TYPE_CHECKING:
    from micebench.pipeline import RunConfig, RunResult

#: the guide (docs/guides/) that explains each command
GUIDES = {
    "run": ("datasets", "rankers", "experiments"),
    "report": ("experiments",),
    "models": ("rankers",),
    "results": ("datasets",),
    "convert": ("stores",),
    "precompute": ("stores",),
    "latency": ("latency",),
    "train": ("training",),
    "schedules": ("schedules",),
    "attention": ("schedules",),
    "datasets": ("datasets",),
}


def guide(command: str) -> str:
    """The help epilog naming the guide(s) of a command."""
    pages = ", ".join(f"docs/guides/{page}.md" for page in GUIDES[command])
    return f"Guide: {pages} (or `make docs` and open build/site)."


app = typer.Typer(
    name="micebench",
    help="Benchmark neural re-rankers: cross-encoders, late interaction and MICE, effectiveness and latency.",
    epilog="Start with the README's five-minute tour; every command's guide is under docs/guides/ (`make docs`).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
datasets_app = typer.Typer(
    help="List datasets and show where a name resolves.", invoke_without_command=True, epilog=guide("datasets")
)
app.add_typer(datasets_app, name="datasets")


def out() -> Console:
    """Console for results (stdout); made per call so COLUMNS and redirections are honoured."""
    return Console()


def err() -> Console:
    """Console for errors and warnings (stderr)."""
    return Console(stderr=True)


DataDirOption = Annotated[
    str | None,
    typer.Option(
        "--data-dir",
        envvar="MICEBENCH_DATA",
        help="Local mirror of collections (BEIR layout), searched first.",
    ),
]


def use_deterministic_kernels() -> None:
    """Deterministic torch kernels only (an op without one raises); cuBLAS needs its workspace setting first."""
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


@app.command(epilog=guide("run"))
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
    batch_size: Annotated[
        int | None, typer.Option(help="Documents per forward pass (>= 1; default: the ranker's own).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto (default) | cpu | cuda | cuda:N | mps.")] = None,
    dtype: Annotated[str | None, typer.Option(help="fp32 (default) | fp16 | bf16.")] = None,
    checkpoint: Annotated[str | None, typer.Option(help="Local folder, short name or hub id of the weights.")] = None,
    schedule: Annotated[
        str | None,
        typer.Option(help="masked-ce schedule: a preset, a TOML/YAML file, or rules like 'mask1;query>document@0-4'."),
    ] = None,
    merge_layer: Annotated[
        int | None, typer.Option(help="MICE: layer k where query and document meet (1 <= k < the model's layers).")
    ] = None,
    top_layers: Annotated[
        int | None, typer.Option(help="MICE: number m of top layers kept (>= 1; k + m <= the model's layers).")
    ] = None,
    precomputed: Annotated[str | None, typer.Option(help="Document store built by `micebench precompute`.")] = None,
    untrained: Annotated[bool, typer.Option(help="Allow evaluating a MICE that was never fine-tuned.")] = False,
    max_length: Annotated[
        int | None,
        typer.Option(
            help="Maximum input tokens (ce, masked-ce >= 5: [CLS] q [SEP] d [SEP]; dense, mice >= 3; default: the "
            "ranker's own; beyond the model's positions: capped)."
        ),
    ] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="Results root folder.")] = "results",
    seed: Annotated[int, typer.Option(help="Random seed recorded in the manifest (integer).")] = 0,
    split: Annotated[str | None, typer.Option(help="qrels split of a local folder (default: test).")] = None,
    name: Annotated[str | None, typer.Option(help="Ranker label for the result folder.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing result.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its recorded progress.")] = False,
    chunk_queries: Annotated[
        int, typer.Option(help="Queries scored between two durable progress records (>= 1).")
    ] = 16,
    deterministic: Annotated[
        bool,
        typer.Option(help="Deterministic torch kernels only (errors on ops without one; docs/guides/long-runs.md)."),
    ] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Re-rank a dataset's first-stage candidates with one model, evaluate, and write the result folder."""
    from micebench.pipeline import RunConfig, run_experiment

    if deterministic:
        use_deterministic_kernels()

    if config_file is not None:
        if model is not None or dataset is not None:
            raise MicebenchError("--config runs the file's rankers and datasets: drop --model and --dataset")
        _run_experiment_file(config_file, overwrite, data_dir, device, resume)
        return
    if model is None or dataset is None:
        raise MicebenchError("run needs --model and --dataset (or --config experiment.toml)")

    given = {
        "checkpoint": checkpoint,
        "schedule": schedule,
        "merge_layer": merge_layer,
        "top_layers": top_layers,
        "precomputed": precomputed,
        "untrained": untrained or None,
        "max_length": max_length,
        "batch_size": batch_size,
        "device": device,
        "dtype": dtype,
    }
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


@app.command(epilog=guide("report"))
def report(
    results: Annotated[str, typer.Option("--results", help="Results folder to report on.")] = "results",
    baseline: Annotated[str | None, typer.Option(help="Ranker the significance marks compare against.")] = None,
    metric: Annotated[
        str, typer.Option(help="Measure of the effectiveness table (nDCG@10, RR@10, R@100, R@1000, MAP).")
    ] = "nDCG@10",
    test: Annotated[str, typer.Option(help="Paired test: student | fisher.")] = "student",
    correction: Annotated[str, typer.Option(help="holm | bonferroni | none (over the datasets).")] = "holm",
    alpha: Annotated[float, typer.Option(help="Significance level, in (0, 1).")] = 0.05,
    format: Annotated[
        list[str] | None, typer.Option("--format", help="md | latex | csv | html (repeatable; default all).")
    ] = None,
    std: Annotated[bool, typer.Option(help="Show +- std over seeds.")] = False,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Report folder (default RESULTS/report).")
    ] = None,
) -> None:
    """Paper-style tables with significance marks, the efficiency table, figures and an HTML page."""
    from micebench.report.build import FORMATS, plan_reports, write_report
    from micebench.report.collect import collect_groups
    from micebench.report.significance import CORRECTIONS, TESTS
    from micebench.report.tables import to_rich

    formats = tuple(format or FORMATS)
    for f in formats:
        if f not in FORMATS:
            raise MicebenchError(f"unknown format {f!r} (use {', '.join(FORMATS)})")
    if test not in TESTS or correction not in CORRECTIONS:
        raise MicebenchError(f"--test is one of {', '.join(TESTS)}; --correction one of {', '.join(CORRECTIONS)}")
    if not 0 < alpha < 1:  # a level of 1 or more marks every difference significant
        raise MicebenchError(f"--alpha must be between 0 and 1, exclusive (got {alpha})")
    if not Path(results).is_dir():
        raise MicebenchError(f"results folder not found: {results}")
    collections = collect_groups(results)
    for collection in collections:
        for line in collection.skipped:
            err().print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)
    folder = output or Path(results) / "report"
    for planned in plan_reports(collections, results, folder, metric, baseline, test, correction, alpha):
        written = write_report(planned, formats, std)
        if planned.title:
            out().print(f"\n{planned.title}", style="bold", markup=False, highlight=False, soft_wrap=True)
        out().print(to_rich(planned.table, std))
        out().print(planned.table.caption(), markup=False, highlight=False)
        out().print(f"wrote {len(written)} files to {planned.output}", markup=False, highlight=False, soft_wrap=True)


@datasets_app.callback()
def datasets(ctx: typer.Context, data_dir: DataDirOption = None) -> None:
    """List the paper's short names and the local mirror's folders, with where each resolves."""
    if ctx.invoked_subcommand is not None:
        return
    from micebench.data.local import is_beir_folder
    from micebench.data.registry import SHORT_NAMES, where
    from micebench.data.registry import data_dir as resolve_data_dir

    root = resolve_data_dir(data_dir)
    table = Table(title=f"datasets (local mirror: {root or 'none; set --data-dir or MICEBENCH_DATA'})")
    for column in ("name", "group", "resolves to", "source"):
        table.add_column(column)
    mirrored: set[str] = set()
    for short in SHORT_NAMES.values():
        kind, target = where(short.name, root)
        if kind == "local":
            mirrored.add(Path(target).name)
        table.add_row(short.name, short.group, target, kind)
    if root is not None:
        for folder in sorted(p for p in root.iterdir() if is_beir_folder(p) and p.name not in mirrored):
            table.add_row(folder.name, "local", str(folder.resolve()), "local")
    out().print(table)
    out().print("Any other ir_datasets id (e.g. beir/nfcorpus/dev) or a BEIR-layout folder path also works.")


@datasets_app.command("where")
def datasets_where(name: str, data_dir: DataDirOption = None) -> None:
    """Say where NAME resolves (local folder, ir_datasets id or hub set): exit 0 if local, 1 if it resolves but is
    not local (fetched when first used), 2 if it does not resolve at all."""
    from micebench.data.registry import data_dir as resolve_data_dir
    from micebench.data.registry import where

    kind, target = where(name, resolve_data_dir(data_dir))
    out().print(f"{name}\t{kind}\t{target}")
    raise typer.Exit(0 if kind == "local" else 1)


@datasets_app.command("check")
def datasets_check(name: str, data_dir: DataDirOption = None) -> None:
    """Check a collection: duplicate ids, ids missing from corpus/queries, empty texts, bad bytes, bad lines."""
    from micebench.data import load_dataset
    from micebench.data.check import check_dataset

    report = check_dataset(load_dataset(name, data_dir))
    table = Table(title=f"check of {report.dataset}: " + ", ".join(f"{k} {v}" for k, v in report.stats.items()))
    for column in ("severity", "problem", "count", "first example"):
        table.add_column(column)
    for f in report.findings:
        table.add_row("fatal" if f.fatal else "warning", f.what, str(f.count), f.example)
    out().print(table if report.findings else f"{report.dataset}: no problem found ({report.stats})")
    if report.fatal:
        raise typer.Exit(1)


@app.command(epilog=guide("models"))
def models(
    name: Annotated[str | None, typer.Argument(help="A model name: list its options and their defaults.")] = None,
) -> None:
    """List the registered rankers and what each can do, or one model's options with their defaults."""

    from micebench.rankers.base import (
        Benchmarkable,
        StoreBacked,
        Trainable,
        available_rankers,
        ranker_options,
        resolve_ranker,
    )
    from micebench.rankers.registry import option_rows

    if name is not None:
        ranker_options(name)  # a name's own options in range (mice-l0+1 is no model)
        rows = option_rows(name)
        table = Table(title=f"options of {name} (`run`, experiment files, load_ranker)")
        for column in ("option", "default", "meaning"):
            table.add_column(column)
        for row in rows:
            table.add_row(*row)
        out().print(table if rows else f"{name} takes no options")
        return
    table = Table(title="rankers (`micebench models NAME` lists a model's options)")
    table.add_column("model")
    table.add_column("can", no_wrap=True)
    table.add_column("description")
    for model, description in available_rankers().items():
        cls, _ = resolve_ranker(model.replace("<k>", "1").replace("<m>", "1"))
        abilities = [
            ability
            for ability, capability in (("train", Trainable), ("store", StoreBacked), ("latency", Benchmarkable))
            if issubclass(cls, capability)
        ]
        table.add_row(model, ", ".join(abilities) or "run", description)
    out().print(table)


@app.command(epilog=guide("results"))
def results(
    folder: Annotated[str, typer.Argument(help="Results root folder.")] = "results",
    measure: Annotated[list[str] | None, typer.Option(help="Measures to show (default: all).")] = None,
) -> None:
    """Tabulate the finished results under a folder (one row per dataset and ranker)."""
    from micebench.report.collect import load_results

    rows = load_results(folder)
    if not rows:
        raise MicebenchError(f"no finished results under {folder}")
    measures = measure or list(rows[0]["measures"])
    known = {m for row in rows for m in row["measures"]}
    unknown = [m for m in measures if m not in known]
    if unknown:
        raise MicebenchError(f"no result under {folder} has {unknown[0]!r} (measures: {', '.join(sorted(known))})")
    table = Table(title=f"results in {folder}")
    table.add_column("dataset")
    table.add_column("ranker")
    for m in measures:
        table.add_column(m, justify="right")
    for row in rows:
        table.add_row(row["dataset"], row["ranker"], *(f"{row['measures'].get(m, float('nan')):.4f}" for m in measures))
    out().print(table)


@app.command(epilog=guide("convert"))
def convert(
    source: Annotated[str, typer.Option("--from", help="Cross-encoder (or base model) to convert.")],
    merge_layer: Annotated[
        int, typer.Option(help="Layer k where query and document meet (1 <= k < the model's layers).")
    ],
    top_layers: Annotated[
        int, typer.Option(help="Number m of top layers kept, copied from k..k+m-1 (>= 1; k + m <= the model's layers).")
    ],
    out_dir: Annotated[str, typer.Option("--out", help="Folder for the MICE checkpoint.")],
    top_self_attention: Annotated[bool, typer.Option(help="Keep query self-attention in the top layers.")] = True,
    query_attends_cls: Annotated[bool, typer.Option(help="Let query tokens attend to cls in the top layers.")] = False,
    cls_attends_document: Annotated[bool, typer.Option(help="Let cls cross-attend to the document.")] = False,
    random_top_layers: Annotated[bool, typer.Option(help="Re-initialise the top layers instead of copying.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing folder.")] = False,
) -> None:
    """Write the initial (untrained) MICE-l<k>+<m> from a cross-encoder as a normal checkpoint folder."""
    from micebench.atomic import check_can_create
    from micebench.models.checkpoints import check_family
    from micebench.models.mice import MiceConfig
    from micebench.models.mice_io import convert_cross_encoder, save_mice

    if Path(out_dir).exists() and not overwrite:
        raise MicebenchError(f"{out_dir} already exists (use --overwrite to replace it)")
    check_can_create(out_dir)
    check_family(source, "ce", reader="convert --from (a cross-encoder or base model)")
    config = MiceConfig(
        merge_layer, top_layers, top_self_attention, query_attends_cls, cls_attends_document, random_top_layers
    )
    model, tokenizer = convert_cross_encoder(source, config)
    folder = save_mice(model, tokenizer, out_dir)
    params = sum(p.numel() for p in model.parameters())
    out().print(f"{config.label()} from {source}: {params / 1e6:.2f}M parameters, written to {folder}")


@app.command(epilog=guide("precompute"))
def precompute(
    model: Annotated[str, typer.Option("--model", "-m", help="mice, mice-l<k>+<m> or colbert.")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset whose corpus is encoded.")],
    checkpoint: Annotated[
        str | None, typer.Option(help="Model weights (a MICE checkpoint or a cross-encoder).")
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(help="MICE: states (default; layer-k states) or kv (top-layer keys/values); ColBERT: embeddings."),
    ] = None,
    dtype: Annotated[
        str, typer.Option(help="Storage dtype: fp16, fp32, bf16 or int8 (per-token quantised, about half of fp16).")
    ] = "fp16",
    first_stage: Annotated[
        str | None,
        typer.Option(
            help="Encode only the candidates of this first stage for the judged queries (as for `run`: auto, bm25, "
            "dataset:<name>, a run file; full = every document). Default: every document."
        ),
    ] = None,
    top_k: Annotated[
        int | None,
        typer.Option("--top-k", help="Candidates per query with --first-stage (documents, >= 1; default 100)."),
    ] = None,
    split: Annotated[str | None, typer.Option(help="qrels split of a local folder (default: test).")] = None,
    extend: Annotated[
        bool, typer.Option(help="Add the documents the store lacks to an existing store (same model, mode, dtype).")
    ] = False,
    merge_layer: Annotated[
        int | None, typer.Option(help="MICE merge layer k when converting on the fly (1 <= k < the model's layers).")
    ] = None,
    top_layers: Annotated[
        int | None,
        typer.Option(help="MICE top layers m when converting on the fly (>= 1; k + m <= the model's layers)."),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Documents per forward pass (>= 1; default: the ranker's own).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    output: Annotated[str | None, typer.Option("--output", "-o", help="Store folder.")] = None,
    limit: Annotated[int | None, typer.Option(help="Encode only the first N documents (>= 1; smoke tests).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Rebuild an existing store.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted precompute.")] = False,
    chunk_docs: Annotated[
        int, typer.Option(help="Documents per shard, the unit of resume and of sharding (>= 1).")
    ] = 4096,
    data_dir: DataDirOption = None,
) -> None:
    """Encode documents once and store their representations (keyed by doc id) for `run --precomputed`."""
    from micebench.data import load_dataset
    from micebench.rankers.base import load_ranker
    from micebench.results import slug
    from micebench.store.precompute import check_positive, store_dtype
    from micebench.store.precompute import precompute as build

    check_positive(chunk_docs=chunk_docs, batch_size=batch_size, limit=limit, top_k=top_k)
    store_dtype(dtype)
    if top_k is not None and first_stage is None:
        raise MicebenchError("--top-k applies to --first-stage candidates (without it every document is encoded)")
    from micebench.rankers.base import StoreBacked, ranker_options, rankers_with, resolve_ranker
    from micebench.runstate import Distributed

    given = {"checkpoint": checkpoint, "merge_layer": merge_layer, "top_layers": top_layers, "batch_size": batch_size}
    cls, _ = resolve_ranker(model)
    if not issubclass(cls, StoreBacked):
        stored = ", ".join(rankers_with(StoreBacked))
        raise MicebenchError(f"model {model!r} has no document store (stores: {stored} and their shapes)")
    ranker_options(model, **given, device=device)  # every option checked before the dataset or the model loads
    mode = cls.store_mode(mode)
    ds = load_dataset(dataset, data_dir, split)
    world = Distributed.from_env(device)
    ranker = load_ranker(model, **given, device=world.device(device))
    folder = (
        Path(output) if output else Path("results") / "stores" / slug(ds.name) / f"{slug(ranker.label)}-{mode}-{dtype}"
    )
    import time

    start = time.perf_counter()
    path = build(
        ranker,
        ds,
        folder,
        mode,
        dtype,
        overwrite=overwrite,
        limit=limit,
        resume=resume,
        world=world,
        chunk_docs=chunk_docs,
        first_stage=first_stage,
        top_k=top_k or 100,
        extend=extend,
        say=out().print if world.rank == 0 else None,
    )
    if world.rank != 0:
        return
    from micebench.store.manifest import read_manifest

    manifest = read_manifest(path)
    added = manifest.get("sources", [{}])[-1].get("added", manifest["num_docs"])
    out().print(
        f"{manifest['num_docs']} documents ({added} added), {manifest['num_tokens']} tokens, "
        f"{manifest['bytes_per_doc'] / 1024:.1f} KiB "
        f"per document ({mode}, {dtype}) in {time.perf_counter() - start:.1f}s; written to {path}"
    )


@app.command(epilog=guide("latency"))
def latency(
    models: Annotated[
        str, typer.Option(help="Comma list: ce, mask2, mice-l4+3[:none|states|kv], colbert[:precomputed].")
    ] = ("ce,mice-l4+3:none,mice-l4+3:states,mice-l4+3:kv,colbert:precomputed"),
    batch: Annotated[int, typer.Option(help="Documents per batch, one query (>= 1).")] = 64,
    doc_len: Annotated[
        int, typer.Option(help="Document tokens incl. its [CLS]/[SEP] (3 to the model's positions).")
    ] = 512,
    query_len: Annotated[
        int, typer.Option(help="Query tokens incl. its [CLS]/[SEP] (3 to the model's positions).")
    ] = 32,
    precompute: Annotated[str, typer.Option(help="Default for models without ':mode': none | states | kv.")] = "none",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    dtype: Annotated[str, typer.Option(help="fp32 | fp16 | bf16.")] = "fp32",
    warmup: Annotated[int, typer.Option(help="Untimed calls per model first (>= 0).")] = 3,
    repeats: Annotated[int, typer.Option(help="Timed calls per model, interleaved (>= 1).")] = 10,
    arch: Annotated[
        str, typer.Option(help="minilm-l12 | minilm-l6 | bert-base | path to a config.json.")
    ] = "minilm-l12",
    checkpoint: Annotated[str | None, typer.Option(help="Real weights instead of a random architecture.")] = None,
    include_tokenization: Annotated[bool, typer.Option(help="Also time tokenisation (reported apart).")] = False,
    paper_setup: Annotated[
        bool, typer.Option(help="The paper's protocol: batch 128, 512 tokens, fp32, tokenisation.")
    ] = False,
    docs_per_query: Annotated[
        int, typer.Option(help="Candidates per query for the per-query latency (documents, >= 1).")
    ] = 1000,
    compile: Annotated[bool, typer.Option(help="torch.compile the cross-encoder.")] = False,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads (1 to the logical cores; default: torch's, every core).")
    ] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="Results root folder.")] = "results",
    name: Annotated[str | None, typer.Option(help="Run name (default: a timestamp).")] = None,
    wide: Annotated[
        bool, typer.Option(help="Also show parameters, GFLOP/doc, GFLOP/s and share of the FLOP ratio.")
    ] = False,
) -> None:
    """Time rankers model-only (interleaved), with FLOPs, throughput and memory; write results/latency/<run>.*"""
    import time

    from micebench.latency.load import busy_warning
    from micebench.latency.runner import LatencyConfig, measure, write_latency

    if paper_setup:
        batch, doc_len, query_len, dtype, include_tokenization = 128, 512, 32, "fp32", True
    config = LatencyConfig(
        models=[m.strip() for m in models.split(",") if m.strip()],
        batch=batch,
        query_len=query_len,
        doc_len=doc_len,
        precompute=precompute,
        device=device,
        dtype=dtype,
        warmup=warmup,
        repeats=repeats,
        arch=arch,
        checkpoint=checkpoint,
        include_tokenization=include_tokenization,
        docs_per_query=docs_per_query,
        compile=compile,
        threads=threads,
    )
    if repeats < 1 or warmup < 0:
        raise MicebenchError("--repeats must be at least 1 and --warmup at least 0")
    from micebench.atomic import check_can_create

    check_can_create(Path(output) / "latency")  # before the timing, not after it
    rows, meta = measure(config)
    from micebench.results import slug

    run = slug(name) if name else time.strftime("%Y%m%d-%H%M%S")  # a name never leaves the latency folder
    json_path, _ = write_latency(rows, meta, Path(output) / "latency", run)
    table = Table(
        title=f"latency · {dtype} · batch {batch} · q{query_len}+d{doc_len} tokens · model only, per batch",
        caption=f"{meta['device_name']}, {meta['threads']} threads; every column in {json_path.with_suffix('.csv')}",
    )
    columns = ["model", "median ms", "p10-p90 ms", "docs/s", "vs ce", "FLOP ratio"]
    if wide:
        columns += ["params", "GFLOP/doc", "GFLOP/s", "share"]
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=column == "model")
    for row in rows:
        cells = {
            "model": row["label"],
            "median ms": f"{row['median_ms']:.1f}",
            "p10-p90 ms": f"{row['p10_ms']:.0f}-{row['p90_ms']:.0f}",
            "docs/s": f"{row['docs_per_s']:.0f}",
            "vs ce": f"{row.get('speedup_vs_ce', float('nan')):.1f}x",
            "FLOP ratio": f"{row.get('flop_ratio_vs_ce', float('nan')):.1f}x",
            "params": f"{row['params'] / 1e6:.1f}M",
            "GFLOP/doc": f"{row['flops_per_doc'] / 1e9:.2f}",
            "GFLOP/s": f"{row['achieved_gflops']:.0f}",
            "share": f"{row.get('share_of_flop_ratio', float('nan')):.0%}",
        }
        table.add_row(*(cells[c] for c in columns))
    out().print(table)
    if meta["load"]["busy"]:
        out().print(f"[yellow]warning:[/] {busy_warning(meta['load'])}")
    if include_tokenization:
        for row in rows:
            if "tokenize_ms" in row:
                out().print(f"{row['label']}: tokenisation {row['tokenize_ms']:.1f} ms, total {row['total_ms']:.1f} ms")
    out().print(f"written to {json_path} and .csv")


@app.command(epilog=guide("train"))
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
    split: Annotated[str, typer.Option(help="qrels split of a local training folder.")] = "train",
    negatives: Annotated[int, typer.Option(help="BM25 hard negatives per query (>= 1).")] = 20,
    group_size: Annotated[
        int, typer.Option(help="listwise: documents per query in the softmax, 1 positive + G-1 negatives (>= 2).")
    ] = 2,
    validate: Annotated[str | None, typer.Option(help="Validation dataset (best checkpoint kept).")] = None,
    validate_top_k: Annotated[int, typer.Option(help="Candidates per validation query (documents, >= 1).")] = 20,
    every: Annotated[int, typer.Option(help="Validate and checkpoint every N steps (>= 1).")] = 1000,
    grad_accumulation: Annotated[int, typer.Option(help="Micro-batches per step (>= 1).")] = 1,
    output: Annotated[str, typer.Option("--output", "-o", help="Training folder.")] = "checkpoints/run",
    resume: Annotated[bool, typer.Option(help="Continue the run in --output.")] = False,
    max_minutes: Annotated[
        float | None, typer.Option(help="Stop cleanly with a checkpoint after M minutes (> 0).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    deterministic: Annotated[
        bool, typer.Option(help="Deterministic torch kernels only, so --resume reproduces weights on CUDA too.")
    ] = False,
    data_dir: DataDirOption = None,
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
        output=output,
        device=device,
    )
    import time

    start = time.perf_counter()
    folders = train_models(
        config,
        seeds=seeds,
        resume=resume,
        max_minutes=max_minutes,
        data_dir=data_dir,
        split=split,
        warmup_given=warmup is not None,
    )
    for folder in folders:
        out().print(f"checkpoint: {folder}")
    out().print(f"training took {time.perf_counter() - start:.0f}s; curves in {Path(output)}/curves.csv|png")


@app.command(epilog=guide("schedules"))
def schedules(
    show: Annotated[
        str | None, typer.Argument(help="A preset, schedule file or compact rule string to render.")
    ] = None,
    layers: Annotated[int, typer.Option(help="Model depth to render and validate against (layers, >= 1).")] = 12,
) -> None:
    """List the schedule presets, or render one as a per-layer segment x segment grid (✓ attends, · removed)."""
    from micebench.schedules import PRESET_HELP, SEGMENTS, parse_schedule, render_grid

    if show is None:
        table = Table(title="schedule presets (also usable as --model names)")
        table.add_column("preset")
        table.add_column("removes")
        for name, text in PRESET_HELP.items():
            table.add_row(name, text)
        out().print(table)
        out().print(
            "Custom: --schedule 'mask1;document>query@0-4' (from>to[@start-end], end exclusive) or a TOML/YAML file.",
            markup=False,
        )
        return
    schedule = parse_schedule(show).validate(layers)
    out().print(f"{schedule.name}: {schedule.compact()}", markup=False)
    for start, end, grid in schedule.layer_groups(layers):
        table = Table(title=f"layers {start}-{end - 1}", title_justify="left")
        table.add_column("from \\ to")
        for segment in SEGMENTS:
            table.add_column(segment, justify="center")
        for segment, row in zip(SEGMENTS, render_grid(grid), strict=True):
            table.add_row(segment, *row)
        out().print(table)


@app.command(epilog=guide("attention"))
def attention(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset whose query-candidate pairs are read.")],
    model: Annotated[str, typer.Option("--model", "-m", help="ce, masked-ce or a schedule preset name.")] = "ce",
    checkpoint: Annotated[str | None, typer.Option(help="Cross-encoder weights.")] = None,
    schedule: Annotated[str | None, typer.Option(help="Schedule for masked-ce.")] = None,
    queries: Annotated[int, typer.Option(help="Judged queries to take, in id order (>= 1).")] = 10,
    docs_per_query: Annotated[int, typer.Option(help="Top first-stage candidates per query (>= 1).")] = 2,
    first_stage: Annotated[str, typer.Option(help="Where candidates come from (as for run).")] = "auto",
    group_size: Annotated[int, typer.Option(help="Layers per heatmap figure (>= 1).")] = 3,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    output: Annotated[str, typer.Option("--output", "-o", help="Results root folder.")] = "results",
    data_dir: DataDirOption = None,
) -> None:
    """Measure per-layer attention mass between segments (cls, query, sep1, document, sep2); write table + heatmaps."""
    from micebench.analysis.attention import attention_pairs, segment_attention, write_attention_result
    from micebench.data import load_dataset
    from micebench.rankers.base import load_ranker, ranker_options, resolve_ranker
    from micebench.rankers.cross_encoder import CrossEncoderRanker
    from micebench.rankers.masked import MaskedCrossEncoderRanker
    from micebench.results import environment, result_dir

    cls, _ = resolve_ranker(model)
    if not issubclass(cls, CrossEncoderRanker):
        raise MicebenchError(
            f"attention analysis needs a cross-encoder model (ce, masked-ce or a preset), not {model!r}"
        )
    for flag, value in (("--queries", queries), ("--docs-per-query", docs_per_query), ("--group-size", group_size)):
        if value < 1:
            raise MicebenchError(f"{flag} must be at least 1 (got {value})")
    ranker_options(model, checkpoint=checkpoint, schedule=schedule, device=device)  # --schedule only for masked-ce
    ds = load_dataset(dataset, data_dir)
    # a plain cross-encoder is read through masked-ce with no rule (identical scores, same hooks for attention)
    spec = model if issubclass(cls, MaskedCrossEncoderRanker) else "masked-ce"
    ranker = load_ranker(spec, checkpoint=checkpoint, schedule=schedule, device=device, attn_implementation="eager")
    pairs = attention_pairs(ds, first_stage, queries, docs_per_query)
    result = segment_attention(ranker, pairs)
    label = model if model != "masked-ce" else f"masked-ce-{ranker.schedule.name}"
    folder = result_dir(Path(output) / "attention", ds.name, label)
    meta = {"dataset": ds.describe(), "ranker": ranker.describe(), "pairs": len(pairs), **environment()}
    files = write_attention_result(result, folder, f"{ds.name} · {label}", meta, group_size)
    out().print(f"{len(pairs)} pairs; wrote {len(files)} files to {folder}")


#: commands that `--resume` continues after an interruption
RESUMABLE = ("run", "precompute", "train")
#: errno values of a machine fault rather than a bad input (full, read-only or failing disk, no permission)
ENVIRONMENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.ENOTDIR}
)


def say_error(message: str) -> None:
    """One line on stderr, `error: ` in bold red and the message verbatim (never read as rich markup)."""
    err().print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)


def was_interrupted(error: BaseException | None) -> bool:
    """Whether an exception was caused by Ctrl-C (typer turns KeyboardInterrupt into exit status 130)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def interrupted_message(args: list[str]) -> str:
    """`interrupted`, with the command that continues the work for the commands that resume."""
    if not args or args[0] not in RESUMABLE:
        return "interrupted"
    command = args if "--resume" in args else [*args, "--resume"]
    return f"interrupted; to continue: micebench {shlex.join(command)}"


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: an input error is one line on stderr and exit status 2, a fault of the machine
    (a read-only or full disk) one line and 1, Ctrl-C one line with the command that resumes and 130."""
    logging.basicConfig(
        level=logging.WARNING, format="%(message)s", handlers=[RichHandler(console=err(), show_path=False)]
    )
    for noisy in ("transformers", "bm25s", "ir_datasets"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
    from typer.exceptions import Abort

    args = list(sys.argv[1:] if argv is None else argv)
    try:  # not standalone: a usage error comes here, to be one line rather than typer's box
        code = app(args=args, prog_name="micebench", standalone_mode=False)
    except NoArgsIsHelpError as error:
        error.show()
        sys.exit(error.exit_code)
    except ClickException as error:  # unknown option, bad value, missing argument: bad input
        say_error(error.format_message())
        sys.exit(error.exit_code)
    except Abort:
        err().print("aborted", markup=False, highlight=False)
        sys.exit(1)
    except MicebenchError as error:
        say_error(str(error))
        sys.exit(1 if isinstance(error, EnvironmentFault) else 2)
    except OSError as error:
        if error.errno not in ENVIRONMENT_ERRNOS:
            raise
        reason = error.strerror or str(error)
        say_error(f"{error.filename}: {reason}" if error.filename else reason)
        sys.exit(1)
    except KeyboardInterrupt:
        err().print(interrupted_message(args), markup=False, highlight=False, soft_wrap=True)
        sys.exit(130)
    except SystemExit as done:
        if done.code == 130 and was_interrupted(done):
            err().print(interrupted_message(args), markup=False, highlight=False, soft_wrap=True)
        raise
    if code == 130:  # typer turns Ctrl-C into Exit(130), which comes back as the code when not standalone
        err().print(interrupted_message(args), markup=False, highlight=False, soft_wrap=True)
    if isinstance(code, int) and code:  # typer.Exit(n) comes back as n
        sys.exit(code)
