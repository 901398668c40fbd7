"""Gather finished results (per-query values, seeds, timings) and latency rows for a report.

A result folder with a missing or unreadable file is reported by name and skipped, never averaged in.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from micebench.data.registry import SHORT_NAMES

log = logging.getLogger("micebench")


@dataclass
class Collection:
    """Everything a report reads."""

    perquery: pd.DataFrame  # dataset, ranker, seed, qid, measure columns...
    runs: pd.DataFrame  # one row per result folder: dataset, ranker, seed, model, backbone, mice..., timings
    latency: pd.DataFrame  # rows of results/latency/*.json
    groups: dict[str, str]  # dataset -> "ID" | "OOD"
    skipped: list[str] = field(default_factory=list)


def _group(dataset: str, index: dict[str, Any]) -> str:
    if dataset in index.get("in_domain", []):
        return "ID"
    if dataset in index.get("out_of_domain", []):
        return "OOD"
    short = SHORT_NAMES.get(dataset)
    if short is not None:
        return "ID" if short.group == "in-domain" else "OOD"
    return "ID" if "trec-dl" in dataset or "msmarco" in dataset else "OOD"


def _read_result(folder: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    manifest = json.loads((folder / "manifest.json").read_text())
    if manifest.get("status") != "complete":
        raise ValueError("manifest status is not complete")
    metrics = json.loads((folder / "metrics.json").read_text())["measures"]
    perquery = pd.read_csv(folder / "perquery.tsv", sep="\t", dtype={"qid": str})
    if "qid" not in perquery or perquery.empty:
        raise ValueError("perquery.tsv has no rows")
    for measure, mean in metrics.items():
        if measure in perquery and abs(perquery[measure].mean() - mean) > 1e-4:
            raise ValueError(f"perquery.tsv disagrees with metrics.json on {measure}")
    return manifest, perquery


def collect(results: str | Path) -> Collection:
    """Read every result folder under `results` (and `results/latency/*.json`)."""
    results = Path(results)
    index_path = results / "experiment.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    folders = sorted(
        {p.parent for p in [*results.glob("*/*/manifest.json"), *results.glob("*/*/seed-*/manifest.json")]}
    )
    frames, runs, skipped = [], [], []
    for folder in folders:
        if folder.parts[len(results.parts)] in ("latency", "attention", "stores"):
            continue
        try:
            manifest, perquery = _read_result(folder)
        except (OSError, ValueError, KeyError, json.JSONDecodeError, pd.errors.ParserError) as err:
            message = f"skipped {folder}: {type(err).__name__}: {err}"
            log.warning(message)
            skipped.append(message)
            continue
        dataset = manifest["dataset"]["name"]
        ranker = manifest.get("ranker_label", folder.name)
        seed = manifest.get("seed", 0)
        perquery.insert(0, "seed", seed)
        perquery.insert(0, "ranker", ranker)
        perquery.insert(0, "dataset", dataset)
        frames.append(perquery)
        info = manifest.get("ranker", {})
        queries = max(len(perquery), 1)
        runs.append(
            {
                "dataset": dataset,
                "ranker": ranker,
                "seed": seed,
                "model": manifest.get("config", {}).get("model", info.get("ranker", "")),
                "backbone": index.get("rankers", {}).get(ranker, {}).get("backbone", ""),
                "merge_layer": (info.get("mice") or {}).get("merge_layer"),
                "top_layers": (info.get("mice") or {}).get("top_layers"),
                "params": info.get("parameters"),
                "rerank_ms_per_query": 1e3 * manifest.get("timings", {}).get("rerank_s", 0.0) / queries,
                "folder": str(folder),
            }
        )
    latency_rows = []
    for path in sorted((results / "latency").glob("*.json")):
        try:
            data = json.loads(path.read_text())
            for row in data["rows"]:
                latency_rows.append(
                    {
                        **row,
                        "run": path.stem,
                        "device_name": data["meta"].get("device_name"),
                        "dtype": data["meta"].get("dtype"),
                        "threads": data["meta"].get("threads"),
                    }
                )
        except (OSError, KeyError, json.JSONDecodeError) as err:
            message = f"skipped {path}: {type(err).__name__}: {err}"
            log.warning(message)
            skipped.append(message)
    perquery = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    runs_frame = pd.DataFrame(runs)
    groups = {d: _group(d, index) for d in runs_frame.get("dataset", pd.Series(dtype=str)).unique()}
    return Collection(perquery, runs_frame, pd.DataFrame(latency_rows), groups, skipped)
