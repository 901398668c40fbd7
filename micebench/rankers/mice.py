"""`mice` / `mice-l<k>+<m>`: the MICE ranker, on the fly or from a precomputed document store."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from micebench.errors import MicebenchError
from micebench.rankers.base import Ranker, register_ranker, register_ranker_pattern
from micebench.rankers.batching import length_sorted_batches
from micebench.rankers.memory import oom_backoff
from micebench.rankers.models import DEFAULT_CROSS_ENCODER, count_parameters, logits_to_scores, pick_device, pick_dtype

_SHAPE = re.compile(r"^mice-l(\d+)\+(\d+)$")
STORE_KIND = "mice"
STORE_MODES = ("states", "kv")


@register_ranker(
    "mice", "MICE: bottom layers apart, top layers with query cross-attention (--merge-layer, --top-layers)"
)
class MiceRanker(Ranker):
    """Minimal Interaction Cross-Encoder; the query's bottom layers run once per query."""

    name = "mice"
    default_store_mode = "states"

    def __init__(
        self,
        checkpoint: str | None = None,
        merge_layer: int | None = None,
        top_layers: int | None = None,
        device: str = "auto",
        batch_size: int = 128,
        dtype: str = "fp32",
        precomputed: str | None = None,
        untrained: bool = False,
        top_self_attention: bool = True,
        query_attends_cls: bool = False,
        cls_attends_document: bool = False,
        random_top_layers: bool = False,
        max_length: int = 512,
        **_: Any,
    ):
        import torch

        from micebench.models.mice import MiceConfig
        from micebench.models.mice_io import convert_cross_encoder, is_mice_checkpoint, load_mice

        self._torch = torch
        if is_mice_checkpoint(checkpoint):
            self.model, self.tokenizer = load_mice(checkpoint)
            shape = (self.model.mice.merge_layer, self.model.mice.top_layers)
            asked = (merge_layer or shape[0], top_layers or shape[1])
            if asked != shape:
                raise MicebenchError(
                    f"checkpoint {checkpoint!r} is mice-l{shape[0]}+{shape[1]}, not mice-l{asked[0]}+{asked[1]}"
                )
        else:
            if merge_layer is None or top_layers is None:
                raise MicebenchError(
                    "a MICE built from a cross-encoder needs --merge-layer and --top-layers (or mice-l<k>+<m>)"
                )
            config = MiceConfig(
                merge_layer=int(merge_layer),
                top_layers=int(top_layers),
                top_self_attention=top_self_attention,
                query_attends_cls=query_attends_cls,
                cls_attends_document=cls_attends_document,
                random_top_layers=random_top_layers,
                doc_max_length=max_length,
            )
            self.model, self.tokenizer = convert_cross_encoder(checkpoint or DEFAULT_CROSS_ENCODER, config)
        self.checkpoint = checkpoint or DEFAULT_CROSS_ENCODER
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype)
        self.model.to(self.device, dtype=self.dtype).eval()
        self.batch_size = int(batch_size)
        self.untrained = untrained
        self.store = None
        if precomputed:
            from micebench.store.document_store import DocumentStore, read_manifest

            mode = read_manifest(precomputed).get("mode")
            if mode not in STORE_MODES:
                raise MicebenchError(f"store {precomputed} has mode {mode!r}; MICE uses states or kv")
            self.store = DocumentStore(
                precomputed, STORE_KIND, self.model.fingerprint(mode), mode, self.device, self.dtype
            )
        self.needs_text = self.store is None

    @property
    def mice(self) -> Any:
        return self.model.mice

    @property
    def label(self) -> str:
        return self.mice.label()

    def check_ready_for_effectiveness(self) -> None:
        if not self.mice.trained and not self.untrained:
            raise MicebenchError(
                f"{self.mice.label()} is untrained (converted from {self.mice.source_checkpoint}) and ranks poorly: "
                "fine-tune it with `micebench train`, or pass --untrained to run it anyway"
            )

    # -- encoding -----------------------------------------------------------------------------------------------
    def _tokenize(self, texts: list[str], max_length: int) -> Any:
        return self.tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt").to(
            self.device
        )

    def encode_query(self, query: str) -> tuple[Any, Any]:
        """Layer-k states of `[CLS] query [SEP]` and its mask (computed once per query)."""
        if not query.strip():
            raise MicebenchError("empty query text")
        batch = self._tokenize([query], self.mice.query_max_length)
        return self.model.encode_bottom(batch["input_ids"], batch["attention_mask"]), batch["attention_mask"]

    def encode_documents(self, texts: list[str]) -> tuple[Any, Any]:
        """Layer-k states of `[CLS] document [SEP]` for a batch, and the attention mask."""
        batch = self._tokenize(texts, self.mice.doc_max_length)
        return self.model.encode_bottom(batch["input_ids"], batch["attention_mask"]), batch["attention_mask"]

    def _score(self, q: tuple[Any, Any], d_mask: Any, **doc: Any) -> np.ndarray:
        n = d_mask.shape[0]
        index = self._torch.zeros(n, dtype=self._torch.long, device=self.device)
        logits = self.model.score_from_states(q[0], q[1], d_mask, index, **doc).float()
        return logits_to_scores(logits).cpu().numpy()

    @oom_backoff
    def score(self, query: str, docs: list[str]) -> np.ndarray:
        scores = np.empty(len(docs), dtype=np.float64)
        with self._torch.inference_mode():
            q = self.encode_query(query)
            for idx in length_sorted_batches(docs, self.batch_size):
                states, mask = self.encode_documents([docs[i] for i in idx])
                scores[idx] = self._score(q, mask, d_states=states)
        return scores

    @oom_backoff
    def score_stored(self, query: str, docnos: list[str]) -> np.ndarray:
        """Scores from the precomputed store: no document text, no bottom layers for documents."""
        torch = self._torch
        rows = self.store.positions(docnos)
        scores = np.empty(len(docnos), dtype=np.float64)
        with torch.inference_mode():
            q = self.encode_query(query)
            for start in range(0, len(docnos), self.batch_size):
                chunk = rows[start : start + self.batch_size]
                scores[start : start + len(chunk)] = self.score_rows(q, self.store, self.store.manifest["mode"], chunk)
        return scores

    def score_rows(self, q: tuple[Any, Any], store: Any, mode: str, rows: Any) -> np.ndarray:
        """Score one query's states against store rows: one padded gather, then the top layers."""
        tensors, mask = store.gather(rows)
        if mode == "kv":
            heads = self.model.top[0].num_heads
            kv = [
                (self._split(tensors[f"k{j}"], heads), self._split(tensors[f"v{j}"], heads))
                for j in range(self.mice.top_layers)
            ]
            return self._score(q, mask, d_kv=kv)
        return self._score(q, mask, d_states=tensors["states"])

    @staticmethod
    def _split(x: Any, heads: int) -> Any:
        b, length, dim = x.shape
        return x.view(b, length, heads, dim // heads).transpose(1, 2)

    # -- document store -------------------------------------------------------------------------------------------
    def store_fields(self, mode: str) -> tuple[list[str], str]:
        """Tensors a store of this mode holds: layer-k states, or every top layer's cross keys and values."""
        if mode not in STORE_MODES:
            raise MicebenchError(f"unknown store mode {mode!r} for MICE (use states or kv)")
        if mode == "states":
            return ["states"], STORE_KIND
        return [f"{kv}{j}" for j in range(self.mice.top_layers) for kv in ("k", "v")], STORE_KIND

    def store_fingerprint(self, mode: str) -> str:
        return self.model.fingerprint(mode)

    def store_encode(self, texts: list[str], mode: str) -> tuple[dict[str, Any], Any]:
        batch = self._tokenize(texts, self.mice.doc_max_length)
        return self.store_encode_ids(batch["input_ids"], batch["attention_mask"], mode)

    def store_encode_ids(self, input_ids: Any, mask: Any, mode: str) -> tuple[dict[str, Any], Any]:
        """Store tensors for tokenised documents: layer-k states, or each top layer's keys and values."""
        states = self.model.encode_bottom(input_ids, mask)
        if mode == "states":
            return {"states": states}, mask
        out = {}
        for j, (k, v) in enumerate(self.model.document_kv(states)):
            out[f"k{j}"] = k.transpose(1, 2).reshape(states.shape)
            out[f"v{j}"] = v.transpose(1, 2).reshape(states.shape)
        return out, mask

    def describe(self) -> dict[str, Any]:
        from dataclasses import asdict

        info = {
            "ranker": self.name,
            "checkpoint": self.checkpoint,
            "mice": asdict(self.mice),
            "parameters": count_parameters(self.model),
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "attention": "sdpa",
            "batch_size": self.batch_size,
            "oom_backoffs": getattr(self, "oom_backoffs", 0),
        }
        if self.store is not None:
            info["store"] = {
                k: self.store.manifest[k] for k in ("mode", "dtype", "fingerprint", "num_docs", "bytes_per_doc")
            }
            info["store"]["path"] = str(self.store.folder)
        return info


def _mice_factory(name: str, **options: Any) -> MiceRanker:
    k, m = (int(x) for x in _SHAPE.match(name).groups())
    for key, value in (("merge_layer", k), ("top_layers", m)):
        if options.get(key) not in (None, value):
            raise MicebenchError(f"--{key.replace('_', '-')} {options[key]} contradicts model name {name!r}")
        options[key] = value
    return MiceRanker(**options)


register_ranker_pattern(
    lambda name: bool(_SHAPE.match(name)),
    _mice_factory,
    {"mice-l<k>+<m>": "MICE with merge layer k and m top layers (e.g. mice-l4+3)"},
)
