"""Facts of a collection that decide how it is evaluated; the dataset registry holds them per dataset."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetFacts:
    """How a collection is evaluated: facts of the collection, not of the code that reads it."""

    #: lowest grade that binary measures (RR, MAP, recall) count as relevant: 2 for TREC DL passage judgements
    relevance_level: int = 1
    #: the measure training validates on (the collection's official measure)
    validation_measure: str = "nDCG@10"
