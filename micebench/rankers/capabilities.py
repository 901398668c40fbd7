"""Optional capabilities of a model ranker; the commands work through them only.

- `Trainable`: differentiable scoring of (query, document) batches and saving as a checkpoint folder (`train`);
- `StoreBacked`: encoding documents into a document store and scoring from it (`precompute`, `run --precomputed`);
- `Benchmarkable`: one timed call on synthetic token batches of given lengths, with its FLOP count (`latency`).

Each is a `ModelRanker`, so what a capability uses of the ranker (device, dtype, batch size, tokenizer) is typed.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from micebench.errors import MicebenchError
from micebench.rankers.memory import oom_backoff
from micebench.rankers.model import ModelRanker


class Trainable(ModelRanker):
    """A ranker that `micebench train` can fine-tune: differentiable pair scores and a checkpoint folder."""

    @abstractmethod
    def trainable_module(self) -> Any:
        """The torch module whose parameters the optimiser updates (and whose state resume restores)."""

    @abstractmethod
    def score_pairs(self, queries: list[str], docs: list[str]) -> Any:
        """A differentiable (N,) tensor of scores for the pairs (queries[i], docs[i])."""

    @abstractmethod
    def save_checkpoint(self, folder: Path) -> None:
        """Write a checkpoint folder that `load_ranker(self.name, checkpoint=folder)` loads back."""


class StoreBacked(ModelRanker):
    """A ranker whose document side can be computed once, stored by doc id, and scored from the store."""

    #: the `kind` written in the store manifest
    store_kind: ClassVar[str]
    #: store modes, the default first
    store_modes: ClassVar[tuple[str, ...]]
    #: the opened store (`options.precomputed`), or None to score from texts
    store: Any = None

    @classmethod
    def reads_text(cls, options: dict[str, Any]) -> bool:
        return not options.get("precomputed")

    @classmethod
    def store_mode(cls, mode: str | None) -> str:
        """`mode`, or the family's default when None; a mode this family cannot store is one line."""
        if mode is None:
            return cls.store_modes[0]
        if mode not in cls.store_modes:
            raise MicebenchError(f"unknown store mode {mode!r} for {cls.name} (use {' or '.join(cls.store_modes)})")
        return mode

    def check_store_mode(self, mode: str) -> None:
        """Refuse a mode this ranker cannot store, in one line."""
        self.store_mode(mode)

    @abstractmethod
    def store_fields(self, mode: str) -> tuple[list[str], str]:
        """The tensor fields a store of this mode holds, and the store kind."""

    @abstractmethod
    def store_fingerprint(self, mode: str) -> str:
        """Identifies the weights a store was built with (the same whatever dtype the ranker runs in)."""

    @abstractmethod
    def store_encode(self, texts: list[str], mode: str) -> tuple[dict[str, Any], Any]:
        """Padded (B, L, dim) tensors per field for a batch of documents, and the (B, L) mask of stored tokens;
        optionally also their (B, L) token ids under `micebench.store.codecs.TOKEN_IDS` (what a `--token-means`
        codec needs)."""

    @abstractmethod
    def encode_stored_query(self, query: str) -> Any:
        """What `score_gathered` needs of a query, computed once per query (MICE's layer-k states, ColBERT's
        embeddings)."""

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
        from micebench.store.manifest import read_manifest
        from micebench.store.reader import DocumentStore

        mode = read_manifest(folder).get("mode")
        if mode not in self.store_modes:
            raise MicebenchError(f"store {folder} has mode {mode!r}; {self.name} uses {' or '.join(self.store_modes)}")
        try:
            self.store = DocumentStore(
                folder,
                self.store_kind,
                self.store_fingerprint(mode),
                mode,
                self.device,
                self.dtype,
            )
        except (OSError, KeyError, ValueError, TypeError, AttributeError) as error:
            reason = f"{type(error).__name__}: {' '.join(str(error).split())}"
            raise MicebenchError(f"damaged document store {folder}: {reason}") from None

    def score_candidates(self, candidates: pd.DataFrame) -> np.ndarray:
        """With a store open, score by doc id through `score_stored`; otherwise from texts."""
        if self.store is None:
            return super().score_candidates(candidates)
        docnos = candidates["docno"]
        return self.scores_by_query(
            candidates, lambda query, rows: self.score_stored(query, docnos.take(rows).tolist()), ", stored"
        )

    def store_facts(self) -> dict[str, Any]:
        """The store part of `describe()`."""
        if self.store is None:
            return {}
        from micebench.store.codecs import store_label

        manifest = self.store.manifest
        keys = ("mode", "dtype", "fingerprint", "num_docs", "num_tokens", "bytes_per_doc")
        facts = {k: manifest.get(k) for k in keys} | {"codec": store_label(manifest)}
        if manifest.get("num_tokens"):
            facts["bytes_per_token"] = manifest.get("bytes", 0) / manifest["num_tokens"]
        return {"store": {**facts, "path": str(self.store.folder)}}


class Benchmarkable(ModelRanker):
    """A ranker that `micebench latency` can time on synthetic token batches."""

    #: latency modes (what is precomputed), the default first
    bench_modes: ClassVar[tuple[str, ...]] = ("none",)
    #: other names accepted for a mode (e.g. ColBERT's `states` means its precomputed embeddings)
    bench_mode_aliases: ClassVar[dict[str, str]] = {}

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
