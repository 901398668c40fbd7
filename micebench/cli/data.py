"""`micebench datasets`: list the collections, say where a name resolves, check one."""

from __future__ import annotations

import typer
from rich.table import Table

from micebench.cli.app import DataDirOption, app, datasets_app, out

app.add_typer(datasets_app, name="datasets")


@datasets_app.callback()
def datasets(ctx: typer.Context, data_dir: DataDirOption = None) -> None:
    """List the paper's short names and the local mirror's folders, with where each resolves."""
    if ctx.invoked_subcommand is not None:
        return
    from micebench.data.registry import catalogue
    from micebench.data.registry import data_dir as resolve_data_dir

    root = resolve_data_dir(data_dir)
    table = Table(title=f"datasets (local mirror: {root or 'none; set --data-dir or MICEBENCH_DATA'})")
    for column in ("name", "group", "resolves to", "source"):
        table.add_column(column)
    for row in catalogue(root):
        table.add_row(*row)
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
