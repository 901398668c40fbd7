"""The ranker contract and the registry that maps model names to ranker classes."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from micebench.errors import MicebenchError, UnknownNameError
from micebench.progress import progress_bar

#: Columns of a candidates frame (PyTerrier's names); `score` is the first-stage score on input.
CANDIDATE_COLUMNS = ("qid", "query", "docno", "text", "score")


class Ranker(ABC):
    """Scores documents for a query; higher is more relevant."""

    #: registry name of the ranker family
    name: ClassVar[str] = ""
    #: whether `rerank` needs document texts (False for rankers that only reuse first-stage scores)
    needs_text: ClassVar[bool] = True

    @abstractmethod
    def score(self, query: str, docs: list[str]) -> np.ndarray:
        """One float per document, in the order given."""

    def rerank(self, candidates: pd.DataFrame) -> pd.DataFrame:
        """Re-score a candidates frame (qid, query, docno, text); returns it with score and rank.

        Rankers with a precomputed document store (`self.store`) score by doc id through `score_stored`.
        """
        if getattr(self, "store", None) is not None:
            docnos = candidates["docno"]
            return self.rerank_by_query(
                candidates, lambda query, rows: self.score_stored(query, docnos.take(rows).tolist()), ", stored"
            )
        texts = candidates["text"]
        return self.rerank_by_query(candidates, lambda query, rows: self.score(query, texts.take(rows).tolist()))

    def rerank_by_query(
        self, candidates: pd.DataFrame, score_group: Callable[[str, np.ndarray], np.ndarray], note: str = ""
    ) -> pd.DataFrame:
        """Score each query's rows with `score_group(query, row_positions)`, with a progress bar."""
        scores = np.empty(len(candidates), dtype=np.float64)
        groups = candidates.groupby("qid", sort=False).indices
        with progress_bar(f"re-ranking ({self.name}{note})", total=len(groups), unit="queries") as bar:
            for rows in groups.values():
                scores[rows] = score_group(candidates["query"].iat[rows[0]], rows)
                bar.advance(1)
        return with_ranks(candidates, scores)

    def check_ready_for_effectiveness(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Raise when the ranker should not be evaluated as is (e.g. an untrained MICE)."""

    def describe(self) -> dict[str, Any]:
        """Facts for manifests and reports (parameters, dtype, device, checkpoint...)."""
        return {"ranker": self.name}

    @property
    def label(self) -> str:
        """Short name used for result folders."""
        return self.name


def with_ranks(candidates: pd.DataFrame, scores: np.ndarray) -> pd.DataFrame:
    """Attach scores and 1-based ranks (descending score, ties broken by docno)."""
    if len(scores) != len(candidates):
        raise MicebenchError(f"ranker returned {len(scores)} scores for {len(candidates)} documents")
    if not np.all(np.isfinite(scores)):
        raise MicebenchError("ranker produced non-finite scores (NaN or inf)")
    out = candidates.drop(columns=[c for c in ("score", "rank") if c in candidates]).assign(score=scores)
    out = out.sort_values(["qid", "score", "docno"], ascending=[True, False, True], kind="stable")
    out["rank"] = out.groupby("qid", sort=False).cumcount() + 1
    return out.reset_index(drop=True)


# -- registry -----------------------------------------------------------------------------------------------

_REGISTRY: dict[str, Callable[..., Ranker]] = {}
_DESCRIPTIONS: dict[str, str] = {}
_PATTERNS: list[tuple[Callable[[str], bool], Callable[..., Ranker]]] = []
#: modules holding the built-in rankers; imported on first lookup so `import micebench` stays light
_BUILTIN_MODULES = (
    "micebench.rankers.first_stage",
    "micebench.rankers.cross_encoder",
    "micebench.rankers.dense",
    "micebench.rankers.masked",
    "micebench.rankers.mice",
    "micebench.rankers.colbert",
)


def register_ranker(name: str, description: str = "") -> Callable[[type[Ranker]], type[Ranker]]:
    """Class decorator: make a ranker available to `load_ranker` and `--model` under `name`."""

    def decorate(cls: type[Ranker]) -> type[Ranker]:
        _REGISTRY[name] = cls
        _DESCRIPTIONS[name] = description or (cls.__doc__ or "").strip().splitlines()[0]
        return cls

    return decorate


def register_ranker_pattern(
    matches: Callable[[str], bool], factory: Callable[..., Ranker], descriptions: dict[str, str]
) -> None:
    """Register a family of names (e.g. ``mask3-l<k>``): `factory(name, **options)` builds the ranker."""
    _PATTERNS.append((matches, factory))
    _DESCRIPTIONS.update(descriptions)


def is_registered(spec: str) -> bool:
    """True when `spec` names a registered ranker or matches a registered name family."""
    _load_builtins()
    return spec in _REGISTRY or any(matches(spec) for matches, _ in _PATTERNS)


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def available_rankers() -> dict[str, str]:
    """Registered model names with a one-line description."""
    _load_builtins()
    return dict(sorted(_DESCRIPTIONS.items()))


def load_ranker(spec: str, **options: Any) -> Ranker:
    """Build a ranker from its registered name, e.g. ``load_ranker("ce", checkpoint="...", device="cpu")``."""
    _load_builtins()
    factory = _REGISTRY.get(spec)
    if factory is None:
        pattern = next((f for matches, f in _PATTERNS if matches(spec)), None)
        if pattern is None:
            known = ", ".join(sorted(_DESCRIPTIONS))
            raise UnknownNameError(f"unknown model {spec!r} (available: {known})")
        factory = lambda **kw: pattern(spec, **kw)  # noqa: E731
    options = {k: v for k, v in options.items() if v is not None}
    try:
        return factory(**options)
    except TypeError as err:
        raise MicebenchError(f"model {spec!r}: {err}") from None
