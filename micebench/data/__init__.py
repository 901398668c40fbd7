"""Datasets: local BEIR folders, a local mirror, and ir_datasets ids behind one contract."""

from micebench.data.base import Dataset
from micebench.data.registry import SHORT_NAMES, load_dataset, where

__all__ = ["Dataset", "SHORT_NAMES", "load_dataset", "where"]
