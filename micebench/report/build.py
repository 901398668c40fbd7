"""`micebench report`: tables (md, latex, csv, html), figures and one self-contained HTML page."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from micebench.atomic import atomic_write_text
from micebench.report.collect import Collection, collect
from micebench.report.plots import dataset_bars, efficiency_frame_to_md, mice_sweeps, pareto_plot
from micebench.report.tables import (
    EffectivenessTable,
    effectiveness_table,
    efficiency_table,
    to_csv,
    to_html,
    to_latex,
    to_markdown,
)

FORMATS = ("md", "latex", "csv", "html")


def html_page(table: EffectivenessTable, collection: Collection, figures: list[Path], show_std: bool) -> str:
    """One page, no external files: tables inline, figures as base64 PNG."""
    images = "".join(
        f"<figure><img alt='{html.escape(p.stem)}' src='data:image/png;base64,"
        f"{base64.b64encode(p.read_bytes()).decode()}'/><figcaption>{html.escape(p.stem)}</figcaption></figure>"
        for p in figures
        if p.suffix == ".png"
    )
    eff = efficiency_table(collection)
    eff_html = (
        eff.to_html(index=False, na_rep="–", classes="efficiency") if not eff.empty else "<p>No latency results.</p>"
    )
    skipped = "".join(f"<li>{html.escape(s)}</li>" for s in collection.skipped)
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#111}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border-bottom:1px solid #ccc;padding:4px 8px;"
        "text-align:right}th[scope=row]{text-align:left}caption{caption-side:bottom;font-size:90%;"
        "text-align:left;padding-top:6px}img{max-width:100%}"
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>micebench report</title>"
        f"<style>{style}</style></head><body><h1>micebench report</h1>"
        f"<h2>Effectiveness</h2>{to_html(table, show_std)}<h2>Efficiency</h2>{eff_html}"
        f"<h2>Figures</h2>{images}"
        + (f"<h2>Skipped results</h2><ul>{skipped}</ul>" if skipped else "")
        + "</body></html>\n"
    )


def build_report(
    results: str | Path,
    output: str | Path,
    metric: str = "nDCG@10",
    baseline: str | None = None,
    test: str = "student",
    correction: str = "holm",
    alpha: float = 0.05,
    formats: tuple[str, ...] = FORMATS,
    show_std: bool = False,
) -> tuple[EffectivenessTable, Collection, list[Path]]:
    """Collect results, build the tables and figures, write the requested formats into `output`."""
    collection = collect(results)
    table = effectiveness_table(collection, metric, baseline, test, correction, alpha)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    figures = [
        *pareto_plot(table, collection, output),
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
            + efficiency_frame_to_md(efficiency)
        )
        written.append(atomic_write_text(output / "table.md", text))
    if "latex" in formats:
        written.append(atomic_write_text(output / "table.tex", to_latex(table, show_std)))
    if "csv" in formats:
        written.append(atomic_write_text(output / "table.csv", to_csv(table)))
        if not efficiency.empty:
            written.append(atomic_write_text(output / "efficiency.csv", efficiency.to_csv(index=False)))
    if "html" in formats:
        written.append(atomic_write_text(output / "report.html", html_page(table, collection, figures, show_std)))
    return table, collection, written
