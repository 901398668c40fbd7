"""Rankers behind one contract (`score`, `rerank`, `describe`) and a name registry."""

from micebench.rankers.base import Ranker, available_rankers, load_ranker, register_ranker

__all__ = ["Ranker", "available_rankers", "load_ranker", "register_ranker"]
