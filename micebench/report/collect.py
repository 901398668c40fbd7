"""Gather finished results (per-query values, seeds, timings) and latency rows for a report.

A result folder with a missing or unreadable file is reported by name and skipped, never averaged in.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from micebench.data.registry import short_name_of
from micebench.report.discover import EXPERIMENT, ResultGroup, find_groups, find_results, unreadable_manifest

#: What reading a damaged result can raise (pandas' parser and empty-data errors are ValueErrors).
READ_ERRORS = (OSError, ValueError, KeyError, TypeError, AttributeError)


@dataclass
class Collection:
    """Everything a report reads."""

    perquery: pd.DataFrame  # dataset, ranker, seed, qid, measure columns...
    runs: pd.DataFrame  # one row per result folder: dataset, ranker, seed, model, backbone, mice..., timings
    latency: pd.DataFrame  # rows of results/latency/*.json
    groups: dict[str, str]  # dataset -> "ID" | "OOD"
    skipped: list[str] = field(default_factory=list)
    experiment_rankers: list[str] = field(default_factory=list)  # experiment.json's rankers, in its order
    group_names: dict[str, str] = field(default_factory=dict)  # "OOD" -> "nanobeir (rerank)": its mean column's name
    folder: Path | None = None  # the group folder the results were read from
    slug: str = ""  # the group's report folder name


def _group(dataset: str, index: dict[str, Any]) -> str:
    if dataset in index.get("in_domain", []):
        return "ID"
    if dataset in index.get("out_of_domain", []):
        return "OOD"
    short = short_name_of(dataset)
    return "ID" if short is not None and short.group == "in-domain" else "OOD"


def _read_result(folder: Path) -> tuple[dict[str, Any], dict[str, Any], pd.DataFrame]:
    """The manifest, mean measures and per-query values of one result; raises one of READ_ERRORS when a file is
    damaged (the rule for which results count, shared by `report` and `results`)."""
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    if manifest.get("status") != "complete":
        raise ValueError("manifest status is not complete")
    if not isinstance(manifest["dataset"]["name"], str):
        raise ValueError("manifest has no dataset name")
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))["measures"]
    if not isinstance(metrics, dict) or not metrics:
        raise ValueError("metrics.json has no measures")
    for measure, mean in metrics.items():  # JSON lets NaN and Infinity through, and a hand edit may leave text
        if isinstance(mean, bool) or not isinstance(mean, int | float) or not math.isfinite(mean):
            raise ValueError(f"metrics.json gives {measure} as {mean!r}, not a finite number")
    perquery = pd.read_csv(folder / "perquery.tsv", sep="\t", dtype={"qid": str})
    if "qid" not in perquery or perquery.empty:
        raise ValueError("perquery.tsv has no rows")
    for measure in perquery.columns.drop("qid"):
        perquery[measure] = pd.to_numeric(perquery[measure])
        if perquery[measure].isna().any():
            raise ValueError(f"perquery.tsv has missing {measure} values")
        if not np.isfinite(perquery[measure].to_numpy(dtype=float)).all():
            raise ValueError(f"perquery.tsv has non-finite {measure} values")
    for measure, mean in metrics.items():
        if measure in perquery and abs(perquery[measure].mean() - float(mean)) > 1e-4:
            raise ValueError(f"perquery.tsv disagrees with metrics.json on {measure}")
    return manifest, metrics, perquery


def _run_row(folder: Path, manifest: dict[str, Any], queries: int, index: dict[str, Any]) -> dict[str, Any]:
    """One row of `Collection.runs`: labels, seed, model, backbone, MICE shape, parameters, time per query."""
    info = manifest.get("ranker", {})
    mice = info.get("mice") or {}
    ranker = str(manifest.get("ranker_label", folder.name))
    seed = manifest.get("seed", 0)
    return {
        "dataset": manifest["dataset"]["name"],
        "ranker": ranker,
        "seed": seed,
        "model": manifest.get("config", {}).get("model", info.get("ranker", "")),
        "backbone": index.get("rankers", {}).get(ranker, {}).get("backbone", ""),
        "merge_layer": mice.get("merge_layer"),
        "top_layers": mice.get("top_layers"),
        "params": info.get("parameters"),
        "rerank_ms_per_query": 1e3 * float(manifest.get("timings", {}).get("rerank_s", 0.0)) / max(queries, 1),
        "store": (manifest.get("config", {}).get("options") or {}).get("precomputed"),
        "learned": training_verdict(manifest),
        "precision": str((manifest.get("ranker_options") or {}).get("dtype") or "fp32"),
        # what the store held when the run read it (runs before these were recorded: read from the store)
        "store_bytes_per_doc": (info.get("store") or {}).get("bytes_per_doc"),
        "store_codec": (info.get("store") or {}).get("codec"),
        "folder": str(folder),
    }


def training_verdict(manifest: dict[str, Any]) -> bool | None:
    """Whether the checkpoint a result scored with learned: the verdict `run` copied into its manifest from the
    checkpoint's micebench_training.json, else (runs from before that) read from the checkpoint folder now (None:
    not a micebench-trained checkpoint, or trained before the check)."""
    from micebench.training.health import recorded_verdict

    learned = manifest.get("training_verdict")
    if not isinstance(learned, dict):
        learned = recorded_verdict((manifest.get("config", {}).get("options") or {}).get("checkpoint"))
    return bool(learned["learned"]) if isinstance(learned, dict) and "learned" in learned else None


def _read_index(folder: Path | None, skipped: list[str]) -> dict[str, Any]:
    """The group's experiment.json ({} when absent; unreadable: a warning and {})."""
    path = folder / EXPERIMENT if folder is not None else None
    if path is None or not path.is_file():
        return {}
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        rankers = index.get("rankers", {})
        if not isinstance(rankers, dict) or not all(isinstance(r, dict) for r in rankers.values()):
            raise ValueError("rankers is not a table of ranker tables")
        return index
    except READ_ERRORS as err:
        skipped.append(f"ignored {path}: {type(err).__name__}: {err}")
        return {}


def _latency_folder(folder: Path, root: Path) -> Path | None:
    """The nearest `latency/` folder at or above the group folder, up to the results root."""
    for candidate in (folder, *folder.parents):
        if (candidate / "latency").is_dir():
            return candidate / "latency"
        if candidate == root or root not in candidate.parents:
            return None
    return None


def _read_latency(folder: Path | None, skipped: list[str]) -> pd.DataFrame:
    """Rows of `latency/*.json` (a damaged file: a warning and left out)."""
    rows = []
    for path in sorted(folder.glob("*.json")) if folder is not None else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            meta = data["meta"]
            rows.extend(
                {
                    **row,
                    "run": path.stem,
                    "device_name": meta.get("device_name"),
                    "dtype": row.get("precision") or meta.get("dtype"),  # a run may time several precisions
                    "threads": meta.get("threads"),
                }
                for row in data["rows"]
            )
        except READ_ERRORS as err:
            skipped.append(f"skipped {path}: {type(err).__name__}: {err}")
    return pd.DataFrame(rows)


def collect_folders(
    folders: list[Path], index: dict[str, Any], latency: Path | None, skipped: list[str] | None = None
) -> Collection:
    """Read the given result folders (one table's worth) and the latency rows; damaged results are skipped."""
    read, skipped = [], list(skipped or [])
    seen: dict[tuple[str, str, Any], Path] = {}
    for folder in sorted(folders, key=lambda f: (len(f.parts), str(f))):  # a duplicate deeper down is skipped
        try:
            manifest, _, perquery = _read_result(folder)
            reranked = (manifest.get("first_stage") or {}).get("queries")  # a sampled first stage re-ranks fewer
            valid = isinstance(reranked, int) and not isinstance(reranked, bool) and reranked > 0
            run = _run_row(folder, manifest, reranked if valid else len(perquery), index)
            key = (run["dataset"], run["ranker"], run["seed"])
            if key in seen:
                raise ValueError(f"same dataset, ranker and seed as {seen[key]}")
        except READ_ERRORS as err:
            skipped.append(f"skipped {folder}: {type(err).__name__}: {err}")
            continue
        seen[key] = folder
        perquery.insert(0, "seed", run["seed"])
        perquery.insert(0, "ranker", run["ranker"])
        perquery.insert(0, "dataset", run["dataset"])
        read.append((str(folder), run, perquery))
    read.sort(key=lambda item: item[0])
    frames, runs = [frame for _, _, frame in read], [run for _, run, _ in read]
    perquery = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    runs_frame = pd.DataFrame(runs)
    groups = {d: _group(d, index) for d in runs_frame.get("dataset", pd.Series(dtype=str)).unique()}
    latency_rows = _read_latency(latency, skipped)
    names = index.get("group_names")
    names = {str(k): str(v) for k, v in names.items()} if isinstance(names, dict) else {}
    return Collection(perquery, runs_frame, latency_rows, groups, skipped, list(index.get("rankers", {})), names)


def collect_group(group: ResultGroup, root: str | Path) -> Collection:
    """Read one group of results with its experiment.json and nearest latency folder."""
    skipped = list(group.skipped)
    index = _read_index(group.folder, skipped)
    collection = collect_folders(group.results, index, _latency_folder(group.folder, Path(root)), skipped)
    collection.folder, collection.slug = group.folder, group.slug
    return collection


def collect_groups(results: str | Path) -> list[Collection]:
    """One collection per group of finished results below `results` (see `micebench.report.discover`)."""
    return [collect_group(group, results) for group in find_groups(results)]


def collect(results: str | Path) -> Collection:
    """Every finished result below `results` as one collection (its experiment.json and latency/ folder)."""
    results = Path(results)
    folders, unreadable = find_results(results)
    skipped = [unreadable_manifest(folder) for folder in unreadable]
    index = _read_index(results, skipped)
    latency = results / "latency" if (results / "latency").is_dir() else None
    collection = collect_folders(folders, index, latency, skipped)
    collection.folder = results
    return collection


def load_results(output: str | Path) -> list[dict[str, Any]]:
    """Every finished result at any depth under `output` as {dataset, ranker, measures, folder, manifest}, by the
    rule `report` uses; a result that cannot be read is left out with a warning naming it."""
    import logging

    log = logging.getLogger("micebench")
    folders, unreadable = find_results(output)
    for folder in unreadable:
        log.warning(unreadable_manifest(folder))
    rows = []
    for folder in folders:
        try:
            manifest, metrics, _ = _read_result(folder)
            measures = {str(k): float(v) for k, v in metrics.items()}
        except READ_ERRORS as err:
            log.warning(f"skipped {folder}: {type(err).__name__}: {err}")
            continue
        rows.append(
            {
                "dataset": manifest["dataset"]["name"],
                "ranker": manifest.get("ranker_label", folder.name),
                "measures": measures,
                "folder": str(folder),
                "manifest": manifest,
            }
        )
    return rows
