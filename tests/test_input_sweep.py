"""Bad inputs found by trying the commands as a new user would: each is one line naming the problem, exit 2."""

from __future__ import annotations

import pytest

from tests.test_cli import cli


def _experiment(tmp_path, extra_top: str = "", datasets: str = '["adi"]') -> str:
    path = tmp_path / "x.toml"
    path.write_text(
        f'output = "{tmp_path / "out"}"\n{extra_top}\n[datasets]\nin_domain = {datasets}\n'
        '[[rankers]]\nname = "b"\nmodel = "bm25"\n'
    )
    return str(path)


def _one_line(code: int, err: str, message: str) -> None:
    assert code == 2, err
    assert message in " ".join(err.split()), err
    assert len(err.strip().splitlines()) == 1, err


def test_an_experiment_file_with_an_unknown_top_level_key(capsys, tmp_path, data_dir):
    code, _, err = cli(capsys, "run", "--config", _experiment(tmp_path, 'colour = "red"'), "--data-dir", str(data_dir))
    _one_line(code, err, "unknown top-level key(s) ['colour']")
    assert not (tmp_path / "out").exists()


def test_an_experiment_file_with_an_unknown_dataset_runs_nothing(capsys, tmp_path, data_dir):
    config = _experiment(tmp_path, datasets='["adi", "nosuchds"]')
    code, _, err = cli(capsys, "run", "--config", config, "--data-dir", str(data_dir))
    _one_line(code, err, "unknown dataset 'nosuchds'")
    assert not (tmp_path / "out").exists()  # neither experiment.json nor adi's result


def test_config_and_model_flags_do_not_mix(capsys, tmp_path, data_dir):
    code, _, err = cli(capsys, "run", "--config", _experiment(tmp_path), "--model", "ce")
    _one_line(code, err, "--config runs the file's rankers and datasets: drop --model and --dataset")


def test_results_with_an_unknown_measure(capsys, tmp_path, data_dir):
    out = str(tmp_path / "r")
    code, _, err = cli(capsys, "run", "--model", "bm25", "--dataset", str(data_dir / "adi"), "-o", out)
    assert code == 0, err
    code, _, err = cli(capsys, "results", out, "--measure", "FOO")
    _one_line(code, err, "no result under")
    assert "'FOO'" in err


@pytest.mark.parametrize(("make", "message"), [("missing", "run file not found"), ("folder", "is a folder")])
def test_a_first_stage_path_that_is_not_a_run_file(capsys, tmp_path, data_dir, make, message):
    path = tmp_path / "runs" / "bm25.trec"
    if make == "folder":
        path.mkdir(parents=True)
    args = ["run", "--model", "first-stage", "--dataset", str(data_dir / "adi"), "--first-stage", str(path)]
    code, _, err = cli(capsys, *args, "-o", str(tmp_path / "out"))
    _one_line(code, err, message)


def test_a_store_path_that_is_a_file(capsys, tmp_path, data_dir, tiny_bert_encoder):
    target = tmp_path / "afile"
    target.write_text("not a store")
    args = ["precompute", "--model", "colbert", "--checkpoint", tiny_bert_encoder, "--dataset", str(data_dir / "adi")]
    code, _, err = cli(capsys, *args, "--device", "cpu", "--output", str(target))
    _one_line(code, err, "is a file, not a store folder")


def test_train_names_an_untrainable_model_before_the_loss(capsys, tmp_path, data_dir):
    """The model is checked first: `dense` cannot be trained, whatever the loss needs."""
    args = ["train", "--model", "dense", "--init", "minilm-l6", "--train", str(data_dir / "adi"), "--split", "test"]
    code, _, err = cli(capsys, *args, "-o", str(tmp_path / "t"))
    _one_line(code, err, "model 'dense' cannot be trained")
