"""Report figures (matplotlib, PNG + SVG, readable in grayscale): Pareto front, MICE sweeps, per-dataset bars."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from micebench.report.collect import Collection
from micebench.report.tables import EffectivenessTable, md_escape

MARKERS = "osD^v<>pP*Xh"
HATCHES = ["", "//", "..", "xx", "\\\\", "oo", "--", "++", "**", "OO"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(text: str) -> str:
    """A name as matplotlib text: `$` escaped (no mathtext), a leading `_` kept visible in legends."""
    text = text.replace("$", r"\$")
    return " " + text if text.startswith("_") else text


def _save(fig, folder: Path, name: str) -> list[Path]:
    paths = []
    for suffix in ("png", "svg"):
        path = folder / f"{name}.{suffix}"
        fig.savefig(path, dpi=130, bbox_inches="tight")
        paths.append(path)
    _plt().close(fig)
    return paths


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated (lower latency and higher effectiveness), sorted by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -np.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def effectiveness_values(table: EffectivenessTable) -> tuple[dict[str, float], str, list[str]]:
    """What the Pareto figures plot upwards: each ranker's OOD average when the table has one, else its mean over
    the datasets (x100); the axis label; the rankers that have a value (every dataset, for the mean)."""
    datasets = [c for c in table.columns if not c.endswith(" avg")]
    if "OOD avg" in table.columns and table.mean["OOD avg"].notna().sum() >= 1:
        complete = [r for r in table.rows if pd.notna(table.mean.loc[r, "OOD avg"])]
        values = {r: 100 * float(table.mean.loc[r, "OOD avg"]) for r in complete}
        return values, f"OOD avg {table.metric} (x100)", complete
    complete = [r for r in table.rows if table.mean.loc[r, datasets].notna().all()]
    values = {r: 100 * float(table.mean.loc[r, datasets].mean()) for r in complete}
    return values, f"mean {table.metric} (x100) over {len(datasets)} datasets", complete


def pareto_plot(
    table: EffectivenessTable, collection: Collection, folder: Path, per_ranker: pd.DataFrame | None = None
) -> list[Path]:
    """Two Pareto figures: effectiveness (`effectiveness_values`) against re-ranking time per query and against
    GFLOPs per document (log scales); `per_ranker` is `ranker_efficiency` of the table's rows when already made."""
    from micebench.report.efficiency import ranker_efficiency

    datasets = [c for c in table.columns if not c.endswith(" avg")]
    values, y_label, complete = effectiveness_values(table)
    if not complete:
        return []
    runs = collection.runs[collection.runs["dataset"].isin(datasets)]
    latency = runs.groupby("ranker")["rerank_ms_per_query"].mean()
    floor = 0.1
    by_time = [(r, max(float(latency.get(r, 0.0)), floor), values[r]) for r in complete]
    written = _pareto_figure(
        by_time,
        f"re-ranking time per query (ms, log scale; first-stage-only rankers at {floor} ms)",
        y_label,
        "Effectiveness vs latency",
        folder,
        "pareto",
    )
    per_ranker = ranker_efficiency(collection, table.rows) if per_ranker is None else per_ranker
    costs = per_ranker.set_index("ranker")["GFLOP/doc"]
    models = dict(zip(collection.runs["ranker"], collection.runs["model"], strict=False))
    flop_floor = 1e-3
    by_flops = [
        (r, flop_floor if models.get(r) in ("bm25", "first-stage") else float(costs.get(r, np.nan)), values[r])
        for r in complete
    ]
    by_flops = [p for p in by_flops if not np.isnan(p[1])]
    if len(by_flops) >= 2:
        written += _pareto_figure(
            by_flops,
            f"GFLOPs per document (log scale, `micebench latency`; first-stage-only rankers at {flop_floor})",
            y_label,
            "Effectiveness vs compute",
            folder,
            "pareto_flops",
        )
    return written


def storage_pareto(
    table: EffectivenessTable, collection: Collection, folder: Path, per_ranker: pd.DataFrame | None = None
) -> list[Path]:
    """The storage Pareto figure: effectiveness (as in `pareto_plot`) against the bytes per document of the store
    each stored ranker read (log scale; labelled with the store's codec). Needs two stored rankers."""
    from micebench.report.efficiency import ranker_efficiency

    values, y_label, complete = effectiveness_values(table)
    per_ranker = ranker_efficiency(collection, table.rows) if per_ranker is None else per_ranker
    costs = per_ranker.set_index("ranker")
    points = []
    for ranker in complete:
        size = costs["store KiB/doc"].get(ranker, np.nan) if ranker in costs.index else np.nan
        if pd.notna(size):
            codec = str(costs.loc[ranker, "store"])
            label = ranker if not codec or codec in ranker else f"{ranker} ({codec})"
            points.append((label, 1024 * float(size), values[ranker]))
    return storage_figure(points, y_label, folder)


def storage_figure(points: list[tuple[str, float, float]], y_label: str, folder: Path) -> list[Path]:
    """`pareto_storage.png`/`.svg`: (label, bytes per document, effectiveness) points with their Pareto front (also
    drawn by `benchmarks/store_codecs.py` from its codec table); nothing for fewer than two points."""
    if len(points) < 2:
        return []
    return _pareto_figure(
        points, "store bytes per document (log scale)", y_label, "Effectiveness vs storage", folder, "pareto_storage"
    )


def _pareto_figure(
    points: list[tuple[str, float, float]], x_label: str, y_label: str, title: str, folder: Path, name: str
) -> list[Path]:
    """One scatter of (ranker, cost, effectiveness) with its Pareto front, saved as PNG and SVG."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, (ranker, x, y) in enumerate(points):
        ax.scatter(
            [x],
            [y],
            marker=MARKERS[i % len(MARKERS)],
            s=60,
            color="0.15",
            facecolors="white" if i % 2 else "0.15",
            label=_label(ranker),
            zorder=3,
        )
        ax.annotate(_label(ranker), (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    front = pareto_front([(x, y) for _, x, y in points])
    ax.step(
        [points[i][1] for i in front],
        [points[i][2] for i in front],
        where="post",
        color="0.4",
        linestyle="--",
        linewidth=1,
        label="Pareto front",
        zorder=2,
    )
    ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title)
    ax.grid(True, which="both", color="0.9", linewidth=0.6)
    ax.legend(fontsize=7, loc="best", frameon=True, framealpha=0.9)
    return _save(fig, folder, name)


def dataset_bars(table: EffectivenessTable, folder: Path) -> list[Path]:
    datasets = [c for c in table.columns if not c.endswith(" avg")]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(datasets) * max(1, len(table.rows)) / 3), 4.2))
    width = 0.8 / max(len(table.rows), 1)
    x = np.arange(len(datasets))
    for i, ranker in enumerate(table.rows):
        values = 100 * table.mean.loc[ranker, datasets].astype(float).to_numpy()
        ax.bar(
            x + i * width,
            values,
            width,
            label=_label(ranker),
            color=str(0.2 + 0.6 * i / max(len(table.rows) - 1, 1)),
            hatch=HATCHES[i % len(HATCHES)],
            edgecolor="black",
            linewidth=0.5,
        )
    ax.set_xticks(x + width * (len(table.rows) - 1) / 2, [_label(d) for d in datasets], rotation=20, ha="right")
    ax.set_ylabel(f"{table.metric} (x100)")
    ax.set_title("Per-dataset effectiveness")
    ax.legend(fontsize=7, ncol=2, frameon=False)
    ax.grid(True, axis="y", color="0.9", linewidth=0.6)
    return _save(fig, folder, "datasets")


def mice_sweeps(table: EffectivenessTable, collection: Collection, folder: Path) -> list[Path]:
    """Effectiveness vs merge layer (one line per top-layer count) and vs top layers, for MICE rankers."""
    runs = collection.runs.dropna(subset=["merge_layer", "top_layers"])
    if runs.empty:
        return []
    shapes = runs.drop_duplicates("ranker").set_index("ranker")[["merge_layer", "top_layers"]].astype(int)
    avg = "ID avg" if "ID avg" in table.columns else table.columns[0]
    frame = shapes.join(100 * table.mean[avg].rename("value"), how="inner").dropna()
    if frame["merge_layer"].nunique() < 2 and frame["top_layers"].nunique() < 2:
        return []
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, (x_name, line_name) in zip(
        axes, (("merge_layer", "top_layers"), ("top_layers", "merge_layer")), strict=True
    ):
        for i, (value, group) in enumerate(frame.groupby(line_name)):
            group = group.sort_values(x_name)
            ax.plot(
                group[x_name],
                group["value"],
                marker=MARKERS[i % len(MARKERS)],
                color="0.2",
                linestyle=["-", "--", ":", "-."][i % 4],
                label=f"{line_name.replace('_', ' ')} = {value}",
            )
        ax.set_xlabel(x_name.replace("_", " ") + (" k" if x_name == "merge_layer" else " m"))
        ax.set_ylabel(f"{table.metric} (x100), {avg}")
        ax.legend(fontsize=7, frameon=False)
        ax.grid(True, color="0.9", linewidth=0.6)
    fig.suptitle("MICE-l<k>+<m> sweeps")
    return _save(fig, folder, "mice_sweeps")


def efficiency_frame_to_md(frame: pd.DataFrame) -> str:
    """The efficiency table in Markdown (names escaped), or a note when there are no latency rows."""
    if frame.empty:
        return "_no latency results (run `micebench latency`)_\n"
    header = "| " + " | ".join(md_escape(str(c)) for c in frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    rows = "".join(
        "| " + " | ".join("–" if pd.isna(v) else md_escape(str(v)) for v in row) + " |\n"
        for row in frame.itertuples(index=False)
    )
    return header + rows
