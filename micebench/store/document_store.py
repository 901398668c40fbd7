"""A document store: per-token vectors of documents, keyed by doc id, in sharded safetensors files.

Layout of a store folder (format 2)::

    manifest.json                kind, mode, model fingerprint, dtype, fields, shards, sources, index files
    index-keys-<g>.npy           doc ids, sorted          \
    index-order-<g>.npy          store row of each id      > the doc-id index, memory-mapped (see index.py)
    index-rows-<g>.npy           shard, offset, length     /
    shard-00000.safetensors      one (tokens, dim) tensor per field, documents packed back to back, + "lengths"
                                 (int8 stores: + one float32 scale per token and field, "<field>.scale")

Opening a store reads the manifest and maps the index; shards are memory-mapped on first use and a gather copies
only the requested rows (one padded batch per field, no per-token Python loop). A new store is written under a
temporary name and renamed when complete; an extension writes new shards and then swaps the manifest atomically,
so readers see either the old or the new set of documents. Stores of format 1 (`docnos.json`, shards loaded
whole) are still read.
"""

from __future__ import annotations

# re-exported: the store is split into manifest.py, writer.py and reader.py
from micebench.store.manifest import FORMAT as FORMAT
from micebench.store.manifest import MANIFEST as MANIFEST
from micebench.store.manifest import dtype_name as dtype_name
from micebench.store.manifest import open_index as open_index
from micebench.store.manifest import read_manifest as read_manifest
from micebench.store.manifest import shard_file as shard_file
from micebench.store.manifest import shard_name as shard_name
from micebench.store.reader import DocumentStore as DocumentStore
from micebench.store.reader import PackedTensors as PackedTensors
from micebench.store.writer import StoreWriter as StoreWriter
