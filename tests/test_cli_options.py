"""Ranker flags come from the declared options: every option every family declares, given on the command line,
arrives in the run manifest's `ranker_options`; `train`, `precompute` and `latency` pass theirs to the model; an
option no family declares has no flag, and one the chosen model does not declare is refused in one line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from micebench.cli.flags import declared_flags
from micebench.cli.latency import latency
from micebench.cli.run import run
from micebench.cli.store import precompute
from micebench.cli.train import train
from micebench.rankers.base import Benchmarkable, StoreBacked, Trainable, rankers_with, resolve_ranker
from micebench.rankers.options import BUILTIN_OPTIONS, STORE_BACKED, TIMED, TRAINABLE
from tests.conftest import write_beir
from tests.test_cli import cli

#: a value unlike the default for every declared option (checkpoints and stores are filled in per family)
NOT_DEFAULT: dict[str, Any] = {
    "device": "cpu",
    "dtype": "bf16",
    "batch_size": 3,
    "max_length": 40,
    "attn_implementation": "eager",
    "schedule": "mask2",
    "merge_layer": 1,
    "top_layers": 1,
    "untrained": True,
    "head_seed": 7,
    "top_self_attention": False,
    "query_attends_cls": True,
    "cls_attends_document": True,
    "random_top_layers": True,
    "query_max_length": 16,
    "dim": 24,
    "query_length": 12,
    "doc_length": 30,
    "normalize": False,  # the tiny encoder has no sentence-transformers config: it would normalise
}


def as_flags(options: dict[str, Any]) -> list[str]:
    flags: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags += [flag, str(value)]
    return flags


@pytest.fixture
def small(tmp_path: Path) -> Path:
    corpus = [
        {"_id": f"d{i}", "title": "", "text": f"document {i} about topic {i % 3} and more words"} for i in range(6)
    ]
    queries = [{"_id": "q1", "text": "topic one"}, {"_id": "q2", "text": "topic two words"}]
    return write_beir(tmp_path / "small", corpus, queries, [("q1", "d1", 1), ("q2", "d2", 1)])


def test_the_declared_options_are_the_registry_s():
    for name, options in BUILTIN_OPTIONS.items():
        assert resolve_ranker(name)[0].Options is options, name
    registered = {n for n in rankers_with(object) if "<" not in n}
    assert registered == set(BUILTIN_OPTIONS)


def test_each_command_offers_the_options_of_its_families():
    """`train` offers the trainable families' options, `precompute` the store-backed, `latency` the timed ones, each
    less those it owns under its own flags; `run` offers every declared option."""
    groups = ((train, Trainable, TRAINABLE), (precompute, StoreBacked, STORE_BACKED), (latency, Benchmarkable, TIMED))
    for command, capability, families in groups:
        assert set(families) == set(rankers_with(capability)) & set(BUILTIN_OPTIONS)
        assert command.ranker_families == families
        offered = {f.name for f in command.ranker_flags}
        assert offered <= {f.name for f in declared_flags(command.ranker_families)}
    assert {f.name for f in run.ranker_flags} == {
        f.name for options in BUILTIN_OPTIONS.values() for f in dataclasses.fields(options)
    }


def every_option(family: str, tmp_path: Path, small: Path, ce: str, encoder: str, capsys: Any) -> dict[str, Any]:
    """A non-default value for every option `family` declares (a store built by the same model when it reads one)."""
    fields = [f.name for f in dataclasses.fields(BUILTIN_OPTIONS[family])]
    given = {name: NOT_DEFAULT[name] for name in fields if name in NOT_DEFAULT}
    given["checkpoint"] = encoder if family in ("dense", "colbert") else ce
    if "precomputed" in fields:
        store = tmp_path / "store"
        shared = {k: v for k, v in given.items() if k not in ("dtype", "untrained", "head_seed")}
        code, _, err = cli(
            capsys, "precompute", "--model", family, "--dataset", str(small), "-o", str(store), *as_flags(shared)
        )
        assert code == 0, err
        given["precomputed"] = str(store)
    assert set(given) == set(fields), f"no test value for {set(fields) - set(given)}"
    return given


def recorded_options(results: Path) -> dict[str, Any]:
    (manifest,) = results.rglob("manifest.json")
    recorded = json.loads(manifest.read_text())["ranker_options"]
    recorded["schedule"] = recorded.get("schedule", {}).get("name")  # recorded in full: its rules
    return recorded


#: every built-in family that declares options
FAMILIES = [name for name, options in BUILTIN_OPTIONS.items() if dataclasses.fields(options)]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_declared_option_round_trips_to_the_manifest(
    capsys, tmp_path, small, tiny_bert_ce, tiny_bert_encoder, family
):
    given = every_option(family, tmp_path, small, tiny_bert_ce, tiny_bert_encoder, capsys)
    code, _, err = cli(
        capsys, "run", "--model", family, "--dataset", str(small), "-o", str(tmp_path / "r"), *as_flags(given)
    )
    assert code == 0, err
    recorded = recorded_options(tmp_path / "r")
    for name, value in given.items():
        assert recorded[name] == value, f"{family} --{name}: given {value!r}, manifest {recorded[name]!r}"


@pytest.mark.parametrize("family", FAMILIES)
def test_every_declared_option_round_trips_from_an_experiment_file(
    capsys, tmp_path, small, tiny_bert_ce, tiny_bert_encoder, family
):
    given = every_option(family, tmp_path, small, tiny_bert_ce, tiny_bert_encoder, capsys)
    entry = "\n".join(f"{k} = {json.dumps(v)}" for k, v in given.items())
    config = tmp_path / "e.toml"
    config.write_text(
        f'output = "{tmp_path / "r"}"\n[datasets]\nin_domain = ["{small}"]\n[[rankers]]\nmodel = "{family}"\n{entry}\n'
    )
    code, _, err = cli(capsys, "run", "--config", str(config))
    assert code == 0, err
    recorded = recorded_options(tmp_path / "r")
    for name, value in given.items():
        assert recorded[name] == value, f"{family} {name}: given {value!r}, manifest {recorded[name]!r}"


def test_an_option_the_model_does_not_declare_is_refused(capsys, small):
    code, _, err = cli(capsys, "run", "--model", "ce", "--dataset", str(small), "--dim", "8")
    assert code == 2 and err.count("\n") == 1
    assert "--dim does not apply to model 'ce'" in err
    code, _, err = cli(capsys, "run", "--model", "ce", "--dataset", str(small), "--not-an-option", "1")
    assert code == 2 and "No such option: --not-an-option" in err


def test_with_an_experiment_file_ranker_options_belong_in_the_file(capsys, tmp_path):
    config = tmp_path / "e.toml"
    config.write_text('output = "x"\n[datasets]\nin_domain = ["scifact"]\n[[rankers]]\nmodel = "bm25"\n')
    code, _, err = cli(capsys, "run", "--config", str(config), "--max-length", "64")
    assert code == 2 and "--max-length is set per ranker with --config" in err
    assert not (tmp_path / "x").exists()


def test_train_passes_its_generated_options_to_the_student(capsys, tmp_path, small, tiny_bert_encoder):
    """ColBERT's --dim and --doc-length reach the student: the checkpoint's projection has 24 columns."""
    out = tmp_path / "colbert"
    code, _, err = cli(
        capsys,
        "train",
        "--model",
        "colbert",
        "--init",
        tiny_bert_encoder,
        "--train",
        str(small),
        "--split",
        "test",
        "--loss",
        "bce",
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--warmup",
        "0",
        "--negatives",
        "2",
        "--device",
        "cpu",
        "--dim",
        "24",
        "--doc-length",
        "30",
        "-o",
        str(out),
    )
    assert code == 0, err
    config = json.loads((out / "best" / "micebench_training.json").read_text())["config"]
    assert config["extra"] == {"dim": 24, "doc_length": 30}
    code, _, err = cli(
        capsys,
        "run",
        "--model",
        "colbert",
        "--checkpoint",
        str(out / "best"),
        "--dataset",
        str(small),
        "--device",
        "cpu",
        "-o",
        str(tmp_path / "r"),
    )
    assert code == 0, err
    (manifest,) = (tmp_path / "r").rglob("manifest.json")
    recorded = json.loads(manifest.read_text())["ranker_options"]
    assert (recorded["dim"], recorded["doc_length"]) == (24, 30)


def test_latency_gives_each_model_the_options_it_declares(capsys, tmp_path, tiny_bert_encoder):
    args = [
        "latency",
        "--models",
        "ce,colbert",
        "--checkpoint",
        tiny_bert_encoder,
        "--batch",
        "2",
        "--doc-len",
        "16",
        "--query-len",
        "8",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--device",
        "cpu",
        "-o",
        str(tmp_path),
    ]
    rows = {}
    for dim in ("8", "64"):
        code, _, err = cli(capsys, *args, "--dim", dim, "--name", f"dim{dim}")
        assert code == 0, err
        result = json.loads((tmp_path / "latency" / f"dim{dim}.json").read_text())
        assert result["meta"]["config"]["options"] == {"dim": int(dim)}
        rows[dim] = {r["label"]: r for r in result["rows"]}
    assert rows["8"]["ce"]["params"] == rows["64"]["ce"]["params"]  # ce does not take --dim
    assert rows["64"]["colbert:none"]["params"] - rows["8"]["colbert:none"]["params"] == 32 * (
        64 - 8
    )  # a 32 x dim projection
    code, _, err = cli(capsys, "latency", "--models", "ce", "--dim", "8", "-o", str(tmp_path / "none"))
    assert code == 2 and "--dim applies to none of the timed models (ce)" in err


def test_a_flag_parses_the_field_s_scalar_type():
    from micebench.fieldtypes import scalar_type

    expected = {"int | None": int, "bool | None": bool, "bool": bool, "str | Schedule": str, "float": float, "str": str}
    assert {annotation: scalar_type(annotation) for annotation in expected} == expected
    kinds = {flag.name: flag.kind for flag in declared_flags()}
    assert (kinds["dim"], kinds["normalize"], kinds["schedule"], kinds["checkpoint"]) == (int, bool, str, str)
