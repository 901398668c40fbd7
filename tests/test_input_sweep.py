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


# -- the reliability tail (issue 26): each class fed through the CLI -----------------------------------------------


def _refused(code: int, err: str, message: str, folder) -> None:
    """One line naming the problem, exit 2, and nothing written under `folder`."""
    _one_line(code, err, message)
    assert not folder.exists() or not any(folder.iterdir()), list(folder.iterdir())


def _experiment_file(tmp_path, top: str = "", ranker: str = 'model = "bm25"', datasets: str = '["adi"]') -> str:
    path = tmp_path / "x.toml"
    path.write_text(
        f'output = "{tmp_path / "out"}"\n{top}\n[datasets]\nin_domain = {datasets}\n[[rankers]]\n{ranker}\n'
    )
    return str(path)


EXPERIMENT_CASES = [
    ('top_k = "ten"', 'model = "bm25"', '["adi"]', "top_k must be a whole number (got 'ten')"),
    ("top_k = true", 'model = "bm25"', '["adi"]', "top_k must be a whole number (got True)"),
    ("top_k = 0", 'model = "bm25"', '["adi"]', "top_k must be at least 1 (got 0)"),
    ("chunk_queries = -1", 'model = "bm25"', '["adi"]', "chunk_queries must be at least 1 (got -1)"),
    ("seeds = 3", 'model = "bm25"', '["adi"]', "seeds must be a non-empty list of whole numbers (got 3)"),
    ("seeds = []", 'model = "bm25"', '["adi"]', "seeds must be a non-empty list of whole numbers (got [])"),
    ('seeds = ["a"]', 'model = "bm25"', '["adi"]', "seeds must be a non-empty list of whole numbers (got ['a'])"),
    ("first_stage = 5", 'model = "bm25"', '["adi"]', "first_stage must be str (got 5)"),
    ('overwrite = "yes"', 'model = "bm25"', '["adi"]', "overwrite must be bool (got 'yes')"),
    ('measures = "nDCG@10"', 'model = "bm25"', '["adi"]', "measures must be list[str] (got 'nDCG@10')"),
    ("split = 1", 'model = "bm25"', '["adi"]', "split must be str or None (got 1)"),
    ("", 'model = "bm25"', '"adi"', "datasets.in_domain must be a list of dataset names (got 'adi')"),
    ("", 'model = "bm25"', "[1]", "datasets.in_domain must be a list of dataset names (got [1])"),
    ("", 'model = "bm25"\ntop_k = "x"', '["adi"]', "rankers[0].top_k must be a whole number (got 'x')"),
    ("", 'model = "bm25"\nname = 3', '["adi"]', "rankers[0].name must be str or None (got 3)"),
    ("", 'model = "bm25"\nbackbone = 1', '["adi"]', "rankers[0].backbone must be str (got 1)"),
    ("", "model = 7", '["adi"]', "rankers[0] has no 'model' (a model name)"),
    ("", 'model = "ce"\nbatch_size = "big"', '["adi"]', "--batch-size must be a whole number (got 'big')"),
    ("", 'model = "ce"\nmax_length = 1.5', '["adi"]', "--max-length must be a whole number (got 1.5)"),
    ("", 'model = "mice"\nmerge_layer = "two"', '["adi"]', "--merge-layer must be a whole number or None"),
    ("", 'model = "mice"\nuntrained = "yes"', '["adi"]', "--untrained must be bool (got 'yes')"),
    ("", 'model = "dense"\nnormalize = 1', '["adi"]', "--normalize must be bool or None (got 1)"),
    ("", 'model = "colbert"\ndim = "x"', '["adi"]', "--dim must be a whole number (got 'x')"),
    ("", 'model = "ce"\ncheckpoint = 3', '["adi"]', "--checkpoint must be str (got 3)"),
]


@pytest.mark.parametrize(("top", "ranker", "datasets", "message"), EXPERIMENT_CASES)
def test_experiment_file_schema(capsys, tmp_path, data_dir, top, ranker, datasets, message):
    """Every key of an experiment file is typed and ranged; the error names the key and the file, nothing is
    written (no experiment.json)."""
    config = _experiment_file(tmp_path, top, ranker, datasets)
    code, _, err = cli(capsys, "run", "--config", config, "--data-dir", str(data_dir))
    _refused(code, err, message, tmp_path / "out")
    assert config in " ".join(err.split()).replace(" ", "") or config in err.replace("\n", "")


TRAIN_CASES = [
    (["--lr", "-1"], "--lr must be a finite number above 0 (got -1.0)"),
    (["--lr", "0"], "--lr must be a finite number above 0 (got 0.0)"),
    (["--lr", "nan"], "--lr must be a finite number above 0 (got nan)"),
    (["--warmup", "-1"], "--warmup must be a whole number of at least 0 (got -1)"),
    (["--steps", "5", "--warmup", "10"], "--warmup 10 is longer than --steps 5"),
    (["--steps", "0"], "--steps must be a whole number of at least 1 (got 0)"),
    (["--batch-size", "0"], "--batch-size must be a whole number of at least 1 (got 0)"),
    (["--seeds", "0"], "--seeds must be a whole number of at least 1 (got 0)"),
    (["--negatives", "0"], "--negatives must be a whole number of at least 1 (got 0)"),
    (["--group-size", "1"], "--group-size must be a whole number of at least 2 (got 1)"),
    (["--validate-top-k", "0"], "--validate-top-k must be a whole number of at least 1 (got 0)"),
    (["--every", "0"], "--every must be a whole number of at least 1 (got 0)"),
    (["--grad-accumulation", "0"], "--grad-accumulation must be a whole number of at least 1 (got 0)"),
    (["--max-minutes", "0"], "--max-minutes must be a finite number above 0 (got 0.0)"),
    (["--max-length", "0"], "--max-length must be a positive whole number (got 0)"),
]


@pytest.mark.parametrize(("extra", "message"), TRAIN_CASES)
def test_train_numeric_options_are_checked_before_any_model_work(capsys, tmp_path, data_dir, extra, message):
    args = ["train", "--model", "ce", "--init", "/nonexistent/never-loaded", "--train", str(data_dir / "adi")]
    code, _, err = cli(capsys, *args, "--split", "test", "--loss", "bce", *extra, "-o", str(tmp_path / "t"))
    _refused(code, err, message, tmp_path / "t")


@pytest.mark.parametrize("alpha", ["7", "0", "1", "-0.1"])
def test_report_alpha_outside_zero_one(capsys, tmp_path, alpha):
    (tmp_path / "r").mkdir()
    code, _, err = cli(capsys, "report", "--results", str(tmp_path / "r"), "--alpha", alpha)
    _refused(code, err, f"--alpha must be between 0 and 1, exclusive (got {float(alpha)})", tmp_path / "r")


RUN_RANGE_CASES = [
    (["--model", "ce", "--batch-size", "0"], "--batch-size must be a positive whole number (got 0)"),
    (["--model", "ce", "--max-length", "-3"], "--max-length must be a positive whole number (got -3)"),
    (["--model", "bm25", "--top-k", "0"], "--top-k must be at least 1 (got 0)"),
    (["--model", "bm25", "--chunk-queries", "0"], "--chunk-queries must be at least 1 (got 0)"),
]


@pytest.mark.parametrize(("extra", "message"), RUN_RANGE_CASES)
def test_run_out_of_range_options(capsys, tmp_path, data_dir, extra, message):
    code, _, err = cli(capsys, "run", "--dataset", str(data_dir / "adi"), *extra, "-o", str(tmp_path / "o"))
    _refused(code, err, message, tmp_path / "o")


@pytest.mark.parametrize("model", ["mice", "mice-l2+2"])
def test_untrained_mice_is_refused_before_any_download(capsys, tmp_path, data_dir, model):
    """Offline, a download would fail with another message: the refusal comes first."""
    code, _, err = cli(capsys, "run", "--model", model, "--dataset", str(data_dir / "adi"), "-o", str(tmp_path / "o"))
    label = "mice-l4+3" if model == "mice" else model
    _refused(code, err, f"{label} is untrained (converted from cross-encoder/ms-marco-MiniLM-L12-v2)", tmp_path / "o")
