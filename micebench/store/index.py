"""The doc-id index of a document store: which row holds a document, and where each row's tokens are.

Three arrays, saved as `.npy` files and memory-mapped when a store is opened (a lookup reads a few pages, so a
store of millions of documents opens instantly):

- `keys`: the doc ids (UTF-8 bytes), sorted, for a binary search;
- `order`: the store row of each sorted key;
- `rows`: per store row, its shard, its first token inside that shard and its number of tokens.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from micebench.errors import MicebenchError
from micebench.store.shards import release

ROW = np.dtype([("shard", "<i4"), ("length", "<i4"), ("start", "<i8")])
FILES = ("keys", "order", "rows")


def encode_ids(docnos: Sequence[str]) -> np.ndarray:
    """Doc ids as a fixed-width bytes array (UTF-8)."""
    return np.array([d.encode("utf-8") for d in docnos], dtype=bytes) if len(docnos) else np.array([], dtype="S1")


def row_table(shards: Sequence[int], lengths: Sequence[np.ndarray]) -> np.ndarray:
    """Rows of documents packed shard after shard: `lengths[i]` are the document lengths of shard `shards[i]`."""
    parts = []
    for shard, length in zip(shards, lengths, strict=True):
        part = np.empty(len(length), dtype=ROW)
        part["shard"], part["length"] = shard, length
        part["start"] = np.cumsum(length, dtype=np.int64) - length
        parts.append(part)
    return np.concatenate(parts) if parts else np.empty(0, dtype=ROW)


class DocIndex:
    """Doc id -> store row, by binary search over sorted ids; and each row's shard, token offset and length."""

    def __init__(self, keys: np.ndarray, order: np.ndarray, rows: np.ndarray):
        self.keys, self.order, self.rows = keys, order, rows

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def build(cls, docnos: Sequence[str], rows: np.ndarray) -> DocIndex:
        """Index of documents `docnos` stored in rows 0.. in that order; duplicate ids are an error."""
        return cls.from_keys(encode_ids(docnos), rows)

    @classmethod
    def from_keys(cls, ids: np.ndarray, rows: np.ndarray) -> DocIndex:
        """Index of encoded ids `ids` stored in rows 0.. in that order."""
        if len(ids) != len(rows):
            raise MicebenchError(f"document store index: {len(ids)} ids for {len(rows)} rows")
        order = np.argsort(ids, kind="stable")
        keys = ids[order]
        same = np.flatnonzero(keys[1:] == keys[:-1])
        if len(same):
            raise MicebenchError(f"duplicate document id {keys[same[0]].decode('utf-8')!r} in the store")
        return cls(keys, order.astype(np.int64), np.ascontiguousarray(rows, dtype=ROW))

    def extended(self, docnos: Sequence[str], rows: np.ndarray) -> DocIndex:
        """This index plus documents `docnos`, stored after the existing rows."""
        ids = self.keys[np.argsort(self.order, kind="stable")]
        return DocIndex.from_keys(np.concatenate([ids, encode_ids(docnos)]), np.concatenate([self.rows, rows]))

    def lookup(self, docnos: Sequence[str]) -> np.ndarray:
        """Store row of each doc id, -1 for ids absent from the store."""
        if not len(docnos) or not len(self.keys):
            return np.full(len(docnos), -1, dtype=np.int64)
        raw = [d.encode("utf-8") for d in docnos]
        width = self.keys.dtype.itemsize
        fits = np.fromiter((len(r) <= width for r in raw), dtype=bool, count=len(raw))
        query = np.array(raw, dtype=self.keys.dtype)  # same width as the keys: no copy of the keys to compare
        at = np.minimum(np.searchsorted(self.keys, query), len(self.keys) - 1)
        found = fits & (self.keys[at] == query)
        return np.where(found, self.order[at], -1)

    def absent(self, docnos: Sequence[str], rows: np.ndarray | None = None) -> list[str]:
        """The ids of `docnos` the store does not hold, in order (`rows`: their `lookup`, when already done)."""
        rows = self.lookup(docnos) if rows is None else rows
        return [d for d, r in zip(docnos, rows.tolist(), strict=True) if r < 0]

    def docnos(self) -> list[str]:
        """Doc ids in storage order (reads the whole index)."""
        return [k.decode("utf-8") for k in self.keys[np.argsort(self.order, kind="stable")]]

    def save(self, folder: Path, generation: int) -> dict[str, str]:
        """Write the three arrays as `<name>-<generation>.npy` (each atomically); returns their file names."""
        names = {}
        for name, array in zip(FILES, (self.keys, self.order, self.rows), strict=True):
            file = f"index-{name}-{generation:04d}.npy"
            tmp = folder / f".{file}.tmp"
            with open(tmp, "wb") as handle:
                np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
            release(tmp)
            os.replace(tmp, folder / file)
            names[name] = file
        return names

    @classmethod
    def load(cls, folder: Path, files: dict[str, str]) -> DocIndex:
        """Memory-map the arrays named in a manifest's `index` entry (nothing is read until a lookup)."""
        keys, order, rows = (_map_npy(folder / files[name]) for name in FILES)
        if not (len(keys) == len(order) == len(rows)) or rows.dtype != ROW or keys.dtype.kind != "S":
            raise MicebenchError(f"corrupt store index in {folder}: the arrays do not match")
        return cls(keys, order, rows)


def _map_npy(path: Path) -> np.ndarray:
    """A 1-d `.npy` array as a read-only view of a random-access memory map of the file."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in read:
                raise ValueError(f"unsupported .npy version {version}")
            shape, fortran, dtype = read[version](handle)
            offset = handle.tell()
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as error:
        raise MicebenchError(f"corrupt store index {path}: {error}") from None
    if len(shape) != 1 or fortran or dtype.hasobject or offset + shape[0] * dtype.itemsize > len(mapped):
        raise MicebenchError(f"corrupt store index {path}: unexpected array layout")
    if hasattr(mapped, "madvise"):
        mapped.madvise(mmap.MADV_RANDOM)
    return np.frombuffer(mapped, dtype=dtype, count=shape[0], offset=offset)
