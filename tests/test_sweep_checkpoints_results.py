"""Bad inputs on damaged checkpoints, result folders, experiment names, offline datasets and paths, found by trying
the commands as a new user would: each is one line naming the problem, exit 2 (bad input) or 1 (a fault of the
machine), and nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import write_beir, write_pylate_dense
from tests.test_cli import cli
from tests.test_input_sweep import _copy, _edit_json, _refused, _run, tiny_colbertv2, tiny_mice  # noqa: F401


def _fault(code: int, err: str, message: str, folder: Path) -> None:
    """One line naming the problem, exit 1 (a fault of the machine), and nothing written under `folder`."""
    assert code == 1, err
    assert message in " ".join(err.split()), err
    assert len(err.strip().splitlines()) == 1, err
    assert not folder.exists() or not any(folder.iterdir()), list(folder.iterdir())


# -- PyLate and ColBERTv2 projections ---------------------------------------------------------------------------


def _pylate(tmp_path: Path, encoder: str, tensors: dict | None, dense_config: dict | None = None) -> Path:
    """A PyLate-layout copy of the tiny encoder (hidden 32) whose 1_Dense folder holds `tensors` (None: no file)."""
    folder = _copy(encoder, tmp_path / "pylate")
    write_pylate_dense(folder, tensors, dense_config)
    return folder


def _tensors(kind: str) -> tuple[dict | None, dict | None, str]:
    import torch

    weight = torch.randn(16, 32, generator=torch.Generator().manual_seed(3))
    return {
        "none": (None, None, "its Dense module 1_Dense has no projection weights"),
        "other-key": ({"dense.weight": weight}, None, "its Dense module 1_Dense has no projection weights"),
        "wide": (
            {"linear.weight": torch.randn(16, 768)},
            None,
            "the projection in 1_Dense takes 768 inputs but the encoder gives 32",
        ),
        "1d": ({"linear.weight": torch.randn(32)}, None, "linear.weight of 1_Dense has shape [32], not (dim, 32)"),
        "bias": (
            {"linear.weight": weight, "linear.bias": torch.randn(8)},
            None,
            "linear.bias of 1_Dense has shape [8], not [16]",
        ),
        "config": (
            {"linear.weight": weight},
            {"in_features": 32, "out_features": 128},
            "1_Dense/config.json sets out_features 128, but linear.weight is [16, 32]",
        ),
    }[kind]


@pytest.mark.parametrize("kind", ["none", "other-key", "wide", "1d", "bias", "config"])
def test_a_damaged_pylate_dense_module(capsys, tmp_path, data_dir, tiny_bert_encoder, kind):
    """A Dense folder without weights ran with a random projection; one of another width raised a RuntimeError."""
    tensors, dense_config, message = _tensors(kind)
    folder = _pylate(tmp_path, tiny_bert_encoder, tensors, dense_config)
    code, _, err = _run(capsys, tmp_path, data_dir, "colbert", str(folder))
    _refused(code, err, f"damaged checkpoint {folder}: {message}", tmp_path / "o")


def test_a_pylate_dense_folder_that_is_not_there(capsys, tmp_path, data_dir, tiny_bert_encoder):
    folder = _pylate(tmp_path, tiny_bert_encoder, None)
    (folder / "1_Dense").rmdir()
    code, _, err = _run(capsys, tmp_path, data_dir, "colbert", str(folder))
    _refused(
        code, err, f"damaged checkpoint {folder}: its Dense module 1_Dense has no projection weights", tmp_path / "o"
    )


def test_a_colbertv2_projection_of_another_width(capsys, tmp_path, data_dir, tiny_colbertv2):  # noqa: F811
    import torch
    from safetensors.torch import load_file, save_file

    folder = _copy(tiny_colbertv2, tmp_path / "ck")
    state = load_file(str(folder / "model.safetensors"))
    save_file({**state, "linear.weight": torch.randn(8, 64)}, str(folder / "model.safetensors"))
    code, _, err = _run(capsys, tmp_path, data_dir, "colbert", str(folder))
    message = "the projection in model.safetensors takes 64 inputs but the encoder gives 32"
    _refused(code, err, f"damaged checkpoint {folder}: {message}", tmp_path / "o")


# -- config.json fields that do not size the weights --------------------------------------------------------------

CONFIG_SHAPE_CASES = [
    (
        "ce",
        "vocab_size",
        1000,
        "vocab_size 1000 does not match the weights (bert.embeddings.word_embeddings.weight is "
        "[30522, 32] in the weights, [1000, 32] by the config)",
    ),
    ("ce", "hidden_size", 64, "hidden_size 64 does not match the weights"),
    ("ce", "max_position_embeddings", 128, "max_position_embeddings 128 does not match the weights"),
    ("ce", "type_vocab_size", 3, "type_vocab_size 3 does not match the weights"),
    (
        "ce",
        "num_hidden_layers",
        3,
        "num_hidden_layers 3 does not match the weights: they hold 2 layer(s), layer 2 would be random",
    ),
    ("dense", "vocab_size", 1000, "vocab_size 1000 does not match the weights (embeddings.word_embeddings.weight"),
    (
        "colbert",
        "num_hidden_layers",
        4,
        "num_hidden_layers 4 does not match the weights: they hold 2 layer(s), layers 2-3 would be random",
    ),
]


@pytest.mark.parametrize(("model", "field", "value", "message"), CONFIG_SHAPE_CASES)
def test_a_config_field_that_does_not_size_the_weights(
    capsys, tmp_path, data_dir, tiny_bert_ce, model, field, value, message
):
    """transformers ended in "look at the above report!" with no report (or filled layers at random): the field is
    named, and no warning about unused weights comes before the error."""
    folder = _copy(tiny_bert_ce, tmp_path / "ck")
    _edit_json(folder / "config.json", lambda data: data.update({field: value}))
    code, _, err = _run(capsys, tmp_path, data_dir, model, str(folder))
    _refused(code, err, f"damaged checkpoint config: {folder / 'config.json'}: {message}", tmp_path / "o")


def test_a_mice_config_field_that_does_not_size_the_weights(capsys, tmp_path, data_dir, tiny_mice):  # noqa: F811
    folder = _copy(tiny_mice, tmp_path / "ck")
    _edit_json(folder / "config.json", lambda data: data.update(vocab_size=1000))
    code, _, err = _run(capsys, tmp_path, data_dir, "mice", str(folder), "--untrained")
    message = "vocab_size 1000 does not match the weights (embeddings.word_embeddings.weight is [30522, 32]"
    _refused(code, err, f"damaged checkpoint config: {folder / 'config.json'}: {message}", tmp_path / "o")


def test_a_mice_checkpoint_missing_layers_its_config_names(capsys, tmp_path, data_dir, tiny_mice):  # noqa: F811
    folder = _copy(tiny_mice, tmp_path / "ck")

    def deeper(data):
        data["mice"]["top_layers"] = 2
        data["num_hidden_layers"] = 3

    _edit_json(folder / "config.json", deeper)
    code, _, err = _run(capsys, tmp_path, data_dir, "mice", str(folder), "--untrained")
    _refused(code, err, f"damaged checkpoint {folder}: 26 weight(s) the model needs are missing", tmp_path / "o")


# -- experiment names are folder names ----------------------------------------------------------------------------


def _experiment(tmp_path: Path, datasets: str, *names: str) -> str:
    rankers = "".join(f'[[rankers]]\nname = "{n}"\nmodel = "bm25"\n' for n in names)
    path = tmp_path / "x.toml"
    path.write_text(f'output = "{tmp_path / "out"}"\n[datasets]\nin_domain = {datasets}\n{rankers}')
    return str(path)


@pytest.mark.parametrize(
    ("names", "folder"), [(("bm25 top", "bm25_top"), "bm25_top"), (("a/b", "a__b"), "a__b"), (("BM25", "bm25"), "bm25")]
)
def test_experiment_rankers_that_share_a_result_folder(capsys, tmp_path, data_dir, names, folder):
    """The second ranker never ran and the command exited 0."""
    config = _experiment(tmp_path, '["adi"]', *names)
    code, _, err = cli(capsys, "run", "--config", config, "--data-dir", str(data_dir))
    message = f"rankers[0] ({names[0]!r}) and rankers[1] ({names[1]!r}) would share the result folder"
    _refused(code, err, message, tmp_path / "out")


def test_experiment_datasets_that_share_a_result_folder(capsys, tmp_path, data_dir):
    config = _experiment(tmp_path, f'["adi", "{data_dir / "adi"}"]', "b")
    code, _, err = cli(capsys, "run", "--config", config, "--data-dir", str(data_dir))
    message = f"datasets in_domain: 'adi' and in_domain: '{data_dir / 'adi'}' share the result folder 'adi'"
    _refused(code, err, message, tmp_path / "out")


# -- hand-edited results ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_results(tmp_path_factory, data_dir) -> Path:
    """Two finished BM25 results on ADI (`a` and `b`), to be copied and damaged."""
    from micebench.cli.entry import main

    out = tmp_path_factory.mktemp("results") / "r"
    for name in ("a", "b"):  # a failed run raises SystemExit, an error of the fixture
        main(["run", "--model", "bm25", "--dataset", str(data_dir / "adi"), "--name", name, "-o", str(out)])
    return out


def _damaged_results(tmp_path: Path, results: Path, change) -> Path:
    out = _copy(str(results), tmp_path / "r")
    _edit_json(out / "adi" / "a" / "metrics.json", lambda data: change(data["measures"]))
    return out


METRICS_CASES = [
    (lambda m: m.update({"nDCG@10": float("nan")}), "metrics.json gives nDCG@10 as nan, not a finite number"),
    (lambda m: m.update({"MAP": float("inf")}), "metrics.json gives MAP as inf, not a finite number"),
    (lambda m: m.update({"MAP": "0.38"}), "metrics.json gives MAP as '0.38', not a finite number"),
    (lambda m: m.update({"MAP": True}), "metrics.json gives MAP as True, not a finite number"),
    (lambda m: m.clear(), "metrics.json has no measures"),
]


@pytest.mark.parametrize(("change", "message"), METRICS_CASES)
def test_results_skips_a_hand_edited_metrics_file(capsys, caplog, tmp_path, two_results, change, message):
    """`results` showed nan, or no measure column at all when the first result had empty measures."""
    out = _damaged_results(tmp_path, two_results, change)
    code, printed, err = cli(capsys, "results", str(out))
    assert code == 0, err
    assert f"skipped {out / 'adi' / 'a'}: ValueError: {message}" in " ".join(caplog.text.split())
    assert "nan" not in printed and "inf" not in printed
    rows = [line for line in printed.splitlines() if "adi" in line]
    assert len(rows) == 1 and " b " in rows[0] and "0.4611" in rows[0]  # BM25's nDCG@10 on ADI, the other result
    assert all(m in printed for m in ("nDCG@10", "RR@10", "MAP"))


@pytest.mark.parametrize(("change", "message"), METRICS_CASES[:1] + METRICS_CASES[-1:])
def test_report_skips_a_hand_edited_metrics_file(capsys, tmp_path, two_results, change, message):
    out = _damaged_results(tmp_path, two_results, change)
    code, _, err = cli(capsys, "report", "--results", str(out), "--format", "csv")
    assert code == 0, err
    assert f"warning: skipped {out / 'adi' / 'a'}: ValueError: {message}" in " ".join(err.split())
    rankers = [line.split(",")[0] for line in (out / "report" / "table.csv").read_text().splitlines()[1:]]
    assert rankers == ["b"]


def test_results_lists_every_measure_any_result_has(capsys, tmp_path, two_results):
    """A result with fewer measures (an older run) does not hide the others' columns: its missing cell is a dash."""
    out = _damaged_results(tmp_path, two_results, lambda m: m.pop("MAP"))
    code, printed, err = cli(capsys, "results", str(out))
    assert code == 0, err
    header = next(line for line in printed.splitlines() if "dataset" in line)
    assert "MAP" in header
    row_a = next(line for line in printed.splitlines() if " a " in line)
    assert "–" in row_a and "nan" not in printed


def test_report_std_over_one_seed_per_ranker(capsys, tmp_path, two_results):
    out = _copy(str(two_results), tmp_path / "r")
    code, _, err = cli(capsys, "report", "--results", str(out), "--std")
    message = "--std shows the spread over seeds, which needs two or more seeds per ranker: every ranker here has one"
    _refused(code, err, message, out / "report")


def test_report_std_names_the_rankers_with_one_seed(capsys, tmp_path, data_dir):
    """Two seeds of one ranker give its spread (BM25 is deterministic: 0.0); the single-seed ranker is named."""
    path = tmp_path / "x.toml"
    path.write_text(
        f'output = "{tmp_path / "out"}"\nseeds = [0, 1]\n[datasets]\nin_domain = ["adi"]\n'
        '[[rankers]]\nname = "two"\nmodel = "bm25"\n'
    )
    assert cli(capsys, "run", "--config", str(path), "--data-dir", str(data_dir))[0] == 0
    args = ["run", "--model", "first-stage", "--dataset", str(data_dir / "adi"), "--name", "one"]
    assert cli(capsys, *args, "-o", str(tmp_path / "out"))[0] == 0
    code, printed, err = cli(capsys, "report", "--results", str(tmp_path / "out"), "--std", "--format", "md")
    assert code == 0, err
    assert "warning: one has one seed: shown without a spread" in " ".join(err.split())
    table = (tmp_path / "out" / "report" / "table.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| two"))
    assert "± 0.0" in row


# -- offline and paths --------------------------------------------------------------------------------------------


def test_an_ir_datasets_download_without_network(capsys, tmp_path, monkeypatch):
    """Without the mirror and without network, `run --dataset scifact` ended in a 70-line traceback. The download
    is made to fail at once in-process (no network timeout), as requests fails offline."""
    import ir_datasets.util.download as download
    import requests

    def offline(self):
        request = requests.Request("GET", "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/scifact.zip")
        raise requests.exceptions.ConnectionError("Failed to resolve host", request=request)

    monkeypatch.setattr(download.RequestsDownload, "__iter__", offline)
    monkeypatch.setenv("IR_DATASETS_HOME", str(tmp_path / "irds"))
    monkeypatch.delenv("MICEBENCH_DATA", raising=False)
    code, _, err = cli(capsys, "run", "--model", "bm25", "--dataset", "scifact", "-o", str(tmp_path / "o"))
    message = (
        "cannot load scifact: the download of ir_datasets beir/scifact/test from public.ukp.informatik.tu-darmstadt.de "
        "failed (ConnectionError); without network, put the collection in a BEIR-layout folder under a data "
        "directory and set MICEBENCH_DATA"
    )
    _fault(code, err, message, tmp_path / "o")


def _loop(path: Path) -> Path:
    """Replace `path` by a symbolic link to itself."""
    path.unlink()
    os.symlink(path.name, path)
    return path


def _small_collection(tmp_path: Path) -> Path:
    corpus = [{"_id": "d1", "text": "goldfish grow in tanks"}, {"_id": "d2", "text": "wireless radio"}]
    return write_beir(tmp_path / "c", corpus, [{"_id": "q1", "text": "goldfish"}], [("q1", "d1", 1)])


@pytest.mark.parametrize(
    ("name", "what"),
    [("qrels/test.tsv", "qrels file"), ("corpus.jsonl", "corpus file"), ("queries.jsonl", "queries file")],
)
def test_a_collection_file_that_links_to_itself(capsys, tmp_path, name, what):
    """It was reported as "not found"."""
    folder = _small_collection(tmp_path)
    link = _loop(folder / name)
    code, _, err = cli(capsys, "run", "--model", "bm25", "--dataset", str(folder), "-o", str(tmp_path / "o"))
    _refused(code, err, f"{what} {link} is a symbolic link in a loop (it points to {link.name!r})", tmp_path / "o")


def test_a_corpus_that_links_to_nothing(capsys, tmp_path):
    folder = _small_collection(tmp_path)
    (folder / "corpus.jsonl").unlink()
    os.symlink("/nonexistent/corpus.jsonl", folder / "corpus.jsonl")
    code, _, err = cli(capsys, "run", "--model", "bm25", "--dataset", str(folder), "-o", str(tmp_path / "o"))
    message = f"corpus file {folder / 'corpus.jsonl'} is a symbolic link to '/nonexistent/corpus.jsonl', which does"
    _refused(code, err, message, tmp_path / "o")


def test_a_dataset_folder_under_a_link_loop(capsys, tmp_path):
    os.symlink("loop", tmp_path / "loop")
    code, _, err = cli(capsys, "run", "--model", "bm25", "--dataset", str(tmp_path / "loop"), "-o", str(tmp_path / "o"))
    _refused(code, err, f"dataset folder {tmp_path / 'loop'} is a symbolic link in a loop", tmp_path / "o")


def test_a_first_stage_run_file_that_links_to_itself(capsys, tmp_path):
    folder = _small_collection(tmp_path)
    os.symlink("bm25.trec", tmp_path / "bm25.trec")
    args = ["run", "--model", "first-stage", "--dataset", str(folder), "--first-stage", str(tmp_path / "bm25.trec")]
    code, _, err = cli(capsys, *args, "-o", str(tmp_path / "o"))
    _refused(code, err, f"run file {tmp_path / 'bm25.trec'} is a symbolic link in a loop", tmp_path / "o")


def test_precompute_on_a_disk_too_small_for_the_store_exits_1(
    capsys, tmp_path, data_dir, tiny_bert_encoder, monkeypatch
):
    """The pre-check refused with exit 2, while a disk filling up exits 1: one rule, a fault of the machine."""
    from micebench.store import precompute

    monkeypatch.setattr(precompute, "free_space", lambda folder: (tmp_path, 1000))
    store = tmp_path / "store"
    args = ["precompute", "--model", "colbert", "--checkpoint", tiny_bert_encoder, "--dataset", str(data_dir / "adi")]
    code, _, err = cli(capsys, *args, "--device", "cpu", "--limit", "8", "--output", str(store))
    assert code == 1, err
    assert f"not enough disk space for the store {store}: it needs about" in " ".join(err.split())
    assert "1000 B are free on" in " ".join(err.split()) and len(err.strip().splitlines()) == 1, err
    assert not store.exists() and not list(tmp_path.glob(".store*"))


# -- model names --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "name", "message"),
    [
        (
            "models",
            "mice-l<k>+<m>",
            "'mice-l<k>+<m>' is a family of model names: give k and m as whole numbers (e.g. mice-l2+2)",
        ),
        ("models", "mask3-l<k>", "'mask3-l<k>' is a family of model names: give k as a whole number (e.g. mask3-l2)"),
        ("run", "mice-l2+<m>", "'mice-l2+<m>' is a family of model names: give m as a whole number (e.g. mice-l2+2)"),
    ],
)
def test_a_listed_family_of_names_taken_literally(capsys, tmp_path, data_dir, command, name, message):
    """`models` listed the name and then called it unknown."""
    extra = ["--dataset", str(data_dir / "adi"), "-o", str(tmp_path / "o")] if command == "run" else []
    code, _, err = cli(capsys, command, *(["--model", name] if command == "run" else [name]), *extra)
    _refused(code, err, message, tmp_path / "o")


# -- found by the sweep -------------------------------------------------------------------------------------------


def test_a_tokenizer_with_more_ids_than_the_embedding_table(capsys, tmp_path, data_dir, tiny_bert_ce):
    """A tokenizer from another model over 1,000 embeddings raised an IndexError inside the first batch."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    folder = _copy(tiny_bert_ce, tmp_path / "ck")
    config = BertConfig(
        vocab_size=1000, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, num_labels=1
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    capsys.readouterr()  # the save's progress bar
    code, _, err = _run(capsys, tmp_path, data_dir, "ce", str(folder))
    message = (
        "vocab_size 1000 is smaller than the 30522 token ids of tokenizer.json: ids from 1000 on have no embedding"
    )
    _refused(code, err, f"damaged checkpoint config: {folder / 'config.json'}: {message}", tmp_path / "o")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("model.safetensors", "model.safetensors (truncated: 8 bytes, shorter than its header)"),
        (
            "pytorch_model.bin",
            "pytorch_model.bin (not a torch weights file micebench can read safely: UnpicklingError)",
        ),
    ],
)
def test_a_garbage_pylate_dense_weights_file(capsys, tmp_path, data_dir, tiny_bert_encoder, name, message):
    """A traceback from safetensors or torch.load."""
    folder = _pylate(tmp_path, tiny_bert_encoder, None)
    (folder / "1_Dense" / name).write_bytes(b"garbage\n")
    code, _, err = _run(capsys, tmp_path, data_dir, "colbert", str(folder))
    _refused(code, err, f"damaged file {folder / '1_Dense'}/{message}", tmp_path / "o")


def test_a_checkpoint_folder_that_links_to_itself(capsys, tmp_path, data_dir):
    os.symlink("ck", tmp_path / "ck")
    code, _, err = _run(capsys, tmp_path, data_dir, "ce", str(tmp_path / "ck"))
    _refused(code, err, f"model folder {tmp_path / 'ck'} is a symbolic link in a loop", tmp_path / "o")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--config", "{loop}"], "experiment file {loop} is a symbolic link in a loop"),
        (["schedules", "{loop}"], "schedule file {loop} is a symbolic link in a loop"),
        (["report", "--results", "{loop}"], "results folder {loop} is a symbolic link in a loop"),
        (["results", "{loop}"], "results folder {loop} is a symbolic link in a loop"),
        (["results", "{file}"], "{file} is a file, not a results folder"),
        (["report", "--results", "{file}"], "{file} is a file, not a results folder"),
    ],
)
def test_command_paths_that_loop_or_are_files(capsys, tmp_path, args, message):
    """Reported as "not found" (or, for `results`, as a folder without results)."""
    loop, file = tmp_path / "x.toml", tmp_path / "afile"
    os.symlink("x.toml", loop)
    file.write_text("x")
    code, _, err = cli(capsys, *(a.format(loop=loop, file=file) for a in args))
    expected = message.format(loop=loop, file=file)
    assert code == 2 and expected in " ".join(err.split()) and len(err.strip().splitlines()) == 1, err
