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
    if manifest.get("format", 1) > FORMAT:
        raise MicebenchError(f"document store {folder} has format {manifest['format']}: upgrade micebench to read it")
    return manifest


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
