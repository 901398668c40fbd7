"""Precomputed document representations (MICE layer-k states or cross keys/values, ColBERT embeddings)."""

from micebench.store.reader import DocumentStore
from micebench.store.writer import StoreWriter

__all__ = ["DocumentStore", "StoreWriter"]
