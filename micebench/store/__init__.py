"""Precomputed document representations (MICE layer-k states or cross keys/values, ColBERT embeddings)."""

from micebench.store.document_store import DocumentStore, StoreWriter

__all__ = ["DocumentStore", "StoreWriter"]
