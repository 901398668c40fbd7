"""The ranker contract: what every ranker is (`Ranker`), the options it declares, and the score checks.

Every ranker scores (`score`; `score_candidates` for a whole frame, which `rerank` ranks by) and describes itself.
What a ranker can do beyond that is declared by the capability classes it inherits (`rankers.capabilities`); each
ranker declares its options as a dataclass (`Options`), which `rankers.registry.load_ranker` checks.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from micebench.errors import MicebenchError
from micebench.progress import progress_bar

#: Columns of a candidates frame (PyTerrier's names); `score` is the first-stage score on input.
CANDIDATE_COLUMNS = ("qid", "query", "docno", "text", "score")


def option(default: Any, help: str) -> Any:
    """A declared option: its default and its help text ("what (unit, range)"), which `micebench models NAME`
    shows and from which command-line options can be generated."""
    return dataclasses.field(default=default, metadata={"help": help})


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

    checkpoint: str | None = option(None, "weights: a local folder, short name or hub id")
    device: str = option("auto", "auto | cpu | cuda | cuda:N | mps (auto: CUDA, then MPS, then CPU)")
    dtype: str = option(
        "fp32",
        "fp32 | fp16 | bf16 | int8 | onnx-fp32 | onnx-int8: the model's compute precision (int8: torchao dynamic "
        "int8 Linear layers; onnx-*: ce on ONNX Runtime, CPU)",
    )

    MIN_LENGTHS: ClassVar[dict[str, tuple[int, str]]] = {"max_length": (3, "[CLS] text [SEP]")}

    def __post_init__(self) -> None:
        super().__post_init__()
        from micebench.models.hf import DTYPES, pick_device
        from micebench.models.precision import tf32_requested

        tf32_requested()  # a bad MICEBENCH_TF32 is refused with the options, before any checkpoint is read
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
        """Whether a run with these options needs the candidates' texts (known before the model loads): the one
        way to ask it (False for rankers that only reuse first-stage scores, or that score from a store)."""
        return True

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
