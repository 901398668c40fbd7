"""micebench: benchmark neural re-rankers (cross-encoders, late interaction, MICE): effectiveness, latency.

Public API::

    from micebench import load_ranker, load_dataset, evaluate
    ranker = load_ranker("ce", checkpoint="cross-encoder/ms-marco-MiniLM-L12-v2")
    scores = ranker.score("what is wifi", ["Wi-Fi is a wireless LAN technology.", "Goldfish grow."])
"""

from micebench.data import Dataset, load_dataset
from micebench.errors import MicebenchError
from micebench.evaluation import evaluate
from micebench.rankers.base import Ranker, available_rankers, load_ranker, register_ranker

__version__ = "0.1.0"
__all__ = [
    "Dataset",
    "MicebenchError",
    "Ranker",
    "available_rankers",
    "evaluate",
    "load_dataset",
    "load_ranker",
    "register_ranker",
]
