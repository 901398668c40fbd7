"""A document store's manifest: its name and format, reading it, and the index and shard entries it points to.

The layout of a store folder is described in `micebench.store.document_store`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from micebench.errors import MicebenchError
from micebench.models.precision import dtype_name as dtype_name
from micebench.store.index import DocIndex, row_table
from micebench.store.shards import ShardFile

MANIFEST = "manifest.json"
FORMAT = 2
#: stores of a compressing codec (pq, residual: `codecs.py`) have format 3, so that older readers refuse them
CODEC_FORMAT = 3
#: manifest keys an extension must share with the store it extends
_EXTEND_KEYS = ("kind", "mode", "fingerprint", "dtype", "fields")


def shard_name(number: int) -> str:
    """File name of shard `number`."""
    return f"shard-{number:05d}.safetensors"


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of a complete store; a one-line error for anything else."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise MicebenchError(f"not a document store (no {MANIFEST}): {folder}")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise MicebenchError(f"corrupt document store manifest: {path}") from None
    if not isinstance(manifest, dict):
        raise MicebenchError(f"corrupt document store manifest (not a JSON object): {path}")
    if manifest.get("status") != "complete":
        raise MicebenchError(f"document store is incomplete: {folder}")
    check_manifest_types(manifest, path)
    if manifest.get("format", 1) > CODEC_FORMAT:
        raise MicebenchError(f"document store {folder} has format {manifest['format']}: upgrade micebench to read it")
    return manifest


#: the manifest fields a reader uses: their type and whether every complete store has them
MANIFEST_FIELDS = {
    "format": ("int", False),
    "kind": ("str", False),
    "mode": ("str | None", False),
    "fingerprint": ("str", False),
    "fields": ("list[str]", True),
    "dtype": ("str", True),
    "shards": ("list", True),
    "num_docs": ("int", False),
    "num_tokens": ("int", False),
}
#: per shard entry: type and whether required
SHARD_FIELDS = {"file": ("str", True), "bytes": ("int", False), "docs": ("int", False), "tokens": ("int", False)}


def check_manifest_types(manifest: dict[str, Any], path: Path) -> None:
    """Every manifest field a reader uses typed (counts >= 0): a damaged manifest is one line naming the field."""
    from micebench.fieldtypes import type_problem

    def damaged(field: str, problem: str) -> MicebenchError:
        return MicebenchError(f"damaged store manifest: {path}: {field} {problem}")

    def check(table: dict[str, Any], specs: dict[str, tuple[str, bool]], prefix: str) -> None:
        for field, (annotation, required) in specs.items():
            if field not in table:
                if required:
                    raise damaged(prefix + field, "is missing")
                continue
            value = table[field]
            problem = "must be a list" if annotation == "list" and not isinstance(value, list) else None
            problem = problem or (type_problem(value, annotation) if annotation != "list" else None)
            if problem is None and annotation == "int" and value < 0:
                problem = f"must be at least 0 (got {value!r})"
            if problem:
                raise damaged(prefix + field, problem)

    check(manifest, MANIFEST_FIELDS, "")
    for i, entry in enumerate(manifest["shards"]):
        if not isinstance(entry, dict):
            raise damaged(f"shards[{i}]", f"must be an object (got {entry!r})")
        check(entry, SHARD_FIELDS, f"shards[{i}].")
    if "codec" in manifest and not isinstance(manifest["codec"], dict):
        raise damaged("codec", f"must be an object (got {manifest['codec']!r})")
    if manifest.get("format", 1) >= 2 and not isinstance(manifest.get("index"), dict):
        raise damaged("index", f"must be an object (got {manifest.get('index')!r})")


def open_index(folder: Path, manifest: dict[str, Any]) -> DocIndex:
    """The doc-id index of a store: memory-mapped (format 2) or built from `docnos.json` and the shards (format 1)."""
    if manifest.get("format", 1) >= 2:
        return DocIndex.load(folder, manifest["index"])
    try:
        docnos = json.loads((folder / "docnos.json").read_text())
    except (OSError, ValueError):
        raise MicebenchError(f"corrupt document store {folder}: unreadable docnos.json") from None
    lengths = [shard_file(folder, entry, []).lengths() for entry in manifest["shards"]]
    return DocIndex.build(docnos, row_table(range(len(lengths)), lengths))


def shard_file(folder: Path, entry: dict[str, Any], names: list[str]) -> ShardFile:
    """The header of one shard of a manifest, checked against what the manifest records."""
    return ShardFile(folder / entry["file"], names, docs=entry.get("docs"), tokens=entry.get("tokens"))
