"""Evaluation with ranx: measures and per-query values."""

from micebench.evaluation.measures import DEFAULT_MEASURES, Evaluation, evaluate
from micebench.evaluation.paired import PairedDifference, paired_difference

__all__ = ["DEFAULT_MEASURES", "Evaluation", "PairedDifference", "evaluate", "paired_difference"]
