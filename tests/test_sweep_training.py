"""Training's bad inputs and its checks (issues 32 and 36): non-finite teacher scores, seeds out of range, judged
queries without a text, the convergence-rule options, a diverging loss, a run that does not learn, a masked-ce
checkpoint that carries its schedule, the held-out validation split and the report's handling of failed seeds."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from micebench.errors import MicebenchError
from micebench.training.health import constant_loss, verdict
from micebench.training.loop import TrainConfig, Trainer, batch_indices
from tests.conftest import write_beir
from tests.test_cli import cli

WORDS = ["goldfish", "tank", "water", "wifi", "radio", "protocol", "aquarium", "router", "fish", "signal"]


@pytest.fixture()
def collection(tmp_path):
    """Six train queries over 40 documents (query qi judges document di)."""
    rng = np.random.default_rng(0)
    corpus = [{"_id": f"d{i}", "title": "", "text": " ".join(rng.choice(WORDS, 8))} for i in range(40)]
    queries = [{"_id": f"q{i}", "text": " ".join(rng.choice(WORDS, 2))} for i in range(6)]
    return write_beir(tmp_path / "c", corpus, queries, [(f"q{i}", f"d{i}", 1) for i in range(6)], split="train")


def _scores_file(tmp_path, rows, name="scores.tsv"):
    path = tmp_path / name
    path.write_text("".join(f"{p}\t{n}\t{q}\t{d}\t{e}\n" for p, n, q, d, e in rows))
    return path


def _train(capsys, tiny, collection, out, *extra):
    args = ["train", "--model", "ce", "--init", tiny, "--train", str(collection), "--split", "train"]
    args += ["--steps", "4", "--batch-size", "2", "--warmup", "1", "--max-length", "32", "--negatives", "3"]
    args += ["--device", "cpu", "-o", str(out), *extra]
    return cli(capsys, *args)


GOOD = [(5.0, 0.0, f"q{i}", f"d{i}", f"d{(i + 7) % 40}") for i in range(6)]


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_a_non_finite_teacher_score_is_refused_naming_file_and_line(capsys, tmp_path, tiny_bert_ce, collection, bad):
    rows = [*GOOD[:2], (bad, 0.0, "q2", "d2", "d9"), *GOOD[3:]]
    path = _scores_file(tmp_path, rows)
    code, _, err = _train(capsys, tiny_bert_ce, collection, tmp_path / "out", "--teacher-scores", str(path))
    assert code == 2 and f"{path}:3:" in err and "finite" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--seed", "4294967295", "--seeds", "2"], "every seed must be between"),
        (["--seed", "-1"], "every seed must be between"),
        (["--holdout", "-1"], "--holdout"),
        (["--holdout", "6"], "leaves nothing to train on"),
        (["--holdout", "2", "--validate", "scifact"], "not both"),
        (["--patience", "2"], "--patience needs validation"),
        (["--teacher-norm", "zscore"], "unknown --teacher-norm"),
        (["--stop-after", "0"], "--stop-after"),
    ],
)
def test_impossible_training_options_are_refused_before_any_work(
    capsys, tmp_path, tiny_bert_ce, collection, flags, needle
):
    path = _scores_file(tmp_path, GOOD)
    code, out, err = _train(capsys, tiny_bert_ce, collection, tmp_path / "out", "--teacher-scores", str(path), *flags)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (out, err)
    assert not (tmp_path / "out").exists()


def test_resume_with_nothing_to_resume_is_refused_before_the_teacher_scores_anything(
    capsys, tmp_path, tiny_bert_ce, collection
):
    code, out, err = _train(capsys, tiny_bert_ce, collection, tmp_path / "out", "--teacher", "bm25", "--resume")
    assert code == 2 and "nothing to resume" in err and len(err.strip().splitlines()) == 1, (out, err)
    assert not (tmp_path / "out" / "teacher_scores.tsv").exists()


@pytest.mark.parametrize("source", ["mined", "scores-file"])
def test_a_judged_query_absent_from_the_queries_is_refused_as_run_refuses_it(
    capsys, tmp_path, tiny_bert_ce, collection, source
):
    qrels = collection / "qrels" / "train.tsv"
    qrels.write_text(qrels.read_text() + "q-orphan\td3\t1\n")
    teacher = ["--teacher", "bm25"] if source == "mined" else ["--teacher-scores", str(_scores_file(tmp_path, GOOD))]
    code, _, err = _train(capsys, tiny_bert_ce, collection, tmp_path / "out", *teacher)
    assert code == 2 and "judged query ids are absent from the queries" in err and "'q-orphan'" in err
    assert not (tmp_path / "out" / "best").exists()


def test_a_diverging_loss_stops_with_exit_1_and_writes_no_best(capsys, tmp_path, tiny_bert_ce, collection):
    # finite teacher scores whose squared margin overflows float32: the loss is inf at the first step
    huge = [(1e38, -1e38, q, p, n) for _, _, q, p, n in GOOD]
    path = _scores_file(tmp_path, huge)
    code, _, err = _train(capsys, tiny_bert_ce, collection, tmp_path / "out", "--teacher-scores", str(path))
    assert code == 1 and "training diverged" in err and "step 1" in err
    assert not (tmp_path / "out" / "best").exists()


def test_a_run_that_does_not_learn_is_warned_about_and_recorded(capsys, tmp_path, tiny_bert_ce, collection):
    """A learning rate too small to move the weights: the loss stays at the constant scorer's level (25 here)."""
    path = _scores_file(tmp_path, GOOD)
    code, _, err = _train(
        capsys, tiny_bert_ce, collection, tmp_path / "out", "--teacher-scores", str(path), "--lr", "1e-12"
    )
    assert code == 0
    assert "warning: ce seed 12 did not learn" in err and "constant scorer (25;" in err
    meta = json.loads((tmp_path / "out" / "best" / "micebench_training.json").read_text())
    assert meta["learned"]["learned"] is False and meta["learned"]["constant_loss"] == pytest.approx(25.0)
    assert meta["learned"]["late_loss"] == pytest.approx(25.0, rel=0.05)
    card = (tmp_path / "out" / "best" / "README.md").read_text()
    assert "## Warning: this run did not learn" in card


def test_curves_log_the_student_and_teacher_score_scale(capsys, tmp_path, tiny_bert_ce, collection):
    rows = [(float(i), -float(i) / 2, f"q{i}", f"d{i}", f"d{(i + 7) % 40}") for i in range(6)]
    path = _scores_file(tmp_path, rows)
    code, _, err = _train(capsys, tiny_bert_ce, collection, tmp_path / "out", "--teacher-scores", str(path))
    assert code == 0, err
    with open(tmp_path / "out" / "curves.csv", newline="") as handle:
        curves = list(csv.DictReader(handle))
    assert len(curves) == 4
    for record in curves:  # the teacher side recomputed from the step's own triples (a function of seed, step)
        chosen = [rows[i] for i in batch_indices(12, int(record["step"]) - 1, 2, len(rows))]
        margins = [p - n for p, n, *_ in chosen]
        scores = [p for p, *_ in chosen] + [n for _, n, *_ in chosen]
        assert float(record["teacher_margin"]) == pytest.approx(np.mean(np.abs(margins)), rel=1e-5)
        assert float(record["teacher_std"]) == pytest.approx(np.std(scores), rel=1e-5)
        assert float(record["student_std"]) >= 0 and float(record["grad_norm"]) >= 0
        assert float(record["agreement"]) in (0.0, 0.5, 1.0)  # the share of the step's 2 pairs ordered as the teacher


def test_teacher_norm_divides_the_targets_by_the_margin_rms(tmp_path, tiny_bert_ce, collection):
    from micebench.data import load_dataset
    from micebench.training.data import read_teacher_scores
    from micebench.training.run import load_student

    rows = [(3.0, -1.0, q, p, n) for _, _, q, p, n in GOOD]  # every margin 4: the RMS is 4
    training = read_teacher_scores(_scores_file(tmp_path, rows), load_dataset(str(collection), split="train"))
    config = TrainConfig(
        model="ce", init=tiny_bert_ce, train=str(collection), steps=1, batch_size=6, warmup=0, max_length=32,
        device="cpu", output=str(tmp_path / "o"), teacher_norm="margin-rms",
    )  # fmt: skip
    trainer = Trainer(config, load_student(config), training)
    assert trainer.teacher_scale == pytest.approx(4.0) and trainer.constant_loss == pytest.approx(1.0)
    trainer.loss_on(training.triples)
    assert trainer._scale[-1]["teacher_margin"] == pytest.approx(1.0)


def test_masked_ce_checkpoint_carries_its_schedule(capsys, tmp_path, tiny_bert_ce, collection):
    from micebench import load_ranker

    path = _scores_file(tmp_path, GOOD)
    code, _, err = cli(
        capsys, "train", "--model", "masked-ce", "--schedule", "mask2", "--init", tiny_bert_ce,
        "--train", str(collection), "--split", "train", "--teacher-scores", str(path), "--steps", "2",
        "--batch-size", "2", "--warmup", "1", "--max-length", "32", "--device", "cpu", "-o", str(tmp_path / "m"),
    )  # fmt: skip
    assert code == 0, err
    best = tmp_path / "m" / "best"
    assert json.loads((best / "config.json").read_text())["micebench_schedule"]["name"] == "mask2"
    plain = load_ranker("masked-ce", checkpoint=str(best), device="cpu")
    preset = load_ranker("mask2", checkpoint=str(best), device="cpu")
    assert plain.schedule == preset.schedule and plain.schedule.rules
    docs = ["goldfish tank water", "wifi router signal"]
    torch.testing.assert_close(
        torch.as_tensor(plain.score("fish tank", docs)), torch.as_tensor(preset.score("fish tank", docs))
    )
    card = (best / "README.md").read_text()
    assert "micebench run --model masked-ce --checkpoint" in card and "carries its attention schedule (mask2)" in card


def test_the_held_out_split_is_fixed_and_never_trained_on(tmp_path, collection):
    from micebench.data import load_dataset
    from micebench.training.data import holdout_queries
    from micebench.training.run import build_training_set

    dataset = load_dataset(str(collection), split="train")
    held = holdout_queries(dataset, 2)
    # pinned: a change of the split (its seed, its order of eligible queries) changes every validated result
    assert held == {"q2", "q5"}
    for seed in (12, 13):
        config = TrainConfig(
            model="ce", init="x", train=str(collection), seed=seed, negatives_per_query=3, holdout=2,
            output=str(tmp_path / f"o{seed}"),
        )  # fmt: skip
        training = build_training_set(config, None, "train", dataset, held)
        assert {t.qid for t in training.triples} == {f"q{i}" for i in range(6)} - held


def test_patience_stops_the_run_and_a_resume_does_not_go_on(tmp_path, tiny_bert_ce, collection):
    from micebench.data import load_dataset
    from micebench.training.data import mine_bm25_triples
    from micebench.training.run import load_student

    values = iter([0.5, 0.4, 0.45, 0.3, 0.9, 0.9])

    def validator(student):  # improves once, then never: patience 2 stops after the 3rd validation
        return next(values)

    training = mine_bm25_triples(load_dataset(str(collection), split="train"), depth=10, negatives=3)
    config = TrainConfig(
        model="ce", init=tiny_bert_ce, train=str(collection), loss="bce", steps=12, batch_size=2, warmup=1,
        every=2, patience=2, max_length=32, device="cpu", output=str(tmp_path / "p"),
    )  # fmt: skip
    trainer = Trainer(config, load_student(config), training, validator)
    trainer.run()
    assert trainer.step == 6 and trainer.history[-1]["stop"] == "patience"
    assert json.loads((tmp_path / "p" / "best" / "micebench_training.json").read_text())["step"] == 2
    again = Trainer(config, load_student(config), training, validator)
    again.run(resume=True)
    assert again.step == 6

    # below the first stage it re-ranks, a student has not begun to learn the ranking: patience does not count
    values = iter([0.5, 0.4, 0.45, 0.3, 0.2, 0.1])
    validator.first_stage = 0.6
    below = replace(config, output=str(tmp_path / "q"))
    stuck = Trainer(below, load_student(below), training, validator)
    stuck.run()
    assert stuck.step == 12 and "stop" not in stuck.history[-1]
    assert stuck.health["learned"] is False and "below the first stage" in " ".join(stuck.health["reasons"])


def test_the_verdict_on_synthetic_records():
    falling = [{"step": s, "loss": 10.0 / s} for s in range(1, 41)]
    flat = [{"step": s, "loss": 9.8} for s in range(1, 41)]
    assert verdict(falling, 5, 10.0, None)["learned"]
    assert not verdict(flat, 5, 10.0, None)["learned"]
    for level, learned in ((6.0, False), (4.0, True)):  # the line: half the constant scorer's loss
        assert verdict([{"step": s, "loss": level} for s in range(1, 41)], 5, 10.0, None)["learned"] is learned
    below = [*falling, {"step": 40, "validation": 0.3}]
    result = verdict(below, 5, 10.0, 0.6)
    assert not result["learned"] and "below the first stage" in result["reasons"][0]
    assert constant_loss("margin-mse", [3.0, -1.0]) == pytest.approx(5.0)
    assert constant_loss("listwise", [], group_size=4) == pytest.approx(np.log(4))


def test_report_leaves_a_failed_seed_out_of_the_mean_and_says_so():
    from micebench.report.collect import Collection
    from micebench.report.tables import NOT_LEARNED, effectiveness_table, to_markdown

    rows, runs = [], []
    for ranker, seed, value, learned in [
        ("ce", 12, 0.6, True), ("ce", 13, 0.7, True), ("mice", 12, 0.5, True), ("mice", 13, 0.1, False),
        ("broken", 12, 0.05, False),
    ]:  # fmt: skip
        rows += [
            {
                "dataset": "d",
                "ranker": ranker,
                "seed": seed,
                "qid": f"q{i}",
                "nDCG@10": value + 0.01 * ((7 * i + seed) % 5),
            }
            for i in range(4)
        ]
        runs.append(
            {"dataset": "d", "ranker": ranker, "seed": seed, "model": ranker, "backbone": "", "learned": learned}
        )
    collection = Collection(pd.DataFrame(rows), pd.DataFrame(runs), pd.DataFrame(), {"d": "ID"}, [], [], {})
    table = effectiveness_table(collection, baseline="ce")

    def mean_of(ranker, seeds):
        return np.mean([r["nDCG@10"] for r in rows if r["ranker"] == ranker and r["seed"] in seeds])

    assert table.mean.at["mice", "d"] == pytest.approx(mean_of("mice", {12}))  # seed 13 left out
    assert table.mean.at["ce", "d"] == pytest.approx(mean_of("ce", {12, 13}))
    assert table.mean.at["broken", "d"] == pytest.approx(mean_of("broken", {12}))  # every seed failed: kept, marked
    text = to_markdown(table)
    assert f"{100 * mean_of('mice', {12}):.1f}{NOT_LEARNED}" in text and "seed(s) 13 did not learn" in text
    assert "broken: its training did not learn on any seed" in text
    with pytest.raises(MicebenchError):
        effectiveness_table(collection, baseline="nosuch")


def test_a_teacher_ranker_that_scores_nan_is_refused_naming_the_pair(monkeypatch, collection):
    from micebench.data import load_dataset
    from micebench.training import run
    from micebench.training.data import mine_bm25_triples

    dataset = load_dataset(str(collection), split="train")
    training = mine_bm25_triples(dataset, depth=10, negatives=3)

    def half_nan(model, checkpoint, pairs, dataset, device, max_length):  # a teacher whose 2nd pair is NaN
        values = np.arange(len(pairs), dtype=float)
        values[1] = np.nan
        return values

    monkeypatch.setattr(run, "_teacher_scores", half_nan)
    with pytest.raises(MicebenchError, match=r"teacher bm25 gave 1 non-finite scores \(e\.g\. query 'q0'"):
        run.score_with_teacher(training, "bm25", "cpu", dataset=dataset)


def test_train_with_holdout_validates_on_the_held_out_queries(capsys, tmp_path, tiny_bert_ce, collection):
    """The success path of --holdout through the command line: validation on the two held-out queries at every
    --every steps, written to curves.csv and best/."""
    path = _scores_file(tmp_path, GOOD)
    out = tmp_path / "out"
    code, _, err = _train(
        capsys, tiny_bert_ce, collection, out, "--teacher-scores", str(path), "--holdout", "2", "--every", "2"
    )
    assert code == 0, err
    curves = list(csv.DictReader((out / "curves.csv").open()))
    assert [r["step"] for r in curves if r.get("validation")] == ["2", "4"]
    meta = json.loads((out / "best" / "micebench_training.json").read_text())
    assert meta["triples"] == 4  # 6 triples of the scores file less those of q2 and q5


def test_report_reads_the_verdict_from_the_run_manifest_after_the_checkpoint_moved(tmp_path):
    from micebench.report.collect import training_verdict
    from micebench.training.health import recorded_verdict

    checkpoint = tmp_path / "ck"
    checkpoint.mkdir()
    record = {"learned": False, "reasons": ["the loss stays at the constant scorer's level"]}
    (checkpoint / "micebench_training.json").write_text(json.dumps({"steps": 10, "learned": record}))
    assert recorded_verdict(checkpoint) == record and recorded_verdict(tmp_path / "nosuch") is None
    options = {"config": {"options": {"checkpoint": str(checkpoint)}}}
    assert training_verdict(options) is False  # a run from before manifests carried it: read from the folder
    manifest = {**options, "training_verdict": record}  # what `run` writes now
    (checkpoint / "micebench_training.json").unlink()  # the checkpoint moved or was deleted
    assert training_verdict(manifest) is False and training_verdict(options) is None
    assert training_verdict({"config": {"options": {}}}) is None


def test_run_copies_the_checkpoints_training_verdict_into_its_manifest(tmp_path, capsys, tiny_bert_ce):
    import shutil

    from tests.conftest import write_beir
    from tests.test_cli import cli

    checkpoint = tmp_path / "ck"
    shutil.copytree(tiny_bert_ce, checkpoint)
    record = {"learned": False, "reasons": ["the loss stays at the constant scorer's level"]}
    (checkpoint / "micebench_training.json").write_text(json.dumps({"steps": 10, "learned": record}))
    corpus = [{"_id": f"d{i}", "title": "", "text": f"document {i} about topic {i % 3}"} for i in range(6)]
    data = write_beir(tmp_path / "small", corpus, [{"_id": "q1", "text": "topic one"}], [("q1", "d1", 1)])
    code, _, err = cli(capsys, "run", "--model", "ce", "--checkpoint", str(checkpoint), "--dataset", str(data),
                       "--device", "cpu", "-o", str(tmp_path / "r"))  # fmt: skip
    assert code == 0, err
    (manifest,) = [json.loads(p.read_text()) for p in (tmp_path / "r").rglob("manifest.json")]
    assert manifest["training_verdict"] == record
