"""The effectiveness table (rankers x datasets, ID/OOD averages, significance marks) and the efficiency table."""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from micebench.errors import MicebenchError
from micebench.report.collect import Collection
from micebench.report.significance import correct, paired_p_value

if TYPE_CHECKING:
    from rich.table import Table

UP, DOWN = "▲", "▼"
#: a ranker with seeds whose training did not learn (see micebench.training.health)
NOT_LEARNED = "†"
#: Names (ranker labels, then models) taken as the first stage, the default baseline.
FIRST_STAGES = ("bm25", "first-stage")
TEST_NAMES = {"student": "paired t-test", "fisher": "paired Fisher randomization test"}


@dataclass
class EffectivenessTable:
    """Means (x100), optional std, marks and best cells; renderers below turn it into md/latex/csv/html."""

    metric: str
    columns: list[str]  # datasets, then "ID avg" / "OOD avg"
    rows: list[str]  # ranker labels, grouped by backbone
    mean: pd.DataFrame
    std: pd.DataFrame
    marks: pd.DataFrame
    p_values: pd.DataFrame
    baseline: str | None
    test: str
    correction: str
    alpha: float
    seeds: dict[str, int] = field(default_factory=dict)
    backbones: dict[str, str] = field(default_factory=dict)
    baseline_reason: str = ""  # why the baseline was chosen when none was given
    #: rankers with seeds whose training did not learn (train's check): {ranker: (failed seeds, all seeds failed)}
    failed: dict[str, tuple[list[Any], bool]] = field(default_factory=dict)

    def best(self) -> dict[str, str]:
        return {c: str(self.mean[c].idxmax()) for c in self.columns if self.mean[c].notna().any()}

    def caption(self) -> str:
        """Metric, seeds, the baseline and how it was chosen, the test, the correction and alpha."""
        seeds = sorted(set(self.seeds.values()))
        text = f"{self.metric} (x100), mean over {'/'.join(map(str, seeds)) or '1'} seed(s)."
        if self.baseline:
            reason = f" ({self.baseline_reason})" if self.baseline_reason else ""
            correction = (
                "no multiple-test correction"
                if self.correction == "none"
                else f"{self.correction} correction over {self._datasets_phrase()}"
            )
            text += (
                f" Baseline: {self.baseline}{reason}. {UP}/{DOWN}: significantly better/worse than the baseline "
                f"(two-sided {TEST_NAMES.get(self.test, self.test)} over per-query values averaged over seeds, "
                f"{correction}, alpha = {self.alpha})."
            )
        else:
            text += " No significance marks: no first stage (bm25) or ce in the table; choose one with --baseline."
        for ranker, (seeds_failed, every) in self.failed.items():
            which = "/".join(map(str, seeds_failed))
            text += (
                f" {NOT_LEARNED} {ranker}: its training did not learn on any seed ({which}); these values are of an "
                "untrained model."
                if every
                else f" {NOT_LEARNED} {ranker}: seed(s) {which} did not learn (train's check): left out of the mean."
            )
        return text + " Best per column in bold; ID/OOD avg: mean over the group's datasets."

    def _datasets_phrase(self) -> str:
        """`the 4 datasets`, or `1 dataset`."""
        n = self.n_datasets()
        return f"the {n} datasets" if n != 1 else "1 dataset"

    def n_datasets(self) -> int:
        return len([c for c in self.columns if not c.endswith(" avg")])

    def cell(self, ranker: str, column: str, show_std: bool = False) -> str:
        value = self.mean.at[ranker, column]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "–"
        text = f"{100 * value:.1f}"
        if show_std and column in self.std.columns and not math.isnan(self.std.at[ranker, column]):
            text += f" ± {100 * self.std.at[ranker, column]:.1f}"
        text += self.marks.at[ranker, column] if column in self.marks.columns else ""
        return text + (NOT_LEARNED if ranker in self.failed else "")


def _metric_column(perquery: pd.DataFrame, metric: str) -> str:
    for column in perquery.columns:
        if column.lower() == metric.lower():
            return column
    known = [c for c in perquery.columns if c not in ("dataset", "ranker", "seed", "qid")]
    raise MicebenchError(f"measure {metric!r} is not in the results (available: {', '.join(known)})")


def default_baseline(collection: Collection, rankers: list[str]) -> tuple[str | None, str]:
    """The baseline when none is given, and why: experiment.json's first ranker, else the first stage, else ce."""
    if collection.experiment_rankers and collection.experiment_rankers[0] in rankers:
        return collection.experiment_rankers[0], "default: the first ranker of experiment.json"
    for name in FIRST_STAGES:
        if name in rankers:
            return name, "default: the first stage"
    models = dict(zip(collection.runs["ranker"], collection.runs["model"], strict=False))
    for ranker in rankers:
        if models.get(ranker) in FIRST_STAGES:
            return ranker, "default: the first stage"
    if "ce" in rankers:
        return "ce", "default: no first stage in the table"
    return None, ""


def effectiveness_table(
    collection: Collection,
    metric: str = "nDCG@10",
    baseline: str | None = None,
    test: str = "student",
    correction: str = "holm",
    alpha: float = 0.05,
) -> EffectivenessTable:
    """Build the table; without `baseline`, marks compare against `default_baseline` (none: no marks)."""
    pq = collection.perquery
    if pq.empty:
        raise MicebenchError("no finished results to report")
    column = _metric_column(pq, metric)
    rankers_in_order = list(dict.fromkeys(collection.runs["ranker"]))
    backbones = dict(zip(collection.runs["ranker"], collection.runs["backbone"].fillna(""), strict=False))
    rankers = sorted(rankers_in_order, key=lambda r: (backbones.get(r, ""), rankers_in_order.index(r)))
    groups = collection.groups
    datasets = sorted(pq["dataset"].unique(), key=lambda d: (groups.get(d) != "ID", d))
    reason = ""
    if baseline is None:
        baseline, reason = default_baseline(collection, rankers)
    elif baseline not in rankers:
        raise MicebenchError(f"baseline {baseline!r} is not in the table (rankers: {', '.join(rankers)})")
    pq, failed = drop_failed_seeds(pq, collection.runs)
    per_seed = pq.groupby(["ranker", "dataset", "seed"])[column].mean()
    mean = per_seed.groupby(["ranker", "dataset"]).mean().unstack("dataset").reindex(index=rankers, columns=datasets)
    std = (
        per_seed.groupby(["ranker", "dataset"]).std(ddof=1).unstack("dataset").reindex(index=rankers, columns=datasets)
    )
    seeds = per_seed.groupby("ranker").apply(lambda s: s.index.get_level_values("seed").nunique()).to_dict()
    columns = list(datasets)
    for group in ("ID", "OOD"):
        label = f"{collection.group_names.get(group, group)} avg"
        members = [d for d in datasets if groups.get(d) == group]
        if members:
            mean[label] = mean[members].mean(axis=1, skipna=False)
            columns.append(label)
    marks = pd.DataFrame("", index=rankers, columns=datasets)
    p_values = pd.DataFrame(np.nan, index=rankers, columns=datasets)
    if baseline is not None:
        seed_avg = pq.groupby(["ranker", "dataset", "qid"])[column].mean()
        for ranker in rankers:
            if ranker == baseline:
                continue
            tested, raw = [], []
            for dataset in datasets:
                try:
                    a = seed_avg.loc[(baseline, dataset)]
                    b = seed_avg.loc[(ranker, dataset)]
                except KeyError:
                    continue
                common = a.index.intersection(b.index)
                if len(common) < 2:
                    continue
                tested.append(dataset)
                raw.append(paired_p_value(a[common].to_numpy(), b[common].to_numpy(), test))
            if not raw:
                continue
            adjusted = correct(raw, correction)
            for dataset, p in zip(tested, adjusted, strict=True):
                p_values.at[ranker, dataset] = p
                if p <= alpha:
                    better = mean.at[ranker, dataset] > mean.at[baseline, dataset]
                    marks.at[ranker, dataset] = UP if better else DOWN
    return EffectivenessTable(
        metric=column,
        columns=columns,
        rows=rankers,
        mean=mean,
        std=std,
        marks=marks,
        p_values=p_values,
        baseline=baseline,
        test=test,
        correction=correction,
        alpha=alpha,
        seeds=seeds,
        backbones=backbones,
        baseline_reason=reason,
        failed=failed,
    )


def drop_failed_seeds(
    perquery: pd.DataFrame, runs: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, tuple[list[Any], bool]]]:
    """Per-query values less the seeds whose training did not learn (runs' `learned` is False), so no mean or test
    averages them in silently; a ranker whose every seed failed keeps its values (and is marked as untrained)."""
    if "learned" not in runs or runs.empty:
        return perquery, {}
    bad = runs[runs["learned"].eq(False)]  # None (unknown) is kept
    failed: dict[str, tuple[list[Any], bool]] = {}
    drop = set()
    for ranker, rows in bad.groupby("ranker", sort=False):
        seeds_failed = sorted(set(rows["seed"]))
        every = set(seeds_failed) >= set(runs.loc[runs["ranker"] == ranker, "seed"])
        failed[str(ranker)] = (seeds_failed, every)
        if not every:
            drop |= {(ranker, seed) for seed in seeds_failed}
    if drop:
        keys = list(zip(perquery["ranker"], perquery["seed"], strict=True))
        perquery = perquery[[key not in drop for key in keys]]
    return perquery, failed


def _header(table: EffectivenessTable) -> list[str]:
    return ["ranker", *table.columns]


def md_escape(text: str) -> str:
    """Text safe in a Markdown table cell: HTML escaped (as the HTML report escapes it), backslash and `|`
    escaped, line breaks written as `<br>`."""
    text = html.escape(text, quote=False)
    return re.sub(r"\r\n|\r|\n", "<br>", text.replace("\\", "\\\\").replace("|", "\\|"))


def to_markdown(table: EffectivenessTable, show_std: bool = False) -> str:
    """A GitHub Markdown table, names escaped, best value per column in bold, then the caption."""
    best = table.best()
    lines = ["| " + " | ".join(map(md_escape, _header(table))) + " |", "|" + "---|" + "---:|" * len(table.columns)]
    for ranker in table.rows:
        cells = []
        for c in table.columns:
            text = table.cell(ranker, c, show_std)
            cells.append(f"**{text}**" if best.get(c) == ranker else text)
        lines.append(f"| {md_escape(ranker)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\n{md_escape(table.caption())}\n"


_LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "|": r"\textbar{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "\r\n": " ",
    "\n": " ",
    "\r": " ",
    "-": "-{}",  # only before another "-", so "--" never becomes a dash
    "–": r"\textendash{}",
    "±": r"$\pm$",
    UP: r"$^\blacktriangle$",
    NOT_LEARNED: r"\textdagger{}",
    DOWN: r"$^\blacktriangledown$",
}
_LATEX_PATTERN = re.compile(
    "|".join("-(?=-)" if k == "-" else re.escape(k) for k in sorted(_LATEX, key=len, reverse=True))
)


def _latex_escape(text: str) -> str:
    """Text safe in LaTeX body text (one pass, so replacements are never escaped again)."""
    return _LATEX_PATTERN.sub(lambda m: _LATEX[m.group()], text)


def to_latex(table: EffectivenessTable, show_std: bool = False) -> str:
    """A booktabs table (needs \\usepackage{booktabs} and amssymb)."""
    best = table.best()
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{" + _latex_escape(table.caption()) + "}",
        r"\begin{tabular}{l" + "r" * len(table.columns) + "}",
        r"\toprule",
        " & ".join(_latex_escape(h) for h in _header(table)) + r" \\",
        r"\midrule",
    ]
    previous = None
    for ranker in table.rows:
        backbone = table.backbones.get(ranker, "")
        if previous is not None and backbone != previous:
            lines.append(r"\midrule")
        previous = backbone
        cells = []
        for c in table.columns:
            text = _latex_escape(table.cell(ranker, c, show_std))
            cells.append(r"\textbf{" + text + "}" if best.get(c) == ranker else text)
        lines.append(_latex_escape(ranker) + " & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_csv(table: EffectivenessTable) -> str:
    frame = table.mean[table.columns].copy()
    for c in table.marks.columns:
        frame[f"{c} mark"] = table.marks[c]
        frame[f"{c} p"] = table.p_values[c]
    frame.index.name = "ranker"
    return frame.to_csv()


def to_html(table: EffectivenessTable, show_std: bool = False) -> str:

    best = table.best()
    head = "".join(f"<th>{html.escape(h)}</th>" for h in _header(table))
    body = []
    for ranker in table.rows:
        cells = []
        for c in table.columns:
            text = html.escape(table.cell(ranker, c, show_std))
            cells.append(f"<td><b>{text}</b></td>" if best.get(c) == ranker else f"<td>{text}</td>")
        body.append(f"<tr><th scope='row'>{html.escape(ranker)}</th>{''.join(cells)}</tr>")
    return (
        f"<table class='effectiveness'><caption>{html.escape(table.caption())}</caption>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def to_rich(table: EffectivenessTable, show_std: bool = False) -> Table:
    """The table for the terminal, without its caption (names are shown verbatim, never read as markup)."""
    from rich.markup import escape
    from rich.table import Table

    best = table.best()
    rich_table = Table(title=escape(f"{table.metric} (x100)"))
    rich_table.add_column("ranker")
    for column in table.columns:
        rich_table.add_column(escape(column), justify="right")
    for ranker in table.rows:
        cells = [escape(table.cell(ranker, c, show_std)) for c in table.columns]
        rich_table.add_row(
            escape(ranker),
            *(f"[bold]{v}[/]" if best.get(c) == ranker else v for c, v in zip(table.columns, cells, strict=True)),
        )
    return rich_table


def efficiency_table(collection: Collection) -> pd.DataFrame:
    """One row per latency measurement: params, latency, docs/s, memory, FLOPs, speed-up vs the cross-encoder."""
    lat = collection.latency
    if lat.empty:
        return lat
    columns = {
        "run": "run",
        "device_name": "device",
        "dtype": "dtype",
        "label": "model",
        "precompute": "precomputed",
        "batch": "batch",
        "params": "params (M)",
        "median_ms": "latency/batch (ms)",
        "docs_per_s": "docs/s",
        "peak_memory_mb": "peak memory (MB)",
        "flops_per_doc": "GFLOP/doc",
        "speedup_vs_ce": "speed-up vs ce",
        "busy": "busy machine",  # other processes took cores during the timing (latency's warning)
    }
    frame = lat[[c for c in columns if c in lat.columns]].rename(columns=columns).copy()
    if "params (M)" in frame:
        frame["params (M)"] = (frame["params (M)"] / 1e6).round(1)
    if "GFLOP/doc" in frame:
        frame["GFLOP/doc"] = (frame["GFLOP/doc"] / 1e9).round(3)
    for c in ("latency/batch (ms)", "docs/s", "peak memory (MB)", "speed-up vs ce"):
        if c in frame:
            frame[c] = frame[c].astype(float).round(2)
    return frame
