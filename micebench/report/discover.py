"""Find finished results at any depth below a folder and group them into the tables a report writes.

A result is a folder holding a `manifest.json` whose status is `complete` (`micebench.results.is_complete`).
Results are grouped by the nearest folder holding an `experiment.json` (written by `run --config`), else by the
folder above their `<dataset>/<ranker>` level (`<dataset>/<ranker>/seed-<S>` with several seeds).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from micebench.results import MANIFEST, manifest_status, slug

EXPERIMENT = "experiment.json"
#: Folders micebench writes next to results that hold other outputs (latency rows, attention maps, stores).
NOT_RESULTS = ("latency", "attention", "stores")
SEED_FOLDER = re.compile(r"seed-\d+")
TOP_LEVEL = "top-level"


@dataclass
class ResultGroup:
    """Results reported in one table: those of one experiment folder or one results root."""

    folder: Path
    slug: str
    results: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def unreadable_manifest(folder: Path) -> str:
    """The warning for a result folder whose manifest cannot be read."""
    return f"skipped {folder}: {MANIFEST} is not a readable JSON object"


def find_results(root: str | Path) -> tuple[list[Path], list[Path]]:
    """Finished result folders at any depth below `root`, and folders whose manifest is unreadable (both sorted)."""
    root = Path(root)
    found, unreadable, seen = [], [], set()
    for current, dirs, _files in os.walk(root, followlinks=True):
        folder = Path(current)
        real = os.path.realpath(folder)
        if real in seen:  # a link back up the tree
            dirs[:] = []
            continue
        seen.add(real)
        status = manifest_status(folder)
        if status == "complete":
            found.append(folder)
        elif status == "unreadable":
            unreadable.append(folder)
        if status is not None:
            dirs[:] = []  # a result (or a run in progress) holds no further results
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in NOT_RESULTS)
    return sorted(found), sorted(unreadable)


def group_folder(result: Path, root: Path) -> Path:
    """The folder a result is reported with: nearest `experiment.json` holder, else above `<dataset>/<ranker>`."""
    if result == root:
        return root
    parent = result.parent
    while True:
        if (parent / EXPERIMENT).is_file():
            return parent
        if parent == root or root not in parent.parents:
            break
        parent = parent.parent
    level = result.parent if SEED_FOLDER.fullmatch(result.name) else result
    group = level.parent.parent
    return group if group == root or root in group.parents else root


def group_slug(group: Path, root: Path) -> str:
    """Folder name of a group's report: its path below the root as a slug (`top-level` for the root itself)."""
    relative = group.relative_to(root).as_posix()
    return TOP_LEVEL if relative == "." else slug(relative)


def find_groups(root: str | Path) -> list[ResultGroup]:
    """The finished results below `root`, grouped (groups sorted by folder; slugs made unique)."""
    root = Path(root)
    folders, unreadable = find_results(root)
    groups: dict[Path, ResultGroup] = {}
    for folder in folders:
        key = group_folder(folder, root)
        groups.setdefault(key, ResultGroup(key, group_slug(key, root))).results.append(folder)
    for folder in unreadable:
        key = group_folder(folder, root)
        groups.setdefault(key, ResultGroup(key, group_slug(key, root))).skipped.append(unreadable_manifest(folder))
    ordered = [groups[k] for k in sorted(groups)]
    used: set[str] = set()
    for group in ordered:
        base, n = group.slug, 1
        while group.slug in used:
            n += 1
            group.slug = f"{base}-{n}"
        used.add(group.slug)
    return ordered
