"""`micebench report` (paper-style tables, figures) and `micebench results` (a quick table of finished runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from micebench.cli.app import app, err, guide, out
from micebench.errors import MicebenchError, not_found


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
    from micebench.report.build import check_report_options, check_spread, plan_reports, write_report
    from micebench.report.collect import collect_groups
    from micebench.report.tables import to_rich

    formats = check_report_options(results, format, test, correction, alpha)
    collections = collect_groups(results)
    for collection in collections:
        for line in collection.skipped:
            err().print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)
    folder = output or Path(results) / "report"
    planned_reports = plan_reports(collections, results, folder, metric, baseline, test, correction, alpha)
    for line in check_spread(planned_reports) if std else []:
        err().print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)
    for planned in planned_reports:
        written = write_report(planned, formats, std)
        if planned.title:
            out().print(f"\n{planned.title}", style="bold", markup=False, highlight=False, soft_wrap=True)
        out().print(to_rich(planned.table, std))
        out().print(planned.table.caption(), markup=False, highlight=False)
        out().print(f"wrote {len(written)} files to {planned.output}", markup=False, highlight=False, soft_wrap=True)


@app.command(epilog=guide("results"))
def results(
    folder: Annotated[str, typer.Argument(help="Results root folder.")] = "results",
    measure: Annotated[list[str] | None, typer.Option(help="Measures to show (default: all).")] = None,
) -> None:
    """Tabulate the finished results under a folder (one row per dataset and ranker)."""
    from micebench.report.collect import load_results

    if not Path(folder).is_dir():
        problem = f"{folder} is a file, not a results folder" if Path(folder).exists() else None
        raise MicebenchError(problem or not_found("results folder", folder))
    rows = load_results(folder)
    if not rows:
        raise MicebenchError(f"no finished results under {folder}")
    measures = measure or list(dict.fromkeys(m for row in rows for m in row["measures"]))
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
        values = row["measures"]
        table.add_row(row["dataset"], row["ranker"], *(f"{values[m]:.4f}" if m in values else "–" for m in measures))
    out().print(table)
