"""The public face of `micebench.rankers`: the contract, the capabilities and the registry, re-exported.

They live in `rankers.contract` (what every ranker is), `rankers.model` (the base of rankers with weights),
`rankers.capabilities` (Trainable, StoreBacked, Benchmarkable) and `rankers.registry` (model names).
"""

from __future__ import annotations

from micebench.rankers.capabilities import Benchmarkable as Benchmarkable
from micebench.rankers.capabilities import StoreBacked as StoreBacked
from micebench.rankers.capabilities import Trainable as Trainable
from micebench.rankers.contract import CANDIDATE_COLUMNS as CANDIDATE_COLUMNS
from micebench.rankers.contract import ModelOptions as ModelOptions
from micebench.rankers.contract import Ranker as Ranker
from micebench.rankers.contract import RankerOptions as RankerOptions
from micebench.rankers.contract import checked_scores as checked_scores
from micebench.rankers.contract import with_ranks as with_ranks
from micebench.rankers.model import ModelRanker as ModelRanker
from micebench.rankers.registry import _DESCRIPTIONS as _DESCRIPTIONS
from micebench.rankers.registry import _PATTERNS as _PATTERNS
from micebench.rankers.registry import _REGISTRY as _REGISTRY
from micebench.rankers.registry import _load_builtins as _load_builtins
from micebench.rankers.registry import accepts_option as accepts_option
from micebench.rankers.registry import available_rankers as available_rankers
from micebench.rankers.registry import declared_options as declared_options
from micebench.rankers.registry import is_registered as is_registered
from micebench.rankers.registry import load_ranker as load_ranker
from micebench.rankers.registry import option_names as option_names
from micebench.rankers.registry import ranker_options as ranker_options
from micebench.rankers.registry import rankers_with as rankers_with
from micebench.rankers.registry import register_ranker as register_ranker
from micebench.rankers.registry import register_ranker_pattern as register_ranker_pattern
from micebench.rankers.registry import resolve_ranker as resolve_ranker
