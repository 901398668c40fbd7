"""The `micebench` application object, its consoles, guides and the options several commands share."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.console import Console

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


DeterministicOption = Annotated[
    bool,
    typer.Option(
        help="Deterministic torch kernels only: an op without one errors; a resumed run or training reproduces its "
        "numbers on CUDA too (docs/guides/long-runs.md)."
    ),
]
