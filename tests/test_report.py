"""`micebench report`: significance against scipy, averages by hand, LaTeX structure, corrupt results, HTML."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import ttest_rel

from micebench.evaluation.measures import Evaluation
from micebench.report.build import build_report
from micebench.report.collect import collect
from micebench.report.significance import correct
from micebench.report.tables import DOWN, UP, effectiveness_table, to_latex, to_markdown
from micebench.results import result_dir, write_result
from tests.test_cli import cli

RNG = np.random.default_rng(7)
N = 30
BASE = {d: RNG.uniform(0.2, 0.8, N) for d in ("trec-dl-19", "trec-dl-20", "scifact")}
# better everywhere; on trec-dl-20 by a margin significant only without correction (p between 0.05/3 and 0.05)
SHIFT = {"trec-dl-19": 0.08, "trec-dl-20": None, "scifact": -0.06}


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
        "config": {"model": ranker},
        "ranker": {"ranker": ranker},
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
    assert "baseline 'nope' has no results" in cli(capsys, "report", "--results", str(root), "--baseline", "nope")[2]
    assert "unknown format 'pdf'" in cli(capsys, "report", "--results", str(root), "--format", "pdf")[2]
    assert "results folder not found" in cli(capsys, "report", "--results", str(tmp_path / "none"))[2]


def test_html_renders_in_a_headless_browser(results, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium installed")
    root, _ = results
    build_report(root, tmp_path / "rep", formats=("html",))
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
