"""Evaluation with ranx: measures and per-query values."""

from micebench.evaluation.measures import DEFAULT_MEASURES, Evaluation, evaluate

__all__ = ["DEFAULT_MEASURES", "Evaluation", "evaluate"]
