"""`micebench report`: significance against scipy, averages by hand, LaTeX structure, corrupt results, HTML."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import t as student_t
from scipy.stats import ttest_rel

from micebench.evaluation.measures import Evaluation
from micebench.report.build import FORMATS, Report, plan_reports, write_report
from micebench.report.collect import collect, collect_groups, load_results
from micebench.report.discover import find_groups, group_folder, group_slug
from micebench.report.significance import correct, paired_difference
from micebench.report.tables import DOWN, UP, _latex_escape, effectiveness_table, md_escape, to_latex, to_markdown
from micebench.results import result_dir, write_result
from tests.test_cli import cli

RNG = np.random.default_rng(7)
N = 30
BASE = {d: RNG.uniform(0.2, 0.8, N) for d in ("trec-dl-19", "trec-dl-20", "scifact")}
# better everywhere; on trec-dl-20 by a margin significant only without correction (p between 0.05/3 and 0.05)
SHIFT = {"trec-dl-19": 0.08, "trec-dl-20": None, "scifact": -0.06}


def build_reports(
    results: Path, output: Path, baseline: str | None = None, formats: tuple[str, ...] = FORMATS
) -> list[Report]:
    """The reports `micebench report` writes (nDCG@10, Student's t, Holm, alpha 0.05): one per group of results."""
    reports = plan_reports(collect_groups(results), results, output, "nDCG@10", baseline, "student", "holm", 0.05)
    for report in reports:
        write_report(report, formats)
    return reports


def _noise(n: int) -> np.ndarray:
    return RNG.normal(0, 0.05, n)


def _dl20_treatment(base: np.ndarray) -> np.ndarray:
    """Search a small shift whose paired t-test p-value lies in (0.017, 0.05)."""
    noise = _noise(N)
    for shift in np.linspace(0.0, 0.05, 501):
        p = ttest_rel(base, base + shift + noise).pvalue
        if 0.02 < p < 0.045:
            return base + shift + noise
    raise AssertionError("no suitable shift")


def _write(
    root: Path,
    dataset: str,
    ranker: str,
    values: np.ndarray,
    seed: int = 0,
    seed_folder: bool = False,
    rerank_s: float = 1.0,
    model: str | None = None,
) -> Path:
    qids = [f"q{i:02d}" for i in range(len(values))]
    evaluation = Evaluation(
        {"nDCG@10": float(values.mean())}, {"nDCG@10": dict(zip(qids, map(float, values), strict=True))}, 1, len(values)
    )
    folder = result_dir(root, dataset, ranker)
    folder = folder / f"seed-{seed}" if seed_folder else folder
    manifest = {
        "dataset": {"name": dataset},
        "ranker_label": ranker,
        "seed": seed,
        "config": {"model": model or ranker},
        "ranker": {"ranker": model or ranker},
        "timings": {"rerank_s": rerank_s},
    }
    run = {q: {"d1": 1.0} for q in qids}
    return write_result(folder, run, evaluation, manifest, tag=ranker, overwrite=True)


@pytest.fixture()
def results(tmp_path) -> tuple[Path, dict]:
    root = tmp_path / "results"
    values = {"ce": dict(BASE)}
    values["mice"] = {
        "trec-dl-19": BASE["trec-dl-19"] + SHIFT["trec-dl-19"] + _noise(N),
        "trec-dl-20": _dl20_treatment(BASE["trec-dl-20"]),
        "scifact": BASE["scifact"] + SHIFT["scifact"] + _noise(N),
    }
    clipped = {r: {d: np.round(np.clip(v, 0, 1), 6) for d, v in per.items()} for r, per in values.items()}
    for ranker, per_dataset in clipped.items():
        for dataset, v in per_dataset.items():
            _write(root, dataset, ranker, v, rerank_s=3.0 if ranker == "ce" else 0.3)
    return root, clipped


@pytest.mark.parametrize("correction", ["holm", "bonferroni", "none"])
def test_marks_match_scipy_with_correction(results, correction):
    root, values = results
    table = effectiveness_table(collect(root), "nDCG@10", baseline="ce", test="student", correction=correction)
    datasets = ["trec-dl-19", "trec-dl-20", "scifact"]
    raw = [ttest_rel(values["ce"][d], values["mice"][d]).pvalue for d in datasets]
    m = len(raw)
    if correction == "bonferroni":
        expected = [min(1.0, p * m) for p in raw]
    elif correction == "holm":
        order = np.argsort(raw)
        expected = [0.0] * m
        running = 0.0
        for rank, i in enumerate(order):
            running = max(running, min(1.0, (m - rank) * raw[i]))
            expected[i] = running
    else:
        expected = raw
    for d, p in zip(datasets, expected, strict=True):
        assert table.p_values.at["mice", d] == pytest.approx(p, rel=1e-9)
        mark = "" if p > 0.05 else (UP if values["mice"][d].mean() > values["ce"][d].mean() else DOWN)
        assert table.marks.at["mice", d] == mark
    dl20 = raw[1]
    assert 0.017 < dl20 < 0.05  # significant only without correction
    # Bonferroni (p x 3 > 0.05) removes it; Holm keeps the largest p-value as is, so it stays significant there
    assert table.marks.at["mice", "trec-dl-20"] == {"none": UP, "holm": UP, "bonferroni": ""}[correction]
    assert table.marks.at["mice", "trec-dl-19"] == UP and table.marks.at["mice", "scifact"] == DOWN


def test_averages_are_hand_computed(results):
    root, values = results
    table = effectiveness_table(collect(root), baseline="ce")
    for ranker in ("ce", "mice"):
        assert table.mean.at[ranker, "ID avg"] == pytest.approx(
            (values[ranker]["trec-dl-19"].mean() + values[ranker]["trec-dl-20"].mean()) / 2, abs=1e-9
        )
        assert table.mean.at[ranker, "OOD avg"] == pytest.approx(values[ranker]["scifact"].mean(), abs=1e-9)
    assert table.columns == ["trec-dl-19", "trec-dl-20", "scifact", "ID avg", "OOD avg"]


def test_seeds_are_averaged_before_testing(tmp_path):
    root = tmp_path / "r"
    base = np.round(RNG.uniform(0.2, 0.8, N), 6)
    _write(root, "scifact", "ce", base)
    seeds = [np.round(base + 0.05 + _noise(N), 6), np.round(base + 0.03 + _noise(N), 6)]
    for s, v in enumerate(seeds):
        _write(root, "scifact", "mice", v, seed=s, seed_folder=True)
    table = effectiveness_table(collect(root), baseline="ce", correction="none")
    assert table.mean.at["mice", "scifact"] == pytest.approx(np.mean([v.mean() for v in seeds]))
    assert table.p_values.at["mice", "scifact"] == pytest.approx(ttest_rel(base, (seeds[0] + seeds[1]) / 2).pvalue)
    assert table.seeds["mice"] == 2


def test_holm_and_bonferroni_reference_values():
    np.testing.assert_allclose(correct([0.01, 0.04, 0.03], "bonferroni"), [0.03, 0.12, 0.09])
    np.testing.assert_allclose(correct([0.01, 0.04, 0.03], "holm"), [0.03, 0.06, 0.06])


def test_latex_is_well_formed(results, tmp_path):
    root, _ = results
    latex = to_latex(effectiveness_table(collect(root), baseline="ce"))
    for env in ("table", "tabular"):
        assert latex.count(rf"\begin{{{env}}}") == latex.count(rf"\end{{{env}}}") == 1
    assert latex.index(r"\toprule") < latex.index(r"\midrule") < latex.index(r"\bottomrule")
    assert latex.count("{") == latex.count("}")
    body = latex.split(r"\midrule")[1].split(r"\bottomrule")[0]
    assert all(line.count("&") == 5 for line in body.strip().splitlines() if "&" in line)
    if shutil.which("pdflatex"):
        doc = tmp_path / "t.tex"
        doc.write_text(
            "\\documentclass{article}\\usepackage{booktabs,amssymb}\\begin{document}" + latex + "\\end{document}"
        )
        subprocess.run(
            ["pdflatex", "-interaction=nonstopmode", doc.name],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            timeout=120,
        )


def test_markdown_marks_best_and_caption(results):
    root, _ = results
    md = to_markdown(effectiveness_table(collect(root), baseline="ce"))
    assert "**" in md and "holm correction over the 3 datasets" in md and "alpha = 0.05" in md


def test_corrupt_results_are_reported_and_skipped(results, capsys):
    root, _ = results
    (result_dir(root, "scifact", "mice") / "perquery.tsv").write_text("garbage\n")
    (result_dir(root, "trec-dl-19", "ce") / "metrics.json").unlink()
    collection = collect(root)
    assert len(collection.skipped) == 2
    assert any("scifact/mice" in s for s in collection.skipped) and any("metrics.json" in s for s in collection.skipped)
    table = effectiveness_table(collection, baseline="ce")
    assert np.isnan(table.mean.at["mice", "scifact"]) and np.isnan(table.mean.at["ce", "trec-dl-19"])
    code, out, err = cli(capsys, "report", "--results", str(root), "--format", "md")
    assert code == 0 and "skipped" in err


def test_report_command_writes_everything(results, capsys):
    root, _ = results
    code, out, err = cli(capsys, "report", "--results", str(root), "--baseline", "ce")
    assert code == 0, err
    folder = root / "report"
    names = {p.name for p in folder.iterdir()}
    assert {"table.md", "table.tex", "table.csv", "report.html", "pareto.png", "pareto.svg", "datasets.png"} <= names
    page = (folder / "report.html").read_text()
    assert (
        "data:image/png;base64," in page
        and "<table class='effectiveness'>" in page
        and "http" not in page.split("<body>")[1].split("data:image")[0]
    )
    assert "mice" in out and "ID avg" in out


def test_report_bad_input(results, capsys, tmp_path):
    root, _ = results
    assert (
        "baseline 'nope' is not in the table (rankers: ce, mice)"
        in cli(capsys, "report", "--results", str(root), "--baseline", "nope")[2]
    )
    assert "unknown format 'pdf'" in cli(capsys, "report", "--results", str(root), "--format", "pdf")[2]
    assert "results folder not found" in cli(capsys, "report", "--results", str(tmp_path / "none"))[2]


def test_html_renders_in_a_headless_browser(results, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium installed")
    root, _ = results
    build_reports(root, tmp_path / "rep", formats=("html",))
    shot = tmp_path / "page.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1200,1600",
            (tmp_path / "rep" / "report.html").as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    dom = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            f"--user-data-dir={tmp_path / 'profile2'}",
            "--dump-dom",
            (tmp_path / "rep" / "report.html").as_uri(),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert shot.stat().st_size > 10_000 and "micebench report" in dom and dom.count("<img") >= 2


def test_experiment_file_runs_the_cross_product_and_skips_finished(capsys, tmp_path, data_dir):
    config = tmp_path / "exp.toml"
    config.write_text(
        f'output = "{tmp_path / "out"}"\ntop_k = 10\nseeds = [0, 1]\n'
        f'[datasets]\nin_domain = ["{data_dir / "adi"}"]\nout_of_domain = ["{data_dir / "irds-dummy"}"]\n'
        '[[rankers]]\nname = "bm25"\nmodel = "bm25"\nbackbone = "-"\n'
    )
    code, out, err = cli(capsys, "run", "--config", str(config))
    assert code == 0, err
    assert "4 runs done, 0 finished results kept" in out
    assert (tmp_path / "out" / "adi" / "bm25" / "seed-1" / "run.trec").is_file()
    index = json.loads((tmp_path / "out" / "experiment.json").read_text())
    assert index["rankers"]["bm25"]["backbone"] == "-"
    code, out, _ = cli(capsys, "run", "--config", str(config))
    assert code == 0 and "0 runs done, 4 finished results kept" in out
    table = effectiveness_table(collect(tmp_path / "out"))
    assert table.seeds["bm25"] == 2 and table.columns[-2:] == ["ID avg", "OOD avg"]


@pytest.mark.parametrize("name", ["paper.toml", "offline.toml"])
def test_shipped_experiment_files_name_known_rankers_and_datasets(name):
    """The experiment files in benchmarks/ parse; every ranker is a registered model, every dataset a known name."""
    from micebench.data.registry import SHORT_NAMES
    from micebench.experiments import experiment_runs, load_experiment
    from micebench.rankers.base import is_registered

    data = load_experiment(Path(__file__).resolve().parent.parent / "benchmarks" / name)
    runs = experiment_runs(data)
    assert runs and all(is_registered(run.model) for run in runs)
    if name == "paper.toml":  # ir_datasets short names, and both backbone families of the paper
        assert {run.dataset for run in runs} <= set(SHORT_NAMES)
        backbones = {r.get("backbone") for r in data["rankers"]}
        assert {"MiniLM", "Ettin-17M", "Ettin-32M"} <= backbones


# Hand-computed fixtures: 4 queries on scifact (an out-of-domain set, so the columns are scifact and OOD avg).
# dense - bm25 = [.2, .1, .2, .2]: mean .175, sd .05, t = .175 / (.05 / 2) = 7.0 (3 degrees of freedom);
# ce - bm25 = [.3, .4, .4, .5]: mean .4, sd sqrt(.02 / 3), t = sqrt(96). Both p < 0.05 (one dataset: Holm = raw).
BM25_Q = np.array([0.1, 0.2, 0.3, 0.4])  # mean 25.0 (x100)
DENSE_Q = np.array([0.3, 0.3, 0.5, 0.6])  # mean 42.5
CE_Q = np.array([0.4, 0.6, 0.7, 0.9])  # mean 65.0
HEADER = ["| ranker | scifact | OOD avg |", "|---|---:|---:|"]


def _caption(baseline: str, reason: str) -> str:
    return (
        f"nDCG@10 (x100), mean over 1 seed(s). Baseline: {baseline} ({reason}). {UP}/{DOWN}: significantly "
        "better/worse than the baseline (two-sided paired t-test over per-query values averaged over seeds, holm "
        "correction over 1 dataset, alpha = 0.05). Best per column in bold; ID/OOD avg: mean over the group's datasets."
    )


def _experiment(folder: Path, rankers: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    index = {"in_domain": [], "out_of_domain": ["scifact"], "rankers": {r: {"model": r} for r in rankers}}
    (folder / "experiment.json").write_text(json.dumps(index))


def _table_lines(path: Path) -> list[str]:
    """The table rows of a table.md, then its caption."""
    lines = path.read_text().splitlines()
    return [line for line in lines[4 : lines.index("## Efficiency")] if line]


@pytest.fixture()
def two_groups(tmp_path) -> Path:
    """`make demo`-style results under results/demo and an experiment folder results/offline."""
    root = tmp_path / "results"
    _write(root / "demo", "scifact", "bm25", BM25_Q)
    _write(root / "demo", "scifact", "dense", DENSE_Q)
    _experiment(root / "offline", ["ce", "bm25"])
    _write(root / "offline", "scifact", "bm25", BM25_Q)
    _write(root / "offline", "scifact", "ce", CE_Q)
    return root


def test_hand_computed_t_statistics():
    assert ttest_rel(DENSE_Q, BM25_Q).statistic == pytest.approx(7.0)
    assert ttest_rel(CE_Q, BM25_Q).statistic == pytest.approx(np.sqrt(96))


def test_report_writes_one_report_per_group_below_the_folder(two_groups, capsys):
    root = two_groups
    code, out, err = cli(capsys, "report", "--results", str(root), "--format", "md")
    assert code == 0, err
    demo, offline = root / "report" / "demo", root / "report" / "offline"
    assert (demo / "table.md").read_text().splitlines()[2:4] == HEADER
    assert _table_lines(demo / "table.md") == [
        "| bm25 | 25.0 | 25.0 |",
        f"| dense | **42.5{UP}** | **42.5** |",
        _caption("bm25", "default: the first stage"),
    ]
    assert _table_lines(offline / "table.md") == [
        f"| bm25 | 25.0{DOWN} | 25.0 |",
        "| ce | **65.0** | **65.0** |",
        _caption("ce", "default: the first ranker of experiment.json"),
    ]
    assert f"wrote 5 files to {demo}\n" in out and f"wrote 5 files to {offline}\n" in out
    assert out.index(str(root / "demo")) < out.index("42.5") < out.index(str(root / "offline")) < out.index("65.0")
    assert not (root / "report" / "table.md").exists() and err == ""


def test_one_group_below_the_folder_reports_into_the_report_folder(tmp_path, capsys):
    root = tmp_path / "results"
    _write(root / "demo", "scifact", "bm25", BM25_Q)
    _write(root / "demo", "scifact", "dense", DENSE_Q, seed=3, seed_folder=True)
    code, out, err = cli(capsys, "report", "--results", str(root), "--format", "md")
    assert code == 0, err
    assert _table_lines(root / "report" / "table.md")[:2] == [
        "| bm25 | 25.0 | 25.0 |",
        f"| dense | **42.5{UP}** | **42.5** |",
    ]
    assert not (root / "report" / "demo").exists() and f"wrote 5 files to {root / 'report'}\n" in out


def test_default_baseline_is_the_first_stage(tmp_path, results):
    root = tmp_path / "fs"
    _write(root, "scifact", "ce", CE_Q)
    _write(root, "scifact", "dense", DENSE_Q)
    _write(root, "scifact", "tasb", BM25_Q, model="first-stage")  # found by its model, not its label
    table = effectiveness_table(collect(root))
    assert (table.baseline, table.baseline_reason) == ("tasb", "default: the first stage")
    assert table.marks.loc[["ce", "dense"], "scifact"].tolist() == [UP, UP]
    assert table.p_values.at["dense", "scifact"] == pytest.approx(2 * student_t.sf(7.0, 3))
    assert table.p_values.at["ce", "scifact"] == pytest.approx(2 * student_t.sf(np.sqrt(96), 3))
    _write(root, "scifact", "bm25", BM25_Q)  # a ranker labelled bm25 comes first
    assert effectiveness_table(collect(root)).baseline == "bm25"
    _experiment(root, ["colbert", "dense"])  # experiment.json's first ranker has no result: the first stage
    assert effectiveness_table(collect(root)).baseline == "bm25"
    _experiment(root, ["dense", "bm25"])
    table = effectiveness_table(collect(root))
    assert (table.baseline, table.marks.at["bm25", "scifact"]) == ("dense", DOWN)
    # no first stage: ce, as before; neither: no marks, and the caption says so
    table = effectiveness_table(collect(results[0]))
    assert (table.baseline, table.baseline_reason) == ("ce", "default: no first stage in the table")
    only = tmp_path / "only"
    _write(only, "scifact", "dense", DENSE_Q)
    _write(only, "scifact", "mice", CE_Q)
    table = effectiveness_table(collect(only))
    assert table.baseline is None and table.marks.loc[["dense", "mice"], "scifact"].tolist() == ["", ""]
    assert "No significance marks: no first stage (bm25) or ce in the table; choose one with --baseline." in (
        table.caption()
    )


def test_explicit_baseline_missing_from_a_group_is_one_line(two_groups, capsys):
    code, out, err = cli(capsys, "report", "--results", str(two_groups), "--baseline", "dense")
    assert code == 2 and out == ""
    assert err == f"error: {two_groups / 'offline'}: baseline 'dense' is not in the table (rankers: bm25, ce)\n"
    assert not (two_groups / "report").exists()
    code, _, err = cli(capsys, "report", "--results", str(two_groups / "demo"), "--baseline", "ce", "--format", "md")
    assert code == 2 and err == "error: baseline 'ce' is not in the table (rankers: bm25, dense)\n"


def test_names_are_escaped_in_every_format(tmp_path, capsys):
    root = tmp_path / "results"
    _write(root, "scifact", "bm25", BM25_Q)
    _write(root, "scifact", "a|b", DENSE_Q)
    _write(root, "scifact", "$\\bad$", CE_Q)  # mathtext would fail on it in the figures
    _write(root, "scifact", "[red]x", BM25_Q)  # rich markup would swallow it in the terminal
    code, out, err = cli(capsys, "report", "--results", str(root))
    assert code == 0, err
    folder = root / "report"
    assert _table_lines(folder / "table.md")[:4] == [
        f"| a\\|b | 42.5{UP} | 42.5 |",
        f"| $\\\\bad$ | **65.0{UP}** | **65.0** |",
        "| bm25 | 25.0 | 25.0 |",
        "| [red]x | 25.0 | 25.0 |",
    ]
    latex = (folder / "table.tex").read_text()
    assert r"a\textbar{}b & 42.5$^\blacktriangle$ & 42.5 \\" in latex
    assert r"\$\textbackslash{}bad\$ & \textbf{65.0$^\blacktriangle$} & \textbf{65.0} \\" in latex
    page = (folder / "report.html").read_text()
    assert "<th scope='row'>a|b</th>" in page and "<th scope='row'>[red]x</th>" in page
    rows = list(csv.reader((folder / "table.csv").read_text().splitlines()))
    assert [row[0] for row in rows] == ["ranker", "a|b", "$\\bad$", "bm25", "[red]x"]
    assert {"pareto.png", "datasets.png"} <= {p.name for p in folder.iterdir()}
    assert "a|b" in out and "$\\bad$" in out and "[red]x" in out


def test_escape_functions():
    assert md_escape("a|b\nc\\d\r\ne") == "a\\|b<br>c\\\\d<br>e"
    assert _latex_escape("a\\b_{c}^~|<>&%#--–±") == (
        r"a\textbackslash{}b\_\{c\}\textasciicircum{}\textasciitilde{}\textbar{}\textless{}\textgreater{}"
        r"\&\%\#-{}-\textendash{}$\pm$"
    )
    assert _latex_escape("mice-l2+2 ---") == "mice-l2+2 -{}-{}-"


def test_no_finished_results_is_one_line_naming_the_folder(tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "scifact" / "bm25").mkdir(parents=True)
    (empty / "scifact" / "bm25" / "manifest.json").write_text('{"status": "running"}')  # unfinished: not a result
    code, out, err = cli(capsys, "report", "--results", str(empty))
    assert code == 2 and out == ""
    assert err == f"error: no finished results under {empty} (a result is a folder with a complete manifest)\n"


@pytest.mark.parametrize(
    ("name", "text", "error"),
    [
        ("metrics.json", "{", "JSONDecodeError"),
        ("metrics.json", "[]", "TypeError"),
        ("perquery.tsv", "qid\tnDCG@10\nq00\tabc\n", "ValueError"),
        ("perquery.tsv", "qid\tnDCG@10\nq00\t\n", "ValueError: perquery.tsv has missing nDCG@10 values"),
        ("perquery.tsv", "", "EmptyDataError"),
        ("manifest.json", "{", "manifest.json is not a readable JSON object"),
    ],
)
def test_a_corrupt_result_is_skipped_with_a_warning(two_groups, capsys, name, text, error):
    damaged = two_groups / "demo" / "scifact" / "dense"
    (damaged / name).write_text(text)
    code, out, err = cli(capsys, "report", "--results", str(two_groups), "--format", "md")
    assert code == 0, err
    assert err.startswith(f"warning: skipped {damaged}: ") and error in err and len(err.splitlines()) == 1
    lines = _table_lines(two_groups / "report" / "demo" / "table.md")
    assert lines == ["| bm25 | **25.0** | **25.0** |", _caption("bm25", "default: the first stage")]
    assert len(_table_lines(two_groups / "report" / "offline" / "table.md")) == 3


def test_only_corrupt_results_is_an_error_after_the_warnings(tmp_path, capsys):
    root = tmp_path / "results"
    folder = _write(root, "scifact", "bm25", BM25_Q)
    (folder / "metrics.json").write_text("{")
    code, out, err = cli(capsys, "report", "--results", str(root))
    assert code == 2 and out == ""
    warning, error = err.splitlines()
    assert warning.startswith(f"warning: skipped {folder}: JSONDecodeError")
    assert error == f"error: no readable results under {root}: 1 skipped (see the warnings)"


def test_a_duplicate_result_deeper_in_an_experiment_folder_is_skipped(tmp_path):
    root = tmp_path / "results"
    _experiment(root / "exp", ["bm25"])
    kept = _write(root / "exp", "scifact", "bm25", BM25_Q)
    copy = _write(root / "exp" / "old", "scifact", "bm25", DENSE_Q)
    (collection,) = collect_groups(root)
    assert collection.folder == root / "exp" and collection.slug == "exp"
    assert collection.skipped == [f"skipped {copy}: ValueError: same dataset, ranker and seed as {kept}"]
    assert effectiveness_table(collection).mean.at["bm25", "scifact"] == pytest.approx(0.25)


def test_groups_and_their_folders(tmp_path):
    root = tmp_path / "r"
    exp = root / "exp"
    _experiment(exp, ["bm25"])
    cases = {
        root / "a" / "scifact" / "bm25": root / "a",
        root / "scifact" / "bm25": root,
        root / "x" / "y" / "scifact" / "mice" / "seed-1": root / "x" / "y",
        exp / "sub" / "scifact" / "bm25": exp,
        root / "bm25": root,  # --results pointed at a dataset folder: clamped to the root
        root: root,
    }
    for result, group in cases.items():
        assert group_folder(result, root) == group, result
    assert [group_slug(g, root) for g in (root, root / "a", root / "x" / "y")] == ["top-level", "a", "x__y"]
    for i, result in enumerate(list(cases)[:4]):
        _write(result.parents[2] if result.name.startswith("seed") else result.parents[1], "scifact", f"r{i}", BM25_Q)
    groups = find_groups(root)
    assert [(g.folder, g.slug, len(g.results)) for g in groups] == [
        (root, "top-level", 1),
        (root / "a", "a", 1),
        (exp, "exp", 1),
        (root / "x" / "y", "x__y", 1),
    ]


def test_latency_rows_come_from_the_nearest_latency_folder(tmp_path):
    root = tmp_path / "results"
    _write(root / "demo", "scifact", "bm25", BM25_Q)
    (root / "latency").mkdir()
    rows = [{"label": "c|e", "batch": 8, "median_ms": 12.5}]
    meta = {"device_name": "cpu", "dtype": "fp32", "threads": 2}
    (root / "latency" / "cpu.json").write_text(json.dumps({"meta": meta, "rows": rows}))
    (root / "latency" / "broken.json").write_text('{"rows": []}')
    (report,) = build_reports(root, tmp_path / "rep", formats=("md",))
    text = (tmp_path / "rep" / "table.md").read_text()
    assert "| run | device | dtype | model | batch | latency/batch (ms) |\n" in text
    assert "| cpu | cpu | fp32 | c\\|e | 8 | 12.5 |\n" in text
    assert report.collection.skipped == [f"skipped {root / 'latency' / 'broken.json'}: KeyError: 'meta'"]


def test_load_results_finds_results_at_any_depth_and_skips_corrupt_ones(two_groups, caplog):
    rows = load_results(two_groups)
    assert [(Path(r["folder"]).relative_to(two_groups).as_posix(), r["ranker"]) for r in rows] == [
        ("demo/scifact/bm25", "bm25"),
        ("demo/scifact/dense", "dense"),
        ("offline/scifact/bm25", "bm25"),
        ("offline/scifact/ce", "ce"),
    ]
    assert rows[1]["measures"] == {"nDCG@10": pytest.approx(0.425)}
    (two_groups / "demo" / "scifact" / "dense" / "metrics.json").write_text("{")
    assert [r["ranker"] for r in load_results(two_groups)] == ["bm25", "bm25", "ce"]
    assert f"skipped {two_groups / 'demo' / 'scifact' / 'dense'}: JSONDecodeError" in caplog.text


def test_efficiency_table_joins_runs_stores_and_latency_per_ranker(tmp_path):
    """Each ranker row takes its parameters and time per query from its runs, bytes per document from the store
    its runs read, and GFLOPs/docs/s/memory from the latency row of its family in the same mode (store or texts)."""
    root = tmp_path / "results" / "exp"
    (root).mkdir(parents=True)
    index = {"in_domain": ["scifact"], "out_of_domain": ["cisi"], "rankers": {}}
    (root / "experiment.json").write_text(json.dumps(index))
    store = tmp_path / "store"
    store.mkdir()
    manifest = {"status": "complete", "format": 1, "fields": ["states"], "dtype": "fp16", "shards": []}
    (store / "manifest.json").write_text(json.dumps({**manifest, "bytes_per_doc": 2048.0 * 3}))
    specs = {  # ranker: (model, shape, store, re-ranking seconds on scifact and on cisi, parameters)
        "bm25": ("bm25", None, None, (0.0, 0.0), None),
        "ce": ("ce", None, None, (3.0, 1.0), 22_700_000),
        "mice-l2+2": ("mice", (2, 2), str(store), (0.3, 0.1), 18_000_000),
        "mice-texts": ("mice", (2, 2), None, (1.2, 0.6), 18_000_000),
        "mice-pq": ("mice", (2, 2), str(tmp_path / "deleted-store"), (0.3, 0.1), 18_000_000),
    }
    for ranker, (model, shape, precomputed, seconds, params) in specs.items():
        for dataset, rerank_s, values in (("scifact", seconds[0], BM25_Q), ("cisi", seconds[1], BM25_Q[::-1])):
            folder = _write(root, dataset, ranker, values, rerank_s=rerank_s, model=model)
            manifest = json.loads((folder / "manifest.json").read_text())
            manifest["config"]["options"] = {"precomputed": precomputed}
            manifest["ranker"] = {"ranker": model, "parameters": params}
            if shape:
                manifest["ranker"]["mice"] = {"merge_layer": shape[0], "top_layers": shape[1]}
            if ranker == "mice-pq":  # what the run recorded of its store (since deleted)
                manifest["ranker"]["store"] = {"bytes_per_doc": 4096.0, "codec": "pq48"}
            (folder / "manifest.json").write_text(json.dumps(manifest))
    (root / "latency").mkdir()
    rows = [
        {
            "label": "ce",
            "precompute": "none",
            "batch": 64,
            "flops_per_doc": 4e9,
            "docs_per_s": 100.0,
            "peak_memory_mb": 900.0,
        },
        {
            "label": "mice-l2+2:states",
            "precompute": "states",
            "batch": 64,
            "flops_per_doc": 5e8,
            "docs_per_s": 800.0,
            "peak_memory_mb": 300.0,
        },
        {
            "label": "mice-l2+2:none",
            "precompute": "none",
            "batch": 64,
            "flops_per_doc": 2e9,
            "docs_per_s": 250.0,
            "peak_memory_mb": 700.0,
        },
        {
            "label": "mice-l2+2:states",
            "precompute": "states",
            "batch": 8,
            "flops_per_doc": 5e8,
            "docs_per_s": 1.0,
            "peak_memory_mb": 1.0,
        },
    ]
    meta = {"device_name": "cpu", "dtype": "fp32", "threads": 2}
    (root / "latency" / "run.json").write_text(json.dumps({"meta": meta, "rows": rows}))
    build_reports(root, tmp_path / "rep", baseline="ce", formats=("md", "csv"))
    with open(tmp_path / "rep" / "efficiency.csv") as handle:
        table = {row["ranker"]: row for row in csv.DictReader(handle)}
    n = len(BM25_Q)
    assert table["ce"] == {
        "ranker": "ce",
        "family": "ce",
        "precision": "fp32",
        "params (M)": "22.7",
        "GFLOP/doc": "4.0",
        "docs/s (model only)": "100.0",
        "ms/query (end to end)": str(round(1e3 * (3.0 + 1.0) / 2 / n, 1)),
        "store KiB/doc": "",
        "store": "",
        "peak memory (MB)": "900.0",
    }
    assert table["mice-l2+2"]["family"] == "mice-l2+2 (store)"
    assert table["mice-l2+2"]["docs/s (model only)"] == "800.0"  # the batch-64 row, not the batch-8 one
    assert table["mice-l2+2"]["store KiB/doc"] == "6.0"
    assert (table["mice-pq"]["store KiB/doc"], table["mice-pq"]["store"]) == ("4.0", "pq48")
    assert table["mice-l2+2"]["store"] == "fp16"  # not recorded by the run: read from the store
    assert table["mice-texts"]["family"] == "mice-l2+2"
    assert table["mice-texts"]["GFLOP/doc"] == "2.0"
    assert table["bm25"]["GFLOP/doc"] == ""
    names = {p.name for p in (tmp_path / "rep").iterdir()}
    assert {"pareto.png", "pareto_flops.png", "pareto_storage.png", "latency.csv"} <= names


def test_a_manifest_that_is_json_but_not_an_object_is_unreadable_everywhere(tmp_path, caplog):
    """`run` (is_complete), `results` and `report` share one rule: such a folder is no finished result."""
    from micebench.report.discover import find_results
    from micebench.results import is_complete, manifest_status

    folder = tmp_path / "scifact" / "bm25"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("[1, 2]")
    assert manifest_status(folder) == "unreadable" and not is_complete(folder)
    assert find_results(tmp_path) == ([], [folder])
    assert load_results(tmp_path) == []
    assert "manifest.json is not a readable JSON object" in caplog.text


def test_a_store_manifest_that_is_json_but_not_an_object_is_one_line(tmp_path):
    from micebench.errors import MicebenchError
    from micebench.store.manifest import read_manifest

    (tmp_path / "manifest.json").write_text('"complete"')
    with pytest.raises(MicebenchError, match="not a JSON object"):
        read_manifest(tmp_path)


def test_paired_difference_matches_hand_computed_t_interval():
    # differences 1, 2, 3, 4 points: mean 2.5, sd sqrt(5/3), t(0.975, 3) = 3.182446, t = 2.5 / (sd / 2) = 3.872983,
    # two-sided p = 1 - 2 (atan(x) + x / (1 + x^2)) / pi with x = t / sqrt(3) (3 degrees of freedom) = 0.030466
    reference = {"a": 0.50, "b": 0.40, "c": 0.30, "d": 0.20}
    mine = {"a": 0.51, "b": 0.42, "c": 0.33, "d": 0.24}
    got = paired_difference(mine, reference)
    assert got.queries == 4
    assert got.mean == pytest.approx(2.5)
    assert got.ci95 == pytest.approx(3.182446 * (5 / 3) ** 0.5 / 2, rel=1e-6)
    assert got.p == pytest.approx(0.030466, abs=1e-6)


def test_paired_difference_counts_a_missing_query_as_zero_and_handles_no_spread():
    assert paired_difference({}, {"q": 0.5}).mean == pytest.approx(-50.0)
    same = paired_difference({"a": 0.3, "b": 0.7}, {"a": 0.3, "b": 0.7})
    assert (same.mean, same.ci95, same.p) == (0.0, 0.0, 1.0)
