"""Dataset suites: one `--dataset` name (`nanobeir`, `nanobeir11`, with `@evaluator`) that `run` expands into its
member datasets, written under one experiment folder whose `experiment.json` makes `report` add the suite's mean.

`run --model ce --dataset nanobeir` writes `<output>/nanobeir/<nano-set>/<ranker>` for the 13 sets; each further
ranker run into the same folder is added to its `experiment.json`, so the report compares them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from micebench.data.nanobeir import check_set, nano_set, split_protocol, suite_members
from micebench.pipeline import RunConfig, RunResult
from micebench.results import slug

#: the report's group that holds a suite's members (its mean column is named after the suite)
SUITE_GROUP = "OOD"


def is_suite(name: str) -> bool:
    """Whether a dataset name is a suite that `run` expands."""
    return suite_members(name) is not None


def suite_runs(config: RunConfig) -> list[RunConfig]:
    """One run per member of the suite `config.dataset`, all under `<output>/<suite>`."""
    members = suite_members(config.dataset) or []
    output = str(Path(config.output) / slug(config.dataset))
    return [replace(config, dataset=member, output=output) for member in members]


def write_suite_index(config: RunConfig, runs: list[RunConfig]) -> Path:
    """`experiment.json` of the suite's folder: its members as one group named after the suite and its protocol,
    and this ranker added to those already run there."""
    from micebench.data.registry import dataset_label

    output = Path(runs[0].output)
    output.mkdir(parents=True, exist_ok=True)
    path = output / "experiment.json"
    try:
        previous = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        previous = {}
    rankers = previous.get("rankers") if isinstance(previous.get("rankers"), dict) else {}
    rankers[config.ranker_label()] = {"model": config.model, "backbone": ""}
    base, protocol = split_protocol(config.dataset)
    index = {
        "in_domain": [],
        "out_of_domain": [dataset_label(r.dataset) for r in runs],
        "group_names": {SUITE_GROUP: f"{base} ({protocol})"},
        "rankers": rankers,
    }
    path.write_text(json.dumps(index, indent=2) + "\n")
    return path


def run_suite(config: RunConfig, announce: Callable[[RunConfig, RunResult | None], None]) -> list[RunResult]:
    """Run every member of a suite (finished ones kept unless `overwrite`), after checking that all resolve and that
    every member's files read (a damaged or missing fifth set is refused before the first set runs)."""
    from micebench.data.registry import data_dir, dataset_label, where
    from micebench.pipeline import check_config, result_folder, run_experiment
    from micebench.results import is_complete

    check_config(config)
    runs = suite_runs(config)
    root = data_dir(config.data_dir)
    for run in runs:  # every member's files found and readable before the first member writes anything
        where(run.dataset, root)
    for run in runs:
        member = nano_set(run.dataset)
        if member is not None:
            check_set(member[0])
    results = []
    for i, run in enumerate(runs):
        if is_complete(result_folder(run, dataset_label(run.dataset))) and not run.overwrite:
            announce(run, None)
        else:
            result = run_experiment(run)
            if result is not None:
                results.append(result)
            announce(run, result)
        if i == 0:  # written once the first member stands: a run refused or failing at once leaves nothing
            write_suite_index(config, runs)
    return results
