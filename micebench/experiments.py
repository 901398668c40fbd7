"""Experiment files: the cross product of rankers x datasets x seeds declared in one TOML file.

```toml
output = "results/offline"
first_stage = "auto"
top_k = 100
seeds = [0]
[datasets]
in_domain = ["trec-dl-19", "trec-dl-20"]
out_of_domain = ["scifact"]
[[rankers]]
name = "bm25"            # result-folder label (default: the model name)
model = "bm25"
[[rankers]]
name = "mice-l4+3"
model = "mice"
checkpoint = "checkpoints/mice-l4+3"
merge_layer = 4
top_layers = 3
backbone = "MiniLM"      # rows of the report are grouped by backbone
```
A ranker entry may set any run field (first_stage, top_k, ...) and any option its model declares (checkpoint,
schedule, precomputed, max_length, ...; `micebench models` lists them); an option the model does not take is
refused before anything runs. Top-level run fields are defaults for every ranker; top-level options (device,
dtype, batch_size) apply to the rankers that take them. `{dataset}` and `{seed}` in `precomputed` and
`checkpoint` are replaced per run (stores are per corpus). The grouping of datasets and the rankers' backbones
are written to `<output>/experiment.json` for `report`.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from micebench.data.registry import dataset_label
from micebench.errors import MicebenchError, not_found
from micebench.fieldtypes import field_types, type_problem
from micebench.pipeline import RunConfig
from micebench.rankers.base import declared_options, option_names, ranker_options
from micebench.results import slug

_RUN_FIELDS = {f.name for f in fields(RunConfig)} - {"options"}
_RUN_TYPES = {k: v for k, v in field_types(RunConfig).items() if k in _RUN_FIELDS}
_RANKER_ONLY = {"backbone"}
#: top-level keys that are the file's own structure
_FILE_KEYS = {"datasets", "rankers", "seeds"}


def load_experiment(path: str | Path) -> dict[str, Any]:
    """Parse and check an experiment file; returns the plain dictionary."""
    path = Path(path)
    if not path.is_file():
        raise MicebenchError(not_found("experiment file", path))
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise MicebenchError(f"{path}: not UTF-8 text (byte {raw[err.start]:#04x} at offset {err.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise MicebenchError(f"{path}: invalid TOML ({err})") from None
    check_run_fields(data, path, "")
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or any(isinstance(x, bool) or not isinstance(x, int) for x in seeds):
        raise MicebenchError(f"{path}: seeds must be a non-empty list of whole numbers (got {seeds!r})")
    repeated = sorted({x for x in seeds if seeds.count(x) > 1})
    if repeated:
        raise MicebenchError(f"{path}: seeds {repeated} appear more than once (each seed runs once)")
    datasets = data.get("datasets")
    if not isinstance(datasets, dict) or not any(datasets.values()):
        raise MicebenchError(f"{path}: needs a [datasets] table with in_domain and/or out_of_domain lists")
    unknown_groups = set(datasets) - {"in_domain", "out_of_domain"}
    if unknown_groups:
        raise MicebenchError(f"{path}: unknown dataset group(s) {sorted(unknown_groups)} (in_domain, out_of_domain)")
    for group, names_ in datasets.items():
        if not isinstance(names_, list) or not all(isinstance(n, str) for n in names_):
            raise MicebenchError(f"{path}: datasets.{group} must be a list of dataset names (got {names_!r})")
    rankers = data.get("rankers")
    if not isinstance(rankers, list) or not rankers or not all(isinstance(r, dict) for r in rankers):
        raise MicebenchError(f"{path}: needs at least one [[rankers]] entry")
    names = []
    for i, ranker in enumerate(rankers):
        if not isinstance(ranker.get("model"), str):
            raise MicebenchError(f"{path}: rankers[{i}] has no 'model' (a model name)")
        check_run_fields(ranker, path, f"rankers[{i}].")
        for key in ("name", "backbone"):
            if key in ranker and not isinstance(ranker[key], str):
                raise MicebenchError(f"{path}: rankers[{i}].{key} must be str (got {ranker[key]!r})")
        try:  # the model exists and takes every option given, before anything runs or is written
            ranker_options(ranker["model"], **_options_of(ranker, data))
        except MicebenchError as err:
            raise MicebenchError(f"{path}: rankers[{i}]: {err}") from None
        names.append(ranker.get("name") or ranker["model"])
    folders: dict[str, int] = {}
    for i, name in enumerate(names):  # names are folder names: `bm25 top` and `bm25_top` would share one
        first = folders.setdefault(slug(name).casefold(), i)
        if first != i:
            raise MicebenchError(
                f"{path}: rankers[{first}] ({names[first]!r}) and rankers[{i}] ({name!r}) would share the result "
                f"folder {slug(name)!r}; give each a distinct 'name'"
            )
    seen: dict[str, str] = {}
    for group, names_ in datasets.items():  # a dataset listed twice would run once and be reported twice
        for name in names_:
            label = slug(dataset_label(name))
            if label.casefold() in seen:
                raise MicebenchError(
                    f"{path}: datasets {seen[label.casefold()]} and {group}: {name!r} share the result folder "
                    f"{label!r}; list each dataset once"
                )
            seen[label.casefold()] = f"{group}: {name!r}"
    options = {name for ranker in rankers for name in option_names(ranker["model"])}
    unknown = sorted(set(data) - _RUN_FIELDS - _FILE_KEYS - options)
    if unknown:
        raise MicebenchError(f"{path}: unknown top-level key(s) {unknown} (run fields, seeds, or the rankers' options)")
    return data


#: run fields that count something, with their least value
_AT_LEAST_ONE = ("top_k", "chunk_queries")


def check_run_fields(table: dict[str, Any], path: Path, where: str) -> None:
    """The run fields of a table (top level or a ranker entry) typed as RunConfig types them, counts at least 1:
    one line naming the key and the file, before anything is written."""
    for key, annotation in _RUN_TYPES.items():
        if key not in table:
            continue
        problem = type_problem(table[key], annotation)
        if problem is None and key in _AT_LEAST_ONE and table[key] < 1:
            problem = f"must be at least 1 (got {table[key]!r})"
        if problem:
            raise MicebenchError(f"{path}: {where}{key} {problem}")


def check_datasets(data: dict[str, Any], data_dir: str | Path | None = None) -> None:
    """Every dataset name of the file resolves (a folder, the mirror or ir_datasets), before anything runs."""
    from micebench.data.registry import data_dir as resolve_data_dir
    from micebench.data.registry import where

    root = resolve_data_dir(data_dir or data.get("data_dir"))
    for name in [*data["datasets"].get("in_domain", []), *data["datasets"].get("out_of_domain", [])]:
        where(name, root)


def _options_of(ranker: dict[str, Any], data: dict[str, Any], overrides: dict[str, Any] | None = None) -> dict:
    """A ranker entry's model options: its own keys that are not run fields, plus the top-level (and command
    line) options its model declares."""
    top_level = {k: v for k, v in {**data, **(overrides or {})}.items() if k not in _RUN_FIELDS}
    shared = declared_options(ranker["model"], **top_level)
    own = {k: v for k, v in ranker.items() if k not in _RUN_FIELDS | _RANKER_ONLY}
    return {**shared, **own}


def experiment_runs(data: dict[str, Any], overrides: dict[str, Any] | None = None) -> list[RunConfig]:
    """One RunConfig per (ranker, dataset, seed), in declaration order; `overrides` are command-line run fields
    and options (an option applies to the rankers that take it)."""
    overrides = overrides or {}
    seeds = data.get("seeds", [0])
    datasets = [*data["datasets"].get("in_domain", []), *data["datasets"].get("out_of_domain", [])]
    defaults = {k: v for k, v in data.items() if k in _RUN_FIELDS and k not in ("model", "dataset", "seed", "name")}
    run_overrides = {k: v for k, v in overrides.items() if k in _RUN_FIELDS}
    runs = []
    for ranker in data["rankers"]:
        fields_given = {k: v for k, v in ranker.items() if k in _RUN_FIELDS}
        fields_given.setdefault("name", ranker["model"])
        for dataset in datasets:
            for seed in seeds:
                options = _options_of(ranker, data, overrides)
                for key in ("precomputed", "checkpoint"):  # per-dataset stores: "stores/{dataset}-kv"
                    if isinstance(options.get(key), str):
                        options[key] = options[key].replace("{dataset}", dataset).replace("{seed}", str(seed))
                values = {**defaults, **fields_given, **run_overrides, "dataset": dataset, "seed": seed}
                config = RunConfig(**values, options=options)
                config.seed_folder = len(seeds) > 1
                runs.append(config)
    return runs


def write_experiment_index(data: dict[str, Any], output: str | Path) -> Path:
    """`<output>/experiment.json`: dataset groups and ranker backbones, read by `micebench report`."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    from micebench.data.registry import dataset_label

    index = {
        "in_domain": [dataset_label(d) for d in data["datasets"].get("in_domain", [])],
        "out_of_domain": [dataset_label(d) for d in data["datasets"].get("out_of_domain", [])],
        "rankers": {
            (r.get("name") or r["model"]): {"model": r["model"], "backbone": r.get("backbone", "")}
            for r in data["rankers"]
        },
    }
    path = output / "experiment.json"
    path.write_text(json.dumps(index, indent=2) + "\n")
    return path


def run_experiment_file(
    path: str | Path,
    overwrite: bool,
    data_dir: str | None,
    device: str | None,
    resume: bool = False,
    say: Callable[[str], Any] | None = None,
) -> tuple[int, int]:
    """Run every (ranker, dataset, seed) of an experiment file, keeping finished results unless `overwrite`;
    `say` gets one line per run done. Returns how many runs were done and how many finished results were kept."""
    from micebench.data import load_dataset
    from micebench.pipeline import check_config, result_folder, run_experiment
    from micebench.results import is_complete

    data = load_experiment(path)
    check_datasets(data, data_dir)
    overrides: dict[str, object] = {"overwrite": overwrite, "resume": resume}
    if device:
        overrides["device"] = device
    if data_dir:
        overrides["data_dir"] = data_dir
    runs = experiment_runs(data, overrides)
    for config in runs:  # every run's options, seed and measures before the first one starts
        check_config(config)
    done = skipped = 0
    for i, config in enumerate(runs):
        folder = result_folder(config, load_dataset(config.dataset, config.data_dir, config.split).name)
        if is_complete(folder) and not overwrite:
            skipped += 1
        else:
            result = run_experiment(config)
            done += 1
            if result is not None and say is not None:  # None: a non-zero torchrun rank, rank 0 reports
                means = ", ".join(f"{k} {v:.4f}" for k, v in list(result.evaluation.means.items())[:2])
                say(f"{config.dataset} · {config.ranker_label()} · seed {config.seed}: {means}")
        if i == 0:  # written once the first run stands: a run refused or failing at once leaves nothing behind
            write_experiment_index(data, config.output)
    return done, skipped
