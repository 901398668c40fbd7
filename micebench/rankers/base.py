"""The ranker contract, its optional capabilities, declared options, and the registry of model names.

Every ranker scores (`score`; `score_candidates` for a whole frame, which `rerank` ranks by) and describes itself.
What a ranker can do beyond that is declared by the capability classes it inherits, and the commands work through
them only:

- `Trainable`: differentiable scoring of (query, document) batches and saving as a checkpoint folder (`train`);
- `StoreBacked`: encoding documents into a document store and scoring from it (`precompute`, `run --precomputed`);
- `Benchmarkable`: one timed call on synthetic token batches of given lengths, with its FLOP count (`latency`).

Each ranker declares its options as a dataclass (`Options`); `load_ranker` refuses an option the ranker does not
declare, naming the option and the ranker, before any model loads.
"""

from __future__ import annotations

import dataclasses
import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from micebench.errors import MicebenchError, UnknownNameError
from micebench.fieldtypes import field_types, type_problem
from micebench.progress import progress_bar
from micebench.rankers.memory import oom_backoff

#: Columns of a candidates frame (PyTerrier's names); `score` is the first-stage score on input.
CANDIDATE_COLUMNS = ("qid", "query", "docno", "text", "score")


@dataclasses.dataclass
class RankerOptions:
    """Options of a ranker family; subclasses declare theirs as fields with defaults."""

    #: token lengths and the least each holds: the special tokens around one token of text (one of each text for
    #: a pair); anything shorter would score empty or truncated-away inputs
    MIN_LENGTHS: ClassVar[dict[str, tuple[int, str]]] = {}

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_length", "query_max_length", "dim", "query_length", "doc_length"):
            value = getattr(self, name, None)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise MicebenchError(f"--{name.replace('_', '-')} must be a positive whole number (got {value!r})")
        for name, (least, holds) in self.MIN_LENGTHS.items():
            value = getattr(self, name, None)
            if value is not None and value < least:
                raise MicebenchError(
                    f"--{name.replace('_', '-')} {value} cannot hold {holds}: use at least {least} tokens"
                )


@dataclasses.dataclass
class ModelOptions(RankerOptions):
    """Options every Hugging Face ranker takes: where the weights come from, device and dtype."""

    checkpoint: str | None = None
    device: str = "auto"
    dtype: str = "fp32"

    MIN_LENGTHS: ClassVar[dict[str, tuple[int, str]]] = {"max_length": (3, "[CLS] text [SEP]")}

    def __post_init__(self) -> None:
        super().__post_init__()
        from micebench.models.hf import DTYPES, pick_device

        if self.dtype not in DTYPES:
            raise MicebenchError(f"unknown dtype {self.dtype!r} (use {', '.join(DTYPES)})")
        if not isinstance(self.device, str) or not self.device.startswith("cuda"):  # CUDA: checked when it loads
            pick_device(self.device)


class Ranker(ABC):
    """Scores documents for a query; higher is more relevant."""

    #: registry name of the ranker family
    name: ClassVar[str] = ""
    #: the options this family takes (a dataclass); `load_ranker` checks given options against it
    Options: ClassVar[type[RankerOptions]] = RankerOptions
    #: whether `rerank` needs document texts (False for rankers that only reuse first-stage scores)
    needs_text: bool = True
    #: whether the ranker is the BM25 first stage itself (then the candidates must come from BM25)
    requires_bm25_first_stage: ClassVar[bool] = False
    #: whether `run` records durable per-chunk progress that `--resume` continues; False where scoring again costs
    #: less than recording (rankers that only reuse the first stage's scores)
    records_progress: ClassVar[bool] = True

    def __init__(self, options: RankerOptions | None = None):
        self.options = options if options is not None else self.Options()

    @classmethod
    def run_label(cls, spec: str, options: dict[str, Any]) -> str:
        """The result-folder label of `spec` run with the given options (before the checkpoint's name)."""
        return spec

    @classmethod
    def reads_text(cls, options: dict[str, Any]) -> bool:
        """Whether a run with these options needs the candidates' texts (known before the model loads)."""
        return bool(cls.needs_text)

    @abstractmethod
    def score(self, query: str, docs: list[str]) -> np.ndarray:
        """One float per document, in the order given."""

    def rerank(self, candidates: pd.DataFrame) -> pd.DataFrame:
        """Re-score a candidates frame (qid, query, docno, text); returns it with score and rank."""
        return with_ranks(candidates, self.score_candidates(candidates))

    def score_candidates(self, candidates: pd.DataFrame) -> np.ndarray:
        """One score per row of a candidates frame, in row order (what `rerank` ranks by and `run` records).

        Rankers override this, not `rerank`; the default scores each query's texts with `score`."""
        texts = candidates["text"]
        return self.scores_by_query(candidates, lambda query, rows: self.score(query, texts.take(rows).tolist()))

    def scores_by_query(
        self, candidates: pd.DataFrame, score_group: Callable[[str, np.ndarray], np.ndarray], note: str = ""
    ) -> np.ndarray:
        """Score each query's rows with `score_group(query, row_positions)`, with a progress bar; row order."""
        scores = np.empty(len(candidates), dtype=np.float64)
        groups = candidates.groupby("qid", sort=False).indices
        with progress_bar(f"re-ranking ({self.name}{note})", total=len(groups), unit="queries") as bar:
            for rows in groups.values():
                scores[rows] = score_group(candidates["query"].iat[rows[0]], rows)
                bar.advance(1)
        return checked_scores(scores, len(candidates))

    def score_frame(self, pairs: pd.DataFrame, dataset: Any = None) -> np.ndarray:
        """Scores for the rows of a pairs frame (qid, query, docno, text), in row order (a teacher's scores).

        `dataset` is the collection the pairs come from, for rankers that need more than the pairs (BM25's
        corpus statistics)."""
        return self.score_candidates(pairs)

    def prepare(self, candidates: pd.DataFrame) -> None:  # noqa: B027 - optional hook, no-op by default
        """Whole-frame work done once before a run is scored in chunks (e.g. encoding every document once)."""

    def check_ready_for_effectiveness(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Raise when the ranker should not be evaluated as is (e.g. an untrained MICE)."""

    @classmethod
    def check_before_load(cls, options: RankerOptions) -> None:  # noqa: B027 - optional hook, no-op by default
        """Raise, before any weights are fetched, when an effectiveness run with these options is certain to be
        refused after loading (e.g. a MICE converted on the fly, hence untrained)."""
        return None

    def effective_options(self) -> dict[str, Any]:
        """The options that took effect, defaults included (what manifests record)."""
        return dataclasses.asdict(self.options)

    def describe(self) -> dict[str, Any]:
        """Facts for manifests and reports (parameters, dtype, device, checkpoint...)."""
        return {"ranker": self.name}

    @property
    def label(self) -> str:
        """Short name used for result folders."""
        return self.name


class Trainable(ABC):
    """A ranker that `micebench train` can fine-tune: differentiable pair scores and a checkpoint folder."""

    device: Any

    @abstractmethod
    def trainable_module(self) -> Any:
        """The torch module whose parameters the optimiser updates (and whose state resume restores)."""

    @abstractmethod
    def score_pairs(self, queries: list[str], docs: list[str]) -> Any:
        """A differentiable (N,) tensor of scores for the pairs (queries[i], docs[i])."""

    @abstractmethod
    def save_checkpoint(self, folder: Path) -> None:
        """Write a checkpoint folder that `load_ranker(self.name, checkpoint=folder)` loads back."""


class StoreBacked(ABC):
    """A ranker whose document side can be computed once, stored by doc id, and scored from the store."""

    #: the `kind` written in the store manifest
    store_kind: ClassVar[str]
    #: store modes, the default first
    store_modes: ClassVar[tuple[str, ...]]
    #: the opened store (`options.precomputed`), or None to score from texts
    store: Any = None
    batch_size: int
    device: Any

    @property
    def default_store_mode(self) -> str:
        return self.store_modes[0]

    @property
    def needs_text(self) -> bool:  # type: ignore[override]
        return self.store is None

    @classmethod
    def reads_text(cls, options: dict[str, Any]) -> bool:
        return not options.get("precomputed")

    def check_store_mode(self, mode: str) -> None:
        """Refuse a mode this ranker cannot store, in one line."""
        if mode not in self.store_modes:
            raise MicebenchError(
                f"unknown store mode {mode!r} for {self.name} (use {' or '.join(self.store_modes)})"  # type: ignore[attr-defined]
            )

    @abstractmethod
    def store_fields(self, mode: str) -> tuple[list[str], str]:
        """The tensor fields a store of this mode holds, and the store kind."""

    @abstractmethod
    def store_fingerprint(self, mode: str) -> str:
        """Identifies the weights a store was built with (the same whatever dtype the ranker runs in)."""

    @abstractmethod
    def store_encode(self, texts: list[str], mode: str) -> tuple[dict[str, Any], Any]:
        """Padded (B, L, dim) tensors per field for a batch of documents, and the (B, L) mask of stored tokens."""

    def encode_stored_query(self, query: str) -> Any:
        """What `score_gathered` needs of a query, computed once per query (by default the ranker's own
        `encode_query`: MICE's layer-k states, ColBERT's embeddings)."""
        return self.encode_query(query)  # type: ignore[attr-defined]

    @abstractmethod
    def score_gathered(self, query: Any, tensors: dict[str, Any], mask: Any, padded: bool) -> Any:
        """Scores (a 1-d tensor, left on the device) of one batch gathered from the store: (B, L, dim) tensors per
        field and their (B, L) mask; `padded` says whether the batch's documents differ in length."""

    @oom_backoff
    def score_stored(self, query: str, docnos: list[str]) -> np.ndarray:
        """Scores of stored documents for a query, without their text: the query is encoded once, then documents
        are gathered `batch_size` at a time and scored by `score_gathered`, with one host copy at the end. On a
        GPU, batches take documents longest first (little padding); on the CPU in the order given. On CUDA out of
        memory the batch is halved and the call repeated."""
        import torch

        from micebench.models import batching
        from micebench.models.hf import scores_to_host

        positions = self.store.positions(docnos)
        lengths = self.store.token_lengths(positions)

        def gathered(query_side: Any, idx: np.ndarray) -> Any:
            tensors, mask = self.store.gather(positions[torch.from_numpy(idx)])
            return self.score_gathered(query_side, tensors, mask, bool(lengths[idx].min() != lengths[idx].max()))

        with torch.inference_mode():
            query_side = self.encode_stored_query(query)
            batches = batching.stored_batches(lengths, self.batch_size, self.device.type != "cpu")
            return scores_to_host(((idx, gathered(query_side, idx)) for idx in batches), len(docnos))

    def open_store(self, folder: str | None) -> None:
        """Open the store at `folder` (checked against this model's fingerprint and modes); None opens nothing.

        A store whose manifest or index cannot be read is one line naming it."""
        if not folder:
            self.store = None
            return
        from micebench.store.document_store import DocumentStore, read_manifest

        mode = read_manifest(folder).get("mode")
        if mode not in self.store_modes:
            raise MicebenchError(
                f"store {folder} has mode {mode!r}; {self.name} uses {' or '.join(self.store_modes)}"  # type: ignore[attr-defined]
            )
        try:
            self.store = DocumentStore(
                folder,
                self.store_kind,
                self.store_fingerprint(mode),
                mode,
                self.device,  # type: ignore[attr-defined]
                self.dtype,  # type: ignore[attr-defined]
            )
        except (OSError, KeyError, ValueError, TypeError, AttributeError) as error:
            reason = f"{type(error).__name__}: {' '.join(str(error).split())}"
            raise MicebenchError(f"damaged document store {folder}: {reason}") from None

    def score_candidates(self, candidates: pd.DataFrame) -> np.ndarray:
        """With a store open, score by doc id through `score_stored`; otherwise from texts."""
        if self.store is None:
            return super().score_candidates(candidates)  # type: ignore[misc]
        docnos = candidates["docno"]
        return self.scores_by_query(  # type: ignore[attr-defined]
            candidates, lambda query, rows: self.score_stored(query, docnos.take(rows).tolist()), ", stored"
        )

    def store_facts(self) -> dict[str, Any]:
        """The store part of `describe()`."""
        if self.store is None:
            return {}
        keys = ("mode", "dtype", "fingerprint", "num_docs", "bytes_per_doc")
        return {"store": {**{k: self.store.manifest.get(k) for k in keys}, "path": str(self.store.folder)}}


class Benchmarkable(ABC):
    """A ranker that `micebench latency` can time on synthetic token batches."""

    #: latency modes (what is precomputed), the default first
    bench_modes: ClassVar[tuple[str, ...]] = ("none",)
    #: other names accepted for a mode (e.g. ColBERT's `states` means its precomputed embeddings)
    bench_mode_aliases: ClassVar[dict[str, str]] = {}
    tokenizer: Any

    @classmethod
    def resolve_bench_mode(cls, name: str, mode: str | None, default: str) -> str:
        """The latency mode for `name[:mode]`: an explicit mode must exist; the run-wide default only if it does."""
        if mode:
            mode = cls.bench_mode_aliases.get(mode, mode)
            if mode not in cls.bench_modes:
                raise MicebenchError(f"{name}:{mode}: {name} can be timed with {', '.join(cls.bench_modes)}")
            return mode
        default = cls.bench_mode_aliases.get(default, default)
        return default if default in cls.bench_modes else cls.bench_modes[0]

    @abstractmethod
    def bench_call(self, query_ids: Any, doc_ids: Any, mode: str) -> Callable[[], Any]:
        """A zero-argument call that scores `doc_ids` (B, Ld) for `query_ids` (1, Lq) and returns host scores.

        Whatever `mode` precomputes (document states, embeddings) is done here, before the call, not in it.
        """

    @abstractmethod
    def bench_flops(self, query_len: int, doc_len: int, batch: int, mode: str) -> float:
        """Analytic FLOPs per document of one `bench_call`."""

    @abstractmethod
    def bench_modules(self, everything: bool = False) -> list[Any]:
        """The torch modules a timed call runs, to `compile()` in place for `latency --compile` (with
        `everything`, all the ranker's modules, whose parameters the latency table counts)."""

    def bench_tokenize(self, query: str, docs: list[str], mode: str) -> Callable[[], Any] | None:
        """A zero-argument call that tokenises what `mode` tokenises at query time (None: nothing)."""
        return None

    def bench_facts(self) -> dict[str, Any]:
        """Extra columns for the latency table (attention implementation, sequence length...)."""
        return {}


def checked_scores(scores: np.ndarray, rows: int) -> np.ndarray:
    """`scores` as float64 when there is one finite score per row; one line naming the fault otherwise."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (rows,):
        raise MicebenchError(f"ranker returned {scores.size} scores for {rows} documents")
    if not np.all(np.isfinite(scores)):
        raise MicebenchError("ranker produced non-finite scores (NaN or inf)")
    return scores


def with_ranks(candidates: pd.DataFrame, scores: np.ndarray) -> pd.DataFrame:
    """Attach scores and 1-based ranks (descending score, ties broken by docno)."""
    scores = checked_scores(scores, len(candidates))
    out = candidates.drop(columns=[c for c in ("score", "rank") if c in candidates]).assign(score=scores)
    out = out.sort_values(["qid", "score", "docno"], ascending=[True, False, True], kind="stable")
    out["rank"] = out.groupby("qid", sort=False).cumcount() + 1
    return out.reset_index(drop=True)


# -- registry -----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Pattern:
    """A family of model names (e.g. ``mice-l<k>+<m>``): the class and the options a name fixes."""

    matches: Callable[[str], bool]
    cls: type[Ranker]
    fixed: Callable[[str], dict[str, Any]]


_REGISTRY: dict[str, type[Ranker]] = {}
_DESCRIPTIONS: dict[str, str] = {}
_PATTERNS: list[_Pattern] = []
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
    matches: Callable[[str], bool],
    cls: type[Ranker],
    fixed: Callable[[str], dict[str, Any]],
    descriptions: dict[str, str],
) -> None:
    """Register a family of names: `fixed(name)` gives the options the name sets (``mask2`` -> schedule mask2)."""
    _PATTERNS.append(_Pattern(matches, cls, fixed))
    _DESCRIPTIONS.update(descriptions)


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def resolve_ranker(spec: str) -> tuple[type[Ranker], dict[str, Any]]:
    """The ranker class of a model name and the options the name itself fixes; unknown names are one line."""
    _load_builtins()
    if spec in _REGISTRY:
        return _REGISTRY[spec], {}
    for pattern in _PATTERNS:
        if pattern.matches(spec):
            return pattern.cls, pattern.fixed(spec)
    known = ", ".join(sorted(_DESCRIPTIONS))
    raise UnknownNameError(f"unknown model {spec!r} (available: {known})")


def is_registered(spec: str) -> bool:
    """True when `spec` names a registered ranker or matches a registered name family."""
    try:
        resolve_ranker(spec)
    except UnknownNameError:
        return False
    return True


def available_rankers() -> dict[str, str]:
    """Registered model names with a one-line description."""
    _load_builtins()
    return dict(sorted(_DESCRIPTIONS.items()))


def rankers_with(capability: type) -> list[str]:
    """Registered names (families as registered) whose class has `capability` (Trainable, StoreBacked, ...)."""
    _load_builtins()
    names = [name for name, cls in _REGISTRY.items() if issubclass(cls, capability)]
    return sorted(names)


def option_names(spec: str) -> list[str]:
    """The options a model name takes (fields of its Options dataclass)."""
    cls, _ = resolve_ranker(spec)
    return [f.name for f in dataclasses.fields(cls.Options)]


def declared_options(spec: str, **settings: Any) -> dict[str, Any]:
    """The subset of `settings` that `spec` declares: for callers that pass shared settings (device, dtype,
    checkpoint...) to rankers of several kinds."""
    takes = set(option_names(spec))
    return {k: v for k, v in settings.items() if k in takes}


def accepts_option(spec: str, option: str) -> bool:
    """Whether `spec` declares `option` (callers that pass shared settings to several rankers ask first)."""
    return option in option_names(spec)


def ranker_options(spec: str, **given: Any) -> RankerOptions:
    """Check given options against the declaration of `spec` and build its Options (None means not given).

    An option the ranker does not take, or one that contradicts the model name, is refused in one line.
    """
    cls, fixed = resolve_ranker(spec)
    given = {k: v for k, v in given.items() if v is not None}
    declared = {f.name for f in dataclasses.fields(cls.Options)}
    for key in given:
        if key not in declared:
            takes = ", ".join(f"--{k.replace('_', '-')}" for k in sorted(declared)) or "no options"
            flag = f"--{key.replace('_', '-')}"
            raise MicebenchError(f"option {flag} does not apply to model {spec!r} (it takes {takes})")
    types = field_types(cls.Options)
    for key, value in given.items():
        problem = type_problem(value, types[key])
        if problem:
            raise MicebenchError(f"--{key.replace('_', '-')} {problem}")
    for key, value in fixed.items():
        if key in given and given[key] != value:
            raise MicebenchError(f"--{key.replace('_', '-')} {given[key]} contradicts model name {spec!r}")
    return cls.Options(**{**given, **fixed})


def load_ranker(spec: str, **options: Any) -> Ranker:
    """Build a ranker from its registered name, e.g. ``load_ranker("ce", checkpoint="...", device="cpu")``."""
    cls, _ = resolve_ranker(spec)
    return cls(ranker_options(spec, **options))
