"""`benchmarks/paper_mini.py`: the comparison's plan in both sizes, checked offline without running anything."""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "paper_mini.py"


@pytest.fixture(scope="module")
def paper_mini():
    spec = importlib.util.spec_from_file_location("paper_mini", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["paper_mini"] = module
    spec.loader.exec_module(module)
    return module


def _plan(paper_mini, *argv: str):
    args = ["--checkpoints", "ck", "--results", "res", "--micebench", "micebench", "--teacher-file", "teacher.tsv"]
    return paper_mini.build_plan(paper_mini.parse_args([*args, *argv]))


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_full_dry_run_checks_every_command_offline(paper_mini, capsys):
    assert paper_mini.main(["--full", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].endswith("0 problems")


def test_full_plan_is_the_papers_recipe(paper_mini):
    plan = _plan(paper_mini, "--full")
    trains = [s.argv for s in plan.steps if s.argv[1] == "train"]
    assert {_option(a, "--model") for a in trains} >= {"ce", "masked-ce", "mice-l4+3", "mice-l4+8", "colbert"}
    for argv in trains:
        assert _option(argv, "--init") == "microsoft/MiniLM-L12-H384-uncased"
        assert _option(argv, "--train") == "msmarco-passage/train"
        assert _option(argv, "--teacher-scores") == "teacher.tsv"
        assert (_option(argv, "--lr"), _option(argv, "--batch-size"), _option(argv, "--warmup")) == (
            "7e-6",
            "32",
            "5000",
        )
        assert (_option(argv, "--steps"), _option(argv, "--seeds")) == ("125000", "5")
    config = next(iter(plan.configs.values()))  # the table's evaluation (the second times stores on a sample)
    data = tomllib.loads(config)
    assert data["top_k"] == 1000 and data["seeds"] == [12, 13, 14, 15, 16]
    assert data["datasets"]["in_domain"] == ["msmarco-dev", "trec-dl-19", "trec-dl-20"]
    assert len(data["datasets"]["out_of_domain"]) == 13


def test_mini_students_share_one_recipe_and_one_teacher_score_file(paper_mini):
    plan = _plan(paper_mini, "--families", "all")
    trains = [s.argv for s in plan.steps if s.argv[1] == "train"]
    teacher, students = trains[0], trains[1:]
    assert _option(teacher, "--teacher") == "bm25,dense"
    assert [_option(a, "--model") for a in students] == [
        "ce",
        "masked-ce",
        "masked-ce",
        "masked-ce",
        "masked-ce",
        "mice-l2+2",
        "mice-l2+4",
        "colbert",
    ]
    recipe = {"--init", "--loss", "--steps", "--batch-size", "--lr", "--warmup", "--negatives", "--seed"}
    assert len({tuple(_option(a, k) for k in sorted(recipe)) for a in students}) == 1
    assert _option(students[0], "--teacher") == "ce:" + str(Path("ck") / "teacher" / "best")
    assert {_option(a, "--teacher-scores") for a in students[1:]} == {str(Path("ck/students/ce/teacher_scores.tsv"))}
    (config,) = plan.configs.values()
    data = tomllib.loads(config)
    assert data["datasets"]["in_domain"] == ["scifact"]
    assert set(data["datasets"]["out_of_domain"]) == {
        "trec-dl-19",
        "trec-dl-20",
        "noveleval-2306",
        "cisi",
        "cacm",
        "medline-classic",
        "npl",
        "adi",
    }
    stored = {r["name"]: r.get("precomputed") for r in data["rankers"]}
    assert stored["mice-l2+2"] == "ck/stores/mice-l2+2/{dataset}"
    assert not any(name.endswith("-texts") for name in stored)  # a store scores as the texts do: no duplicate rows


def test_more_seeds_train_every_student_on_the_new_seeds_and_link_seed_12(paper_mini):
    """`--seeds 3`: every default student on seeds 13 and 14 by the table's recipe, one resumable training per seed;
    seed 12 (the table's model and its results on every set) is linked, not trained or scored again."""
    base = _plan(paper_mini)
    plan = _plan(paper_mini, "--seeds", "3")
    assert [s.argv for s in plan.steps[: len(base.steps) - 1]] == [s.argv for s in base.steps[:-1]]
    students = [s.argv for s in base.steps if s.argv[1] == "train"][1:]
    extra = [s for s in plan.steps if s.name.startswith("seed 1")]
    assert len(extra) == 2 * len(students) == 8
    for step in extra:
        table = next(a for a in students if _option(a, "--model") == _option(step.argv, "--model"))
        seed = _option(step.argv, "--seed")
        name = Path(_option(table, "-o")).name
        assert _option(step.argv, "-o") == str(Path("ck/seeds") / name / f"seed-{seed}")
        assert _option(step.argv, "--teacher-scores") == str(Path("ck/students/ce/teacher_scores.tsv"))
        for flag in ("--init", "--steps", "--lr", "--warmup", "--batch-size", "--holdout", "--patience"):
            assert _option(step.argv, flag) == _option(table, flag)
    assert sorted({_option(s.argv, "--seed") for s in extra}) == ["13", "14"]
    assert plan.links[Path("ck/seeds/mice-l2+2/seed-12")] == Path("ck/students/mice-l2+2")
    assert plan.links[Path("res-seeds/cisi/colbert/seed-12")] == Path("res/cisi/colbert")
    data = tomllib.loads(plan.configs[Path("res/seeds.toml")])
    assert data["seeds"] == [12, 13, 14] and len(data["datasets"]["out_of_domain"]) == 8
    assert {r["checkpoint"] for r in data["rankers"]} == {
        f"ck/seeds/{name}/seed-{{seed}}/best" for name in ("ce", "mask2", "mice-l2+2", "colbert")
    }
    assert plan.steps[-1].argv[1:] == ["report", "--results", "res-seeds", "--std", "--baseline", "ce"]


def test_a_finished_step_is_skipped(paper_mini, tmp_path, capsys):
    plan = paper_mini.Plan()
    done = tmp_path / "done"
    done.mkdir()
    plan.add("finished", ["false"], done=done)
    plan.add("runs", [sys.executable, "-c", "print('ran')"])
    assert paper_mini.execute(plan, tmp_path / "times.tsv") == 0
    out = capsys.readouterr().out
    assert "finished: done already" in out
    assert (tmp_path / "times.tsv").read_text().count("\n") == 1


def test_an_interrupted_store_or_training_resumes(paper_mini, tmp_path):
    """A store whose `.partial` folder exists, or a training whose `last/` exists, is continued with --resume."""
    plan = _plan(paper_mini, "--checkpoints", str(tmp_path))
    store = next(s for s in plan.steps if s.argv[1] == "precompute")
    training = next(s for s in plan.steps if s.argv[1] == "train" and s.resume_flag is not None)
    assert "--resume" not in store.command() and "--resume" not in training.command()
    folder = Path(_option(store.argv, "-o"))
    (folder.parent / f".{folder.name}.partial").mkdir(parents=True)
    Path(_option(training.argv, "-o"), "last").mkdir(parents=True)
    assert store.command()[-1] == "--resume" and training.command()[-1] == "--resume"


def test_a_training_is_finished_when_its_curves_reach_the_last_step(paper_mini, tmp_path):
    """A validated training writes best/ long before it ends: only the last seed's curves at `steps` finish it."""
    plan = _plan(paper_mini, "--full", "--checkpoints", str(tmp_path))
    student = next(s for s in plan.steps if s.name.startswith("student ce"))
    out = Path(_option(student.argv, "-o"))
    assert student.done == out / "seed-16" / "curves.csv" and student.resume_flag == out / "seed-12" / "last"
    (out / "seed-16" / "best").mkdir(parents=True)
    student.done.write_text("step,loss,lr\n5000,0.1,7e-06\n")
    assert not student.finished()
    student.done.write_text("step,loss,lr\n5000,0.1,7e-06\n125000,0.05,0.0\n")
    assert student.finished()


def test_an_interrupted_evaluation_resumes(paper_mini, tmp_path):
    plan = _plan(paper_mini, "--results", str(tmp_path))
    (evaluate,) = [s for s in plan.steps if s.argv[1:3] == ["run", "--config"]]
    assert "--resume" not in evaluate.command()
    (tmp_path / "scifact" / ".mice-l2+2.partial").mkdir(parents=True)
    assert evaluate.command()[-1] == "--resume"


def test_full_dry_run_states_disk_and_gpu_hours_that_fit(paper_mini, capsys):
    """The 5-seed plan's estimate (per step and in total) stays within 200 GB: stores only for the efficiency
    sample, effectiveness from the texts."""
    assert paper_mini.main(["--full", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    (total,) = [line for line in lines if line.startswith("total ")]
    disk, unit, hours = total.split()[1:4]
    assert unit == "GB" and 100 < float(disk.replace(",", "")) <= 200 and float(hours) > 1
    stores = [line for line in lines if line.startswith("store ")]
    assert len(stores) == 3 and all("seed 12" in line for line in stores)  # one seed, one dataset per store family
    assert any(line.startswith("data caches") for line in lines)


def test_full_plan_scores_effectiveness_from_the_texts_and_times_stores_on_a_sample(paper_mini):
    plan = _plan(paper_mini, "--full")
    main, efficiency = (tomllib.loads(text) for text in plan.configs.values())
    assert not any("precomputed" in r for r in main["rankers"]) and main["device"] == "auto"
    sample = efficiency["first_stage"]
    assert efficiency["seeds"] == [12] and efficiency["datasets"]["in_domain"] == ["msmarco-dev"]
    stored = {r["name"]: r for r in efficiency["rankers"] if "precomputed" in r}
    assert set(stored) == {"mice-l4+3", "mice-l4+8", "colbert"}
    for step in (s for s in plan.steps if s.argv[1] == "precompute"):
        assert _option(step.argv, "--first-stage") == sample and "seed-12" in _option(step.argv, "-o")


def test_a_real_run_refuses_when_the_disk_is_smaller_than_the_estimate(paper_mini, tmp_path, monkeypatch, capsys):
    import full_plan

    monkeypatch.setattr(full_plan, "free_bytes", lambda path: 10**9)
    plan = _plan(paper_mini, "--full", "--checkpoints", str(tmp_path / "ck"), "--results", str(tmp_path / "res"))
    assert paper_mini.execute(plan, tmp_path / "res" / "step-times.tsv") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "1.0 GB free" in err
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize(
    ("families", "says"), [("nosuch", "unknown family ['nosuch']"), ("mice-l2+2", "add ce to --families")]
)
def test_impossible_families_are_bad_input(paper_mini, capsys, families, says):
    assert paper_mini.main(["--families", families, "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err


def test_smoke_needs_full(paper_mini, capsys):
    with pytest.raises(SystemExit) as exited:
        paper_mini.main(["--smoke"])
    assert exited.value.code == 2 and "add --full" in capsys.readouterr().err


def test_unreadable_curves_leave_the_training_unfinished(paper_mini, tmp_path, capsys):
    plan = _plan(paper_mini, "--checkpoints", str(tmp_path))
    training = next(s for s in plan.steps if s.argv[1] == "train")
    training.done.parent.mkdir(parents=True)
    training.done.write_bytes(b"\xff\xfe\x00garbage\x80")
    assert not training.finished()
    assert str(training.done) in capsys.readouterr().out
    training.done.write_text("no,step,column\n1,2,3\n")
    assert not training.finished()


# -- the full path: ir_datasets ids, unscored shipped runs ----------------------------------------------------------
def test_auto_ranks_a_shipped_run_without_scores_with_bm25(tmp_path):
    """MS MARCO's top1000 files carry no scores (ir_datasets gives every row 0): `auto` must not take their arbitrary
    order as the BM25 ranking; a shipped run with scores is still used."""
    from micebench.data import load_dataset
    from micebench.firststage.candidates import first_stage
    from tests.conftest import write_beir

    words = ["alpha beta", "gamma delta", "alpha gamma", "beta beta", "delta alpha"]
    corpus = [{"_id": f"d{i}", "title": "", "text": t} for i, t in enumerate(words)]
    folder = write_beir(tmp_path / "c", corpus, [{"_id": "q1", "text": "alpha"}], [("q1", "d0", 1)])
    (folder / "candidates").mkdir()
    shipped = folder / "candidates" / "bm25.trec"
    shipped.write_text("".join(f"q1 Q0 d{i} {i + 1} 0 bm25\n" for i in (3, 1, 0, 2, 4)))
    candidates = first_stage(load_dataset(str(folder)), "auto", 10)
    assert candidates.source.startswith("bm25s") and set(candidates.run["q1"]) == {"d0", "d2", "d4"}
    shipped.write_text("".join(f"q1 Q0 d{i} {r} {9 - r} bm25\n" for r, i in enumerate((3, 1, 0, 2, 4), 1)))
    candidates = first_stage(load_dataset(str(folder)), "auto", 10)
    assert candidates.source == "dataset:bm25" and list(candidates.run["q1"])[0] == "d3"


def test_train_gives_no_split_to_an_ir_datasets_id(monkeypatch):
    """`train --train msmarco-passage/train` failed with "--split applies to local folders" (the default split)."""
    from micebench.training import run as training_run
    from micebench.training.loop import TrainConfig

    seen = []

    def load(name, data_dir=None, split=None):
        seen.append(split)
        raise RuntimeError("stop")

    monkeypatch.setattr("micebench.data.load_dataset", load)
    config = TrainConfig(model="ce", init="x", train="msmarco-passage/train", teacher_scores="t.tsv")
    with pytest.raises(RuntimeError):
        training_run.build_training_set(config, None, None)
    assert seen == [None]


def test_time_per_query_counts_the_reranked_queries_of_a_sampled_first_stage(tmp_path):
    """The efficiency sample re-ranks 100 of MS MARCO dev's 6,980 judged queries: its time per query divides by the
    queries that had candidates (recorded in the manifest), not by every judged query."""
    import numpy as np

    from micebench.evaluation.measures import Evaluation
    from micebench.report.collect import collect_folders
    from micebench.results import result_dir, write_result

    root = tmp_path / "results"
    qids = [f"q{i}" for i in range(10)]
    for ranker, first_stage in (("sampled", {"queries": 2}), ("whole", {})):
        values = np.linspace(0, 1, 10)
        evaluation = Evaluation({"nDCG@10": 0.5}, {"nDCG@10": dict(zip(qids, map(float, values), strict=True))}, 1, 10)
        manifest = {"dataset": {"name": "d"}, "ranker_label": ranker, "seed": 0, "config": {"model": "ce"},
                    "ranker": {"ranker": "ce"}, "timings": {"rerank_s": 1.0}, "first_stage": first_stage}  # fmt: skip
        write_result(result_dir(root, "d", ranker), {q: {"x": 1.0} for q in qids}, evaluation, manifest, tag=ranker)
    runs = collect_folders([result_dir(root, "d", r) for r in ("sampled", "whole")], {}, None).runs
    per_query = dict(zip(runs["ranker"], runs["rerank_ms_per_query"], strict=True))
    assert per_query == {"sampled": 500.0, "whole": 100.0}


@pytest.mark.parametrize(("from_texts", "code"), [(0.41231, 0), (0.4223, 1), (None, 1)])
def test_the_smoke_fails_when_a_store_scores_otherwise_than_the_texts(paper_mini, tmp_path, capsys, from_texts, code):
    import json

    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "table.md").write_text("| mice-l4+3 | 41.2 |\n")
    stored, texts = tmp_path / "mice", tmp_path / "mice-texts"
    for folder, value in ((stored, 0.41234), (texts, from_texts)):
        folder.mkdir()
        if value is not None:
            (folder / "metrics.json").write_text(json.dumps({"measures": {"nDCG@10": value}}))
    plan = paper_mini.Plan(check_report=["mice-l4+3"], same_scores=[(stored, texts)])
    assert paper_mini.check_report(plan, tmp_path / "report") == code


def test_every_training_takes_the_same_train_dtype(paper_mini):
    trains = [s.argv for s in _plan(paper_mini, "--train-dtype", "bf16", "--seeds", "2").steps if s.argv[1] == "train"]
    assert len(trains) == 1 + 4 + 4 and {_option(a, "--dtype") for a in trains} == {"bf16"}
    assert not any("--dtype" in s.argv for s in _plan(paper_mini).steps if s.argv[1] == "train")  # auto: as before
