"""Bad inputs found by trying the commands as a new user would: each is one line naming the problem, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import write_beir
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


@pytest.fixture(scope="module")
def tiny_mice(tmp_path_factory, tiny_bert_ce) -> str:
    """A MICE-l1+1 checkpoint converted from the tiny cross-encoder (untrained)."""
    from micebench.models.mice import MiceConfig
    from micebench.models.mice_io import convert_cross_encoder, save_mice

    model, tokenizer = convert_cross_encoder(tiny_bert_ce, MiceConfig(1, 1))
    return str(save_mice(model, tokenizer, tmp_path_factory.mktemp("sweep") / "mice-l1+1"))


@pytest.fixture(scope="module")
def tiny_colbertv2(tmp_path_factory, tiny_bert_encoder) -> str:
    """The tiny encoder with a `linear.weight` beside it and artifact.metadata: a ColBERTv2-layout checkpoint."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    folder = tmp_path_factory.mktemp("sweep") / "colbertv2"
    shutil.copytree(tiny_bert_encoder, folder)
    state = load_file(str(folder / "model.safetensors"))
    save_file({**state, "linear.weight": torch.randn(8, 32)}, str(folder / "model.safetensors"))
    (folder / "artifact.metadata").write_text(json.dumps({"query_maxlen": 16, "doc_maxlen": 64}))
    return str(folder)


def _copy(source: str, target) -> Path:
    import shutil

    shutil.copytree(source, target)
    return Path(target)


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _run(capsys, tmp_path, data_dir, model: str, checkpoint: str, *extra: str) -> tuple[int, str, str]:
    args = ["run", "--model", model, "--checkpoint", checkpoint, "--dataset", str(data_dir / "adi"), "--top-k", "5"]
    return cli(capsys, *args, "--device", "cpu", *extra, "-o", str(tmp_path / "o"))


MICE_CONFIG_CASES = [
    (lambda m: m.update(merge_layer="two"), "mice.merge_layer must be a whole number (got 'two')"),
    (lambda m: m.pop("top_layers"), "mice.top_layers is missing"),
    (lambda m: m.update(merge_layer=0), "mice.merge_layer must be at least 1 (got 0)"),
    (lambda m: m.update(trained="yes"), "mice.trained must be a bool (got 'yes')"),
    (lambda m: m.update(doc_max_length=-1), "mice.doc_max_length must be at least 1 (got -1)"),
    (lambda m: m.update(top_self_attention=1), "mice.top_self_attention must be a bool (got 1)"),
]


@pytest.mark.parametrize(("change", "message"), MICE_CONFIG_CASES)
def test_damaged_mice_checkpoint_config(capsys, tmp_path, data_dir, tiny_mice, change, message):
    folder = _copy(tiny_mice, tmp_path / "ck")
    _edit_json(folder / "config.json", lambda data: change(data["mice"]))
    code, _, err = _run(capsys, tmp_path, data_dir, "mice", str(folder), "--untrained")
    _refused(code, err, f"damaged checkpoint config: {folder / 'config.json'}: {message}", tmp_path / "o")


def test_a_mice_entry_that_is_not_an_object(capsys, tmp_path, data_dir, tiny_mice):
    folder = _copy(tiny_mice, tmp_path / "ck")
    _edit_json(folder / "config.json", lambda data: data.update(mice=3))
    code, _, err = _run(capsys, tmp_path, data_dir, "mice", str(folder), "--untrained")
    _refused(code, err, f"damaged checkpoint config: {folder / 'config.json'}: mice must be an object", tmp_path / "o")


ST_CONFIG_CASES = [
    ("sentence_bert_config.json", lambda d: d.update(max_seq_length="long"), "max_seq_length must be a whole number"),
    ("sentence_bert_config.json", lambda d: d.update(max_seq_length=0), "max_seq_length must be at least 1 (got 0)"),
    (
        "1_Pooling/config.json",
        lambda d: d.update(pooling_mode_cls_token="yes"),
        "pooling_mode_cls_token must be a bool",
    ),
]


@pytest.mark.parametrize(("name", "change", "message"), ST_CONFIG_CASES)
def test_damaged_sentence_transformers_config(capsys, tmp_path, data_dir, minilm_path, name, change, message):
    folder = _copy(minilm_path, tmp_path / "ck")
    _edit_json(folder / name, change)
    code, _, err = _run(capsys, tmp_path, data_dir, "dense", str(folder))
    _refused(code, err, f"damaged checkpoint config: {folder / name}: {message}", tmp_path / "o")


def test_modules_json_that_is_not_a_list(capsys, tmp_path, data_dir, minilm_path):
    folder = _copy(minilm_path, tmp_path / "ck")
    (folder / "modules.json").write_text("{}")
    code, _, err = _run(capsys, tmp_path, data_dir, "dense", str(folder))
    _refused(
        code, err, f"damaged checkpoint config: {folder / 'modules.json'}: (top level) must be a list", tmp_path / "o"
    )


def test_colbertv2_metadata_out_of_range(capsys, tmp_path, data_dir, tiny_colbertv2):
    folder = _copy(tiny_colbertv2, tmp_path / "ck")
    (folder / "artifact.metadata").write_text(json.dumps({"query_maxlen": 16, "doc_maxlen": 0}))
    code, _, err = _run(capsys, tmp_path, data_dir, "colbert", str(folder))
    _refused(code, err, f"{folder / 'artifact.metadata'}: doc_maxlen must be at least 2 (got 0)", tmp_path / "o")


FAMILY_CASES = [
    ("mice", "ce", "is a mice checkpoint, not one for --model ce (load it with --model mice)"),
    ("mice", "dense", "is a mice checkpoint, not one for --model dense (load it with --model mice)"),
    ("mice", "masked-ce", "is a mice checkpoint, not one for --model masked-ce (load it with --model mice)"),
    ("mice", "colbert", "is a mice checkpoint, not one for --model colbert (load it with --model mice)"),
    ("colbert", "ce", "is a colbert checkpoint, not one for --model ce (load it with --model colbert)"),
    ("colbert", "dense", "is a colbert checkpoint, not one for --model dense (load it with --model colbert)"),
    ("colbert", "mice", "is a colbert checkpoint, not one for --model mice (load it with --model colbert)"),
]


@pytest.mark.parametrize(("family", "model", "message"), FAMILY_CASES)
def test_a_checkpoint_of_another_family_is_refused(
    capsys, tmp_path, data_dir, tiny_mice, tiny_colbertv2, family, model, message
):
    checkpoint = tiny_mice if family == "mice" else tiny_colbertv2
    extra = ["--untrained"] if model == "mice" else []
    code, _, err = _run(capsys, tmp_path, data_dir, model, checkpoint, *extra)
    _refused(code, err, message, tmp_path / "o")


@pytest.mark.parametrize("model", ["ce", "dense", "mice", "colbert"])
def test_a_checkpoint_without_tokenizer_is_refused(capsys, tmp_path, data_dir, tiny_bert_ce, tiny_mice, model):
    folder = _copy(tiny_mice if model == "mice" else tiny_bert_ce, tmp_path / "ck")
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    extra = ["--untrained"] if model == "mice" else []
    code, _, err = _run(capsys, tmp_path, data_dir, model, str(folder), *extra)
    _refused(code, err, f"checkpoint {folder} has no tokenizer: none of tokenizer.json, vocab.txt", tmp_path / "o")


@pytest.mark.parametrize(("model", "flag"), [("ce", "--max-length"), ("dense", "--max-length")])
def test_a_max_length_beyond_the_positions_is_capped_and_recorded(
    capsys, caplog, tmp_path, data_dir, tiny_bert_ce, model, flag
):
    """A 1,500-token document would crash at 512 positions: the length is capped with a note, the run scores."""
    long_doc = " ".join(["goldfish"] * 1500)
    folder = write_beir(
        tmp_path / "long",
        [{"_id": "d1", "text": long_doc}, {"_id": "d2", "text": "goldfish tank"}],
        [{"_id": "q1", "text": "goldfish"}],
        [("q1", "d1", 1)],
    )
    args = ["run", "--model", model, "--checkpoint", tiny_bert_ce, "--dataset", str(folder), "--device", "cpu"]
    code, _, err = cli(capsys, *args, flag, "100000", "-o", str(tmp_path / "o"))
    assert code == 0, err
    assert f"{flag} 100000 is beyond the model's 512 positions: capped to 512" in caplog.text
    (result,) = (tmp_path / "o" / "long").iterdir()
    assert json.loads((result / "manifest.json").read_text())["ranker_options"]["max_length"] == 512


def test_markdown_table_escapes_html(capsys, tmp_path, data_dir):
    from micebench.report.tables import md_escape

    assert md_escape("x<b>bold</b>") == "x&lt;b&gt;bold&lt;/b&gt;"
    assert md_escape("a|b<i>it") == "a\\|b&lt;i&gt;it"
    out = tmp_path / "r"
    for name in ("x<b>bold</b>", "plain"):
        code, _, err = cli(
            capsys, "run", "--model", "bm25", "--dataset", str(data_dir / "adi"), "--name", name, "-o", str(out)
        )
        assert code == 0, err
    code, _, err = cli(capsys, "report", "--results", str(out), "--format", "md")
    assert code == 0, err
    (table,) = (out / "report").rglob("table.md")
    text = table.read_text()
    assert "x&lt;b&gt;bold&lt;/b&gt;" in text and "<b>" not in text


@pytest.mark.parametrize("model", ["bm25", "first-stage"])
def test_rankers_reading_ids_only_warn_about_judged_documents_absent_from_the_corpus(capsys, caplog, tmp_path, model):
    folder = write_beir(
        tmp_path / "c",
        [{"_id": "d1", "text": "goldfish grow in tanks"}, {"_id": "d2", "text": "wireless protocols"}],
        [{"_id": "q1", "text": "goldfish"}],
        [("q1", "d1", 1), ("q1", "ghost", 1)],
    )
    code, _, err = cli(capsys, "run", "--model", model, "--dataset", str(folder), "-o", str(tmp_path / "o"))
    assert code == 0, err
    assert "1 judged documents of c are absent from the corpus" in caplog.text


def test_precompute_onto_a_full_disk_exits_1(capsys, tmp_path, data_dir, tiny_bert_encoder, monkeypatch):
    import errno

    from micebench.store import precompute

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(precompute, "_encode", full)
    store = tmp_path / "store"
    args = ["precompute", "--model", "colbert", "--checkpoint", tiny_bert_encoder, "--dataset", str(data_dir / "adi")]
    code, _, err = cli(capsys, *args, "--device", "cpu", "--output", str(store))
    assert code == 1, err
    assert "No space left on device" in err and len(err.strip().splitlines()) == 1
    assert not store.exists()


def test_overwrite_of_a_symlinked_result_leaves_no_backup_and_follows_the_umask(capsys, tmp_path, data_dir):
    import os

    out = tmp_path / "o"
    args = ["run", "--model", "bm25", "--dataset", str(data_dir / "adi"), "-o", str(out)]
    assert cli(capsys, *args)[0] == 0
    target = tmp_path / "elsewhere"
    (out / "adi" / "bm25").rename(target)
    (out / "adi" / "bm25").symlink_to(target)
    code, _, err = cli(capsys, *args, "--overwrite")
    assert code == 0, err
    assert sorted(p.name for p in (out / "adi").iterdir()) == ["bm25"]  # no .bm25.old-<pid> left behind
    assert target.is_dir() and (target / "metrics.json").is_file()  # the old target is untouched
    mask = os.umask(0)
    os.umask(mask)
    assert (out / "adi" / "bm25").stat().st_mode & 0o777 == 0o777 & ~mask


# -- checkpoint weights the model leaves unused ----------------------------------------------------------------


def _add_tensor(folder: Path, name: str, metadata: dict[str, str] | None = None) -> None:
    """Write `name` (a small tensor) into the folder's model.safetensors, with `metadata` in its header."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = str(folder / "model.safetensors")
    with safe_open(path, "pt") as handle:
        kept = handle.metadata() or {}
    save_file({**load_file(path), name: torch.ones(3)}, path, metadata={**kept, **(metadata or {})})


@pytest.mark.parametrize(
    ("model", "marker", "loaded_as"),
    [("ce", "micebench_training.json", "BertForSequenceClassification"), ("colbert", "metadata", "BertModel")],
)
def test_an_unused_weight_in_a_checkpoint_micebench_wrote_is_refused(
    capsys, tmp_path, data_dir, tiny_bert_ce, tiny_colbertv2, model, marker, loaded_as
):
    """`train` leaves micebench_training.json beside the weights; convert and ColBERT saves mark model.safetensors.
    ColBERT's own linear.weight is read apart, so only the injected tensor is unused."""
    folder = _copy(tiny_bert_ce if model == "ce" else tiny_colbertv2, tmp_path / "ck")
    if marker == "micebench_training.json":
        (folder / marker).write_text("{}")
    _add_tensor(folder, "extra.weight", {"micebench": model} if marker == "metadata" else None)
    code, _, err = _run(capsys, tmp_path, data_dir, model, str(folder))
    _refused(code, err, "was written by micebench (", tmp_path / "o")
    assert f"but 1 of its weights are unused by {loaded_as}: extra.weight" in " ".join(err.split())


@pytest.mark.parametrize(
    ("model", "written_by_micebench", "extra", "message"),
    [
        ("ce", False, "extra.weight", "has 1 weight(s) the model does not use (e.g. extra.weight)"),
        # a cross-encoder micebench trained, read as an encoder: its classifier is not the encoder's, so a warning
        ("dense", True, None, "has 2 weight(s) the model does not use (e.g. classifier.bias)"),
    ],
)
def test_unused_weights_of_a_foreign_or_reused_checkpoint_are_a_warning(
    capsys, caplog, tmp_path, data_dir, tiny_bert_ce, model, written_by_micebench, extra, message
):
    folder = _copy(tiny_bert_ce, tmp_path / "ck")
    if written_by_micebench:
        (folder / "micebench_training.json").write_text("{}")
    if extra:
        _add_tensor(folder, extra)
    code, _, err = _run(capsys, tmp_path, data_dir, model, str(folder))
    assert code == 0, err
    assert f"checkpoint {folder} {message}" in caplog.text


@pytest.mark.parametrize(
    ("loader", "options"), [("AutoModelForSequenceClassification", {"num_labels": 1}), ("AutoModel", {})]
)
def test_the_packaged_minilm_leaves_no_weight_unused(caplog, loader, options):
    """What ce and masked-ce (a classifier), dense and colbert (an encoder) load the packaged MiniLM with."""
    import transformers

    from micebench.models.hf import load_weights

    load_weights(getattr(transformers, loader), "minilm-l6", **options)
    assert "does not use" not in caplog.text


# -- the bad-input sweep: each case refused in one line before anything is written ----------------------------------

SWEEP_EXPERIMENT_CASES = [
    ("seeds = [-1]", 'model = "bm25"', "seed must be between 0 and 2**32 - 1 (got -1)"),
    ("seeds = [1, 1]", 'model = "bm25"', "seeds [1] appear more than once"),
    ("measures = []", 'model = "bm25"', "measures must name at least one measure"),
    ('measures = ["FOO@10"]', 'model = "bm25"', "unknown measure 'FOO@10'"),
    ('measures = ["nDCG@x"]', 'model = "bm25"', "the cutoff after @ must be a whole number"),
    ('first_stage = "dataset:nosuchrun"', 'model = "bm25"', "ships no 'nosuchrun' run"),
    ("", 'model = "mice"\nmerge_layer = 0\nuntrained = true', "merge layer 0 is impossible"),
    ("", 'model = "mice-l2+0"\nuntrained = true', "0 top layers are impossible"),
    (
        "",
        'model = "ce"\ncheckpoint = "minilm-l6"\ndtype = "fp64"',
        "unknown dtype 'fp64' (use fp32, fp16, bf16, int8, onnx-fp32, onnx-int8)",
    ),
    ("", 'model = "ce"\ncheckpoint = "minilm-l6"\ndevice = "tpu"', "unknown device 'tpu'"),
    ("", 'model = "masked-ce"\nschedule = "nosuchpreset"', "cannot parse schedule rule 'nosuchpreset'"),
    ("", 'model = "ce"\nmax_length = 1', "--max-length 1 cannot hold [CLS] query [SEP] document [SEP]"),
]


@pytest.mark.parametrize(("top", "ranker", "message"), SWEEP_EXPERIMENT_CASES)
def test_sweep_experiment_file_refusals_write_nothing(capsys, tmp_path, data_dir, top, ranker, message):
    """Every run of the file is checked before the first starts; experiment.json only follows a run that stands."""
    config = _experiment_file(tmp_path, top, ranker)
    code, _, err = cli(capsys, "run", "--config", config, "--data-dir", str(data_dir))
    _refused(code, err, message, tmp_path / "out")


def test_sweep_experiment_file_that_is_not_utf8(capsys, tmp_path, data_dir):
    path = Path(_experiment_file(tmp_path))
    path.write_bytes(path.read_bytes() + b"# caf\xe9\n")
    code, _, err = cli(capsys, "run", "--config", str(path), "--data-dir", str(data_dir))
    offset = path.read_bytes().index(b"\xe9")
    _refused(code, err, f"{path}: not UTF-8 text (byte 0xe9 at offset {offset})", tmp_path / "out")


SWEEP_RUN_CASES = [
    (["--model", "bm25", "--seed", "-1"], "seed must be between 0 and 2**32 - 1 (got -1)"),
    (["--model", "bm25", "--seed", str(2**32)], f"seed must be between 0 and 2**32 - 1 (got {2**32})"),
    (["--model", "ce", "--max-length", "4"], "--max-length 4 cannot hold [CLS] query [SEP] document [SEP]"),
    (["--model", "masked-ce", "--max-length", "1"], "--max-length 1 cannot hold [CLS] query [SEP] document [SEP]"),
    (["--model", "dense", "--max-length", "2"], "--max-length 2 cannot hold [CLS] text [SEP]: use at least 3"),
    (["--model", "mice", "--max-length", "2", "--untrained"], "--max-length 2 cannot hold [CLS] document [SEP]"),
    (["--model", "mice", "--merge-layer", "0", "--untrained"], "merge layer 0 is impossible"),
    (["--model", "ce", "--dtype", "fp64"], "unknown dtype 'fp64'"),
    (["--model", "colbert", "--dim", "-8"], "--dim must be a positive whole number (got -8)"),
    (["--model", "bm25", "--top-k", "ten"], "Invalid value for '--top-k'"),
]


@pytest.mark.parametrize(("extra", "message"), SWEEP_RUN_CASES)
def test_sweep_run_refusals(capsys, tmp_path, data_dir, extra, message):
    code, _, err = cli(capsys, "run", "--dataset", str(data_dir / "adi"), *extra, "-o", str(tmp_path / "o"))
    _refused(code, err, message, tmp_path / "o")


def test_sweep_help_still_works(capsys):
    code, out, _ = cli(capsys, "run", "--help")
    assert code == 0 and "--max-length" in out


def test_sweep_suite_offline_leaves_no_experiment_json(capsys, tmp_path):
    code, _, err = cli(capsys, "run", "--model", "bm25", "--dataset", "nanobeir", "-o", str(tmp_path / "o"))
    _refused(code, err, "cannot load", tmp_path / "o")
    assert not list((tmp_path / "o").rglob("experiment.json"))


def test_sweep_garbage_safetensors_is_one_line(capsys, tmp_path, data_dir, tiny_bert_encoder):
    folder = _copy(tiny_bert_encoder, tmp_path / "ck")
    (folder / "model.safetensors").write_bytes(b"garbage" * 10)
    code, _, err = _run(capsys, tmp_path, data_dir, "colbert", str(folder))
    _refused(code, err, f"damaged file {folder / 'model.safetensors'} (truncated", tmp_path / "o")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("num_hidden_layers", 0, "num_hidden_layers must be at least 1 (got 0)"),
        ("num_attention_heads", 0, "num_attention_heads must be at least 1 (got 0)"),
        ("hidden_size", "big", "hidden_size must be a whole number (got 'big')"),
        ("max_position_embeddings", 1, "max_position_embeddings must be at least 2 (got 1)"),
    ],
)
def test_sweep_architecture_sizes_of_config_json(capsys, tmp_path, data_dir, tiny_bert_ce, field, value, message):
    folder = _copy(tiny_bert_ce, tmp_path / "ck")
    _edit_json(folder / "config.json", lambda data: data.update({field: value}))
    code, _, err = _run(capsys, tmp_path, data_dir, "ce", str(folder))
    _refused(code, err, f"damaged checkpoint config: {folder / 'config.json'}: {message}", tmp_path / "o")


def test_sweep_convert_out_under_a_file_is_a_fault(capsys, tmp_path):
    (tmp_path / "afile").write_text("x")
    args = ["--merge-layer", "1", "--top-layers", "1", "--out", str(tmp_path / "afile" / "ck")]
    code, _, err = cli(capsys, "convert", "--from", "/never/loaded", *args)
    assert code == 1, err
    assert f"{tmp_path / 'afile'} is a file, not a folder" in " ".join(err.split())
    assert len(err.strip().splitlines()) == 1


def test_sweep_convert_from_a_mice_checkpoint(capsys, tmp_path, tiny_mice):
    args = ["--merge-layer", "1", "--top-layers", "1", "--out", str(tmp_path / "ck")]
    code, _, err = cli(capsys, "convert", "--from", tiny_mice, *args)
    _refused(code, err, "is a mice checkpoint, not one for convert --from", tmp_path / "ck")


SCHEDULE_FILE_CASES = [
    ("rules = 5\nname = 3", "schedule 'name' must be a string (got 3)"),
    ("rules = 5", "schedule 'rules' must be a list of rules (got 5)"),
    ('colour = "red"', "unknown schedule key(s) ['colour']"),
    ('[[rules]]\nfrom = "query"\nto = "document"\nlayers = ["a", 2]', "rule 0: 'layers' must be two whole numbers"),
    ('[[rules]]\nfrom = 3\nto = "document"', "rule 0: 'from' must be a segment name or a list of them (got 3)"),
    ('[[rules]]\nfrom = "query"\nto = "document"\nwhen = 1', "rule 0: unknown key(s) ['when']"),
]


@pytest.mark.parametrize(("body", "message"), SCHEDULE_FILE_CASES)
def test_sweep_schedule_files_are_typed(capsys, tmp_path, body, message):
    path = tmp_path / "s.toml"
    path.write_text(body + "\n")
    code, _, err = cli(capsys, "schedules", str(path))
    _one_line(code, err, f"{path}: {message}")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--group-size", "0"], "--group-size must be at least 1 (got 0)"),
        (["--queries", "0"], "--queries must be at least 1 (got 0)"),
        (["--docs-per-query", "0"], "--docs-per-query must be at least 1 (got 0)"),
        (["--schedule", "mask1"], "option --schedule does not apply to model 'ce'"),
    ],
)
def test_sweep_attention_refusals(capsys, tmp_path, data_dir, extra, message):
    args = ["attention", "--dataset", str(data_dir / "adi"), "--model", "ce", "--checkpoint", "/never/loaded"]
    code, _, err = cli(capsys, *args, *extra, "-o", str(tmp_path / "o"))
    _refused(code, err, message, tmp_path / "o")


LATENCY = ["--arch", "minilm-l6", "--batch", "2", "--doc-len", "16", "--query-len", "8", "--repeats", "1"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--models", ""], "--models names no model"),
        (["--models", " , "], "--models names no model"),
        (["--models", "ce", "--docs-per-query", "0"], "--docs-per-query must be at least 1 (got 0)"),
        (["--models", "ce", "--precompute", "bogus"], "unknown --precompute 'bogus'"),
    ],
)
def test_sweep_latency_refusals(capsys, tmp_path, extra, message):
    code, _, err = cli(capsys, "latency", *LATENCY, *extra, "-o", str(tmp_path / "o"))
    _refused(code, err, message, tmp_path / "o")


def test_sweep_latency_output_under_a_file_fails_before_timing(capsys, tmp_path):
    (tmp_path / "afile").write_text("x")
    code, out, err = cli(capsys, "latency", *LATENCY, "--models", "ce", "-o", str(tmp_path / "afile" / "o"))
    assert code == 1, err
    assert f"{tmp_path / 'afile'} is a file, not a folder" in " ".join(err.split())
    assert len(err.strip().splitlines()) == 1 and not out


@pytest.mark.parametrize(
    ("name", "message"), [("mice-l0+1", "merge layer 0 is impossible"), ("mice-l2+0", "0 top layers are impossible")]
)
def test_sweep_models_refuses_an_impossible_shape(capsys, name, message):
    code, _, err = cli(capsys, "models", name)
    _one_line(code, err, message)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(num_docs="seven"), "num_docs must be a whole number (got 'seven')"),
        (lambda m: m.update(fields="x"), "fields must be list[str] (got 'x')"),
        (lambda m: m.pop("shards"), "shards is missing"),
        (lambda m: m.update(shards=[{"file": 3}]), "shards[0].file must be str (got 3)"),
    ],
)
def test_sweep_damaged_store_manifest(capsys, tmp_path, data_dir, tiny_bert_encoder, change, message):
    store = tmp_path / "store"
    store.mkdir()
    manifest = {"kind": "colbert", "mode": "embeddings", "fields": ["embeddings"], "dtype": "float16", "format": 2}
    manifest.update(num_docs=7, num_tokens=59, index={}, shards=[], status="complete")
    change(manifest)
    (store / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = _run(capsys, tmp_path, data_dir, "colbert", tiny_bert_encoder, "--precomputed", str(store))
    _refused(code, err, f"damaged store manifest: {store / 'manifest.json'}: {message}", tmp_path / "o")


def test_sweep_datasets_where_exits(capsys, data_dir):
    code, out, _ = cli(capsys, "datasets", "where", "adi", "--data-dir", str(data_dir))
    assert code == 0 and "local" in out
    code, _, err = cli(capsys, "datasets", "where", "no-such-ds", "--data-dir", str(data_dir))
    _one_line(code, err, "unknown dataset 'no-such-ds'")


def test_sweep_datasets_check_of_a_collection_that_cannot_load(capsys, monkeypatch):
    import micebench.data
    from micebench.errors import DataError

    class Gone:
        name = "nano-gone"

        def queries(self):
            raise DataError("cannot load nano-gone (queries): offline")

    monkeypatch.setattr(micebench.data, "load_dataset", lambda name, data_dir=None: Gone())
    code, out, err = cli(capsys, "datasets", "check", "nano-gone")
    _one_line(code, err, "cannot load nano-gone (queries): offline")
    assert not out


def test_sweep_report_of_unreadable_manifests_ends_with_the_error(capsys, tmp_path):
    for ranker in ("a", "b"):
        (tmp_path / "r" / "ds" / ranker).mkdir(parents=True)
        (tmp_path / "r" / "ds" / ranker / "manifest.json").write_text("{bad")
        (tmp_path / "r" / "ds" / ranker / "metrics.json").write_text("{bad")
    code, _, err = cli(capsys, "report", "--results", str(tmp_path / "r"))
    assert code == 2, err
    assert err.strip().splitlines()[-1].startswith("error: no readable results under"), err
    assert not (tmp_path / "r" / "report").exists()
