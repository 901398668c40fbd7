"""Result folders, one per (dataset, ranker): run.trec, metrics.json, perquery.tsv, manifest.json.

Everything is written into a temporary sibling folder and renamed into place, so an interrupted run never
leaves a half-written result behind.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from micebench.data.trec import Run, query_lines
from micebench.errors import MicebenchError
from micebench.evaluation.measures import Evaluation

MANIFEST = "manifest.json"
_TRACKED_PACKAGES = ("micebench", "torch", "transformers", "ranx", "ir_datasets", "bm25s", "numpy", "pandas")


def slug(name: str) -> str:
    """A folder-safe version of a dataset or ranker name (`beir/scifact/test` -> `beir__scifact__test`)."""
    return re.sub(r"[^A-Za-z0-9._+=-]", "_", name.replace("/", "__")).strip("._") or "unnamed"


def result_dir(output: str | Path, dataset: str, ranker: str) -> Path:
    """The folder holding one (dataset, ranker) result."""
    return Path(output) / slug(dataset) / slug(ranker)


def manifest_status(folder: Path) -> str | None:
    """'complete', 'unfinished', 'unreadable' (not a readable JSON object), or None when the folder has no
    manifest: the one rule `run`, `results` and `report` use for which folders hold a finished result."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "unreadable"
    if not isinstance(manifest, dict):
        return "unreadable"
    return "complete" if manifest.get("status") == "complete" else "unfinished"


def is_complete(folder: Path) -> bool:
    """True when the folder holds a finished result."""
    return manifest_status(folder) == "complete"


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide the numbers."""
    versions = {"python": platform.python_version()}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_sha() -> str | None:
    """The commit of the micebench source tree, when it is a git checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def environment() -> dict[str, Any]:
    """Versions, git commit, host and command line for a manifest."""
    return {
        "versions": package_versions(),
        "git_sha": git_sha(),
        "platform": platform.platform(),
        "command_line": sys.argv,
    }


def write_result(
    folder: Path,
    run: Run,
    evaluation: Evaluation,
    manifest: Mapping[str, Any],
    tag: str,
    overwrite: bool = False,
) -> Path:
    """Write a complete result folder atomically; refuses to replace a finished result unless `overwrite`."""
    if folder.exists() and not overwrite:
        raise MicebenchError(f"result already exists: {folder} (use --overwrite to replace it)")
    from micebench.atomic import atomic_folder, writing

    with writing(folder), atomic_folder(folder) as tmp:
        with open(tmp / "run.trec", "w", encoding="utf-8") as handle:
            for qid in sorted(run):  # the lines of format_run, one write per query
                handle.write("".join(query_lines(qid, run[qid], tag)))
        (tmp / "metrics.json").write_text(json.dumps(evaluation.as_dict(), indent=2) + "\n")
        measures = list(evaluation.per_query)
        qids = sorted(next(iter(evaluation.per_query.values()), {}))
        with open(tmp / "perquery.tsv", "w", encoding="utf-8") as handle:
            handle.write("\t".join(["qid", *measures]) + "\n")
            for qid in qids:
                values = [f"{evaluation.per_query[m][qid]:.6f}" for m in measures]
                handle.write("\t".join([qid, *values]) + "\n")
        (tmp / MANIFEST).write_text(json.dumps({**manifest, "status": "complete"}, indent=2, default=str) + "\n")
    return folder
