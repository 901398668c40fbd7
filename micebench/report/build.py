"""`micebench report`: tables (md, latex, csv, html), figures and one self-contained HTML page."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from micebench.atomic import atomic_write_text
from micebench.errors import MicebenchError, not_found
from micebench.report.collect import Collection
from micebench.report.efficiency import efficiency_caption, ranker_efficiency
from micebench.report.plots import dataset_bars, efficiency_frame_to_md, mice_sweeps, pareto_plot, storage_pareto
from micebench.report.tables import (
    EffectivenessTable,
    effectiveness_table,
    efficiency_table,
    md_escape,
    to_csv,
    to_html,
    to_latex,
    to_markdown,
)

if TYPE_CHECKING:
    import pandas as pd

FORMATS = ("md", "latex", "csv", "html")


@dataclass
class Report:
    """One table to write: a group of results, its effectiveness table and its output folder."""

    collection: Collection
    table: EffectivenessTable
    output: Path
    title: str = ""  # the group folder, when the results form several groups
    written: list[Path] = field(default_factory=list)


def html_page(
    table: EffectivenessTable,
    collection: Collection,
    figures: list[Path],
    show_std: bool,
    title: str = "",
    per_ranker: pd.DataFrame | None = None,
) -> str:
    """One page, no external files: tables inline, figures as base64 PNG."""
    images = "".join(
        f"<figure><img alt='{html.escape(p.stem)}' src='data:image/png;base64,"
        f"{base64.b64encode(p.read_bytes()).decode()}'/><figcaption>{html.escape(p.stem)}</figcaption></figure>"
        for p in figures
        if p.suffix == ".png"
    )
    per_ranker = ranker_efficiency(collection, table.rows) if per_ranker is None else per_ranker
    eff_html = per_ranker.to_html(index=False, na_rep="–", classes="efficiency") + (
        f"<p>{html.escape(efficiency_caption(collection))}</p>"
    )
    eff = efficiency_table(collection)
    eff_html += "<h3>Latency measurements</h3>" + (
        eff.to_html(index=False, na_rep="–", classes="latency") if not eff.empty else "<p>No latency results.</p>"
    )
    skipped = "".join(f"<li>{html.escape(s)}</li>" for s in collection.skipped)
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#111}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border-bottom:1px solid #ccc;padding:4px 8px;"
        "text-align:right}th[scope=row]{text-align:left}caption{caption-side:bottom;font-size:90%;"
        "text-align:left;padding-top:6px}img{max-width:100%}"
    )
    heading = html.escape("micebench report" + (f": {title}" if title else ""))
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{heading}</title>"
        f"<style>{style}</style></head><body><h1>{heading}</h1>"
        f"<h2>Effectiveness</h2>{to_html(table, show_std)}<h2>Efficiency</h2>{eff_html}"
        f"<h2>Figures</h2>{images}"
        + (f"<h2>Skipped results</h2><ul>{skipped}</ul>" if skipped else "")
        + "</body></html>\n"
    )


def plan_reports(
    collections: list[Collection],
    results: str | Path,
    output: str | Path,
    metric: str = "nDCG@10",
    baseline: str | None = None,
    test: str = "student",
    correction: str = "holm",
    alpha: float = 0.05,
) -> list[Report]:
    """One table per group with readable results; several groups go to `output/<group-slug>/`. Writes nothing."""
    if not collections:
        raise MicebenchError(f"no finished results under {results} (a result is a folder with a complete manifest)")
    readable = [c for c in collections if not c.perquery.empty]
    if not readable:
        skipped = sum(len(c.skipped) for c in collections)
        raise MicebenchError(f"no readable results under {results}: {skipped} skipped (see the warnings)")
    reports = []
    for collection in readable:
        title = str(collection.folder) if len(readable) > 1 else ""
        try:
            table = effectiveness_table(collection, metric, baseline, test, correction, alpha)
        except MicebenchError as error:
            raise MicebenchError(f"{title}: {error}" if title else str(error)) from None
        folder = Path(output) / collection.slug if title else Path(output)
        reports.append(Report(collection, table, folder, title))
    return reports


def write_report(report: Report, formats: tuple[str, ...] = FORMATS, show_std: bool = False) -> list[Path]:
    """Write the figures and the requested formats of one report into its folder."""
    table, collection, output = report.table, report.collection, report.output
    output.mkdir(parents=True, exist_ok=True)
    per_ranker = ranker_efficiency(collection, table.rows)  # once: it reads every stored run's store manifest
    figures = [
        *pareto_plot(table, collection, output, per_ranker),
        *storage_pareto(table, collection, output, per_ranker),
        *mice_sweeps(table, collection, output),
        *dataset_bars(table, output),
    ]
    written = list(figures)
    efficiency = efficiency_table(collection)
    if "md" in formats:
        text = (
            "## Effectiveness\n\n"
            + to_markdown(table, show_std)
            + "\n## Efficiency\n\n"
            + efficiency_frame_to_md(per_ranker)
            + "\n"
            + md_escape(efficiency_caption(collection))
            + "\n\n## Latency measurements\n\n"
            + efficiency_frame_to_md(efficiency)
        )
        written.append(atomic_write_text(output / "table.md", text))
    if "latex" in formats:
        written.append(atomic_write_text(output / "table.tex", to_latex(table, show_std)))
    if "csv" in formats:
        written.append(atomic_write_text(output / "table.csv", to_csv(table)))
        if not per_ranker.empty:
            written.append(atomic_write_text(output / "efficiency.csv", per_ranker.to_csv(index=False)))
        if not efficiency.empty:
            written.append(atomic_write_text(output / "latency.csv", efficiency.to_csv(index=False)))
    if "html" in formats:
        page = html_page(table, collection, figures, show_std, report.title, per_ranker)
        written.append(atomic_write_text(output / "report.html", page))
    report.written = written
    return written


def check_spread(reports: list[Report]) -> list[str]:
    """`--std` shows the spread over seeds: refused when no ranker has two or more seeds; otherwise the rankers
    with one seed (shown without a spread) as warnings."""
    single = [(r, ranker) for r in reports for ranker in r.table.rows if r.table.seeds.get(ranker, 0) < 2]
    if len(single) == sum(len(r.table.rows) for r in reports):
        raise MicebenchError(
            "--std shows the spread over seeds, which needs two or more seeds per ranker: every ranker here has one "
            "(an experiment file with `seeds = [...]` runs several)"
        )
    return [
        f"{ranker}{f' ({r.title})' if r.title else ''} has one seed: shown without a spread" for r, ranker in single
    ]


def check_report_options(
    results: str | Path, formats: list[str] | None, test: str, correction: str, alpha: float
) -> tuple[str, ...]:
    """Refuse an unknown format, test or correction, a level outside (0, 1) and a missing results folder, before
    anything is read; returns the formats to write (all when none is named)."""
    from micebench.report.significance import CORRECTIONS, TESTS

    chosen = tuple(formats or FORMATS)
    for f in chosen:
        if f not in FORMATS:
            raise MicebenchError(f"unknown format {f!r} (use {', '.join(FORMATS)})")
    if test not in TESTS or correction not in CORRECTIONS:
        raise MicebenchError(f"--test is one of {', '.join(TESTS)}; --correction one of {', '.join(CORRECTIONS)}")
    if not 0 < alpha < 1:  # a level of 1 or more marks every difference significant
        raise MicebenchError(f"--alpha must be between 0 and 1, exclusive (got {alpha})")
    if not Path(results).is_dir():
        problem = f"{results} is a file, not a results folder" if Path(results).exists() else None
        raise MicebenchError(problem or not_found("results folder", results))
    return chosen
