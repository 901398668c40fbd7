"""The options every built-in ranker family declares, one dataclass per family.

They live apart from the rankers so that reading them loads no model code: `micebench`'s command line generates
its ranker flags (name, type, default, help) from these fields, and `micebench models NAME` lists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from micebench.errors import MicebenchError
from micebench.models.checkpoints import DEFAULT_CROSS_ENCODER
from micebench.rankers.contract import ModelOptions, RankerOptions, option
from micebench.schedules import Schedule, parse_schedule

#: the bi-encoder `dense` loads by default (all-MiniLM-L6-v2, installable offline)
DEFAULT_DENSE = "minilm-l6"


@dataclass
class CrossEncoderOptions(ModelOptions):
    """Options of `ce`."""

    checkpoint: str = option(DEFAULT_CROSS_ENCODER, "cross-encoder weights: a local folder, short name or hub id")
    batch_size: int = option(32, "documents per forward pass (>= 1; halved on CUDA out of memory)")
    max_length: int = option(
        512,
        "maximum tokens of a query-document pair (>= 5), truncated longest first; beyond the model's positions: capped",
    )
    attn_implementation: str = option("sdpa", "transformers attention: sdpa | eager (eager can return weights)")
    untrained: bool = option(False, "allow evaluating a checkpoint without a trained score head (a fresh one)")
    head_seed: int | None = option(
        None, "seed of a fresh score head, 0 to 2**32-1 (default: the run's or training's --seed; 0 in the API)"
    )

    MIN_LENGTHS: ClassVar[dict[str, tuple[int, str]]] = {"max_length": (5, "[CLS] query [SEP] document [SEP]")}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.head_seed is not None and not 0 <= self.head_seed <= 2**32 - 1:
            raise MicebenchError(f"head seed must be between 0 and 2**32 - 1 (got {self.head_seed})")


@dataclass
class MaskedOptions(CrossEncoderOptions):
    """Options of `masked-ce`: the cross-encoder's, plus the schedule (a preset, a file or compact rules)."""

    schedule: str | Schedule = option("none", "attention schedule: a preset, a TOML/YAML file or compact rules")

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.schedule, str):  # a bad preset, rule or file: refused before any model work
            parse_schedule(self.schedule)


@dataclass
class MiceOptions(ModelOptions):
    """Options of `mice`; the shape (default l4+3) and attention options apply when converting a cross-encoder
    (a MICE checkpoint carries its own). `max_length` is the document budget, `query_max_length` the query's."""

    checkpoint: str | None = option(
        None,
        f"a MICE checkpoint, or a cross-encoder or base model converted on the fly (default {DEFAULT_CROSS_ENCODER})",
    )
    merge_layer: int | None = option(None, "layer k where query and document meet (1 <= k < layers; default 4)")
    top_layers: int | None = option(None, "number m of top layers kept (>= 1, k + m <= layers; default 3)")
    batch_size: int = option(128, "documents per forward pass (>= 1; halved on CUDA out of memory)")
    precomputed: str | None = option(None, "document store folder built by `micebench precompute`")
    untrained: bool = option(False, "allow evaluating a MICE that was never fine-tuned")
    top_self_attention: bool = option(True, "keep query self-attention in the top layers (conversion)")
    query_attends_cls: bool = option(False, "let query tokens attend to cls in the top layers (conversion)")
    cls_attends_document: bool = option(False, "let cls cross-attend to the document (conversion)")
    random_top_layers: bool = option(False, "re-initialise the top layers instead of copying them (conversion)")
    max_length: int = option(512, "document token budget (>= 3; beyond the model's positions: capped)")
    query_max_length: int | None = option(None, "query token budget (>= 3; default: the model's)")

    MIN_LENGTHS: ClassVar[dict[str, tuple[int, str]]] = {
        "max_length": (3, "[CLS] document [SEP]"),
        "query_max_length": (3, "[CLS] query [SEP]"),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.merge_layer is not None and self.merge_layer < 1:  # the upper bounds need the model's depth
            raise MicebenchError(f"merge layer {self.merge_layer} is impossible (use 1 up to the model's layers - 1)")
        if self.top_layers is not None and self.top_layers < 1:
            raise MicebenchError(f"{self.top_layers} top layers are impossible (use 1 or more)")


@dataclass
class ColBERTOptions(ModelOptions):
    """Options of `colbert`; a ColBERTv2 or PyLate checkpoint's own query and document lengths take precedence."""

    checkpoint: str = option(
        "colbert-ir/colbertv2.0", "ColBERTv2, PyLate or BERT/ModernBERT weights (folder or hub id)"
    )
    batch_size: int = option(64, "documents per forward pass (>= 1; halved on CUDA out of memory)")
    dim: int = option(128, "projection size of a fresh projection (>= 1; a checkpoint's own wins)")
    query_length: int = option(32, "query tokens incl. [MASK] padding (>= 4; a checkpoint's own wins)")
    doc_length: int = option(180, "maximum document tokens (>= 4; a checkpoint's own wins)")
    precomputed: str | None = option(None, "document store folder built by `micebench precompute`")

    MIN_LENGTHS: ClassVar[dict[str, tuple[int, str]]] = {
        "query_length": (4, "[CLS] [Q] query [SEP]"),
        "doc_length": (4, "[CLS] [D] document [SEP]"),
    }


@dataclass
class DenseOptions(ModelOptions):
    """Options of `dense`; max_length and normalize default to the checkpoint's sentence-transformers config."""

    checkpoint: str = option(DEFAULT_DENSE, "bi-encoder weights: a local folder, short name or hub id")
    batch_size: int = option(64, "texts per forward pass (>= 1; halved on CUDA out of memory)")
    max_length: int | None = option(None, "maximum tokens per text (>= 3; default: the checkpoint's max_seq_length)")
    normalize: bool | None = option(None, "L2-normalise embeddings (default: as the checkpoint's modules say)")


#: each built-in family's options by its registered name (`tests/test_rankers.py` holds it to the registry)
BUILTIN_OPTIONS: dict[str, type[RankerOptions]] = {
    "first-stage": RankerOptions,
    "bm25": RankerOptions,
    "dense": DenseOptions,
    "ce": CrossEncoderOptions,
    "masked-ce": MaskedOptions,
    "mice": MiceOptions,
    "colbert": ColBERTOptions,
}
#: the built-in families each command works with (`tests/test_cli_options.py` holds them to the capabilities)
TRAINABLE = ("ce", "masked-ce", "mice", "colbert")
STORE_BACKED = ("mice", "colbert")
TIMED = ("ce", "masked-ce", "mice", "colbert")
