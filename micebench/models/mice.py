"""MICE-l<k>+<m>: Minimal Interaction Cross-Encoder built from a BERT or ModernBERT cross-encoder (arXiv 2602.16299).

- bottom layers 0..k-1 encode `[CLS] query [SEP]` and `[CLS] document [SEP]` separately with shared weights, so
  layer-k document states can be computed once and stored;
- m top layers, copied from layers k..k+m-1 (the layers above are dropped), update query tokens only: query
  self-attention (query tokens may not attend to `cls`), cross-attention from query tokens to the frozen layer-k
  document states (`cls` does not cross-attend: its state passes through), then the feed-forward block;
  cross-attention starts as a copy of the layer's self-attention;
- score = the cross-encoder's head on the query stream (BERT: pooler + classifier on `cls`; ModernBERT: final
  norm, then `cls` or mean pooling as the checkpoint's config says, prediction head and classifier).

`mice_io.build_mice` picks the backbone from the source model's config; the BERT and ModernBERT variants live in
`mice_bert.py` and `mice_modernbert.py` and share the wiring here.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from micebench.errors import MicebenchError
from micebench.models.hf import weight_fingerprint
from micebench.models.masking import encoder_layers


@dataclass
class MiceConfig:
    """The MICE shape and options; saved in a checkpoint's config.json under "mice"."""

    merge_layer: int
    top_layers: int
    top_self_attention: bool = True  # the paper: removing it makes ranking collapse
    query_attends_cls: bool = False  # in top self-attention
    cls_attends_document: bool = False  # in top cross-attention
    random_top_layers: bool = False  # re-initialise the top layers instead of copying them
    query_max_length: int = 512  # the cross-encoder's budget: a query is read whole up to the model's maximum
    doc_max_length: int = 512
    trained: bool = False  # set by training; untrained MICE is refused for effectiveness runs
    source_num_layers: int | None = None
    source_checkpoint: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MiceConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def label(self) -> str:
        return f"mice-l{self.merge_layer}+{self.top_layers}"


def validate_shape(merge_layer: int, top_layers: int, num_layers: int) -> None:
    """Merge layer in 1..depth-1 and top layers within the remaining depth, else a one-line error."""
    if not 1 <= merge_layer < num_layers:
        raise MicebenchError(
            f"merge layer {merge_layer} is impossible for a {num_layers}-layer model (use 1..{num_layers - 1})"
        )
    if not 1 <= top_layers <= num_layers - merge_layer:
        raise MicebenchError(
            f"{top_layers} top layers do not fit above merge layer {merge_layer} of a {num_layers}-layer model "
            f"(at most {num_layers - merge_layer})"
        )


def call_layer(layer: nn.Module, hidden: torch.Tensor, mask: Any, **kwargs: Any) -> torch.Tensor:
    """Run a transformers encoder layer through its public forward; returns the hidden states."""
    out = layer(hidden, attention_mask=mask, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def padding_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, L) 1/0 -> additive (B, 1, 1, L) mask: 0 where attended, dtype minimum on padding."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class MiceModel(nn.Module):
    """The MICE network, built from a sequence-classification model whose modules it reuses.

    Subclasses supply the backbone-specific parts: the bottom encoder, the top layer, the head and rotary phases.
    """

    family = ""

    def __init__(self, source_model: nn.Module, mice: MiceConfig):
        super().__init__()
        config = source_model.config
        layers = encoder_layers(source_model)
        validate_shape(mice.merge_layer, mice.top_layers, len(layers))
        mice.source_num_layers = mice.source_num_layers or len(layers)
        self.config = config
        self.mice = mice
        self.embeddings = source_model.base_model.embeddings
        self.bottom = nn.ModuleList(layers[: mice.merge_layer])
        self.top = nn.ModuleList(
            self.make_top_layer(layers[mice.merge_layer + i], mice.merge_layer + i) for i in range(mice.top_layers)
        )
        self.attach_head(source_model)
        if mice.random_top_layers:
            self._reinitialise(self.top)

    # -- backbone-specific parts ------------------------------------------------------------------------------
    def make_top_layer(self, source_layer: nn.Module, index: int) -> nn.Module:
        raise NotImplementedError

    def attach_head(self, source_model: nn.Module) -> None:
        raise NotImplementedError

    def encode_bottom(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Layer-k states of a single-sequence input `[CLS] text [SEP]` (positions from 0)."""
        raise NotImplementedError

    def head(self, hidden: torch.Tensor, q_mask: torch.Tensor) -> torch.Tensor:
        """The cross-encoder's head on the final query states (N, Lq, H) with their mask; logits (N, labels)."""
        raise NotImplementedError

    def head_modules(self) -> list[nn.Module]:
        """The modules `head` runs (kept in fp32 when the rest of the model runs in bf16 or fp16)."""
        raise NotImplementedError

    def rotary(self, reference: torch.Tensor, length: int, layer: int) -> Any:
        """Rotary (cos, sin) for positions 0..length-1 in top layer `layer`; None for absolute positions."""
        return None

    def top_self_mask(self, q_mask: torch.Tensor, layer: int) -> torch.Tensor:
        """Additive mask of a top layer's query self-attention: padding, and `cls` unless query_attends_cls."""
        dtype = self.dtype
        mask = padding_mask(q_mask, dtype).expand(-1, 1, q_mask.shape[1], -1).clone()
        if not self.mice.query_attends_cls:
            mask[:, :, 1:, 0] = torch.finfo(dtype).min
        return mask

    # -- shared ---------------------------------------------------------------------------------------------------
    def _reinitialise(self, module: nn.Module) -> None:
        for m in module.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=self.config.initializer_range)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def document_kv(self, doc_states: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Cross-attention keys/values of every top layer for the given document states."""
        length = doc_states.shape[1]
        return [layer.cross_kv(doc_states, self.rotary(doc_states, length, j)) for j, layer in enumerate(self.top)]

    def score_from_states(
        self,
        q_states: torch.Tensor,
        q_mask: torch.Tensor,
        d_mask: torch.Tensor,
        query_index: torch.Tensor,
        d_states: torch.Tensor | None = None,
        d_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        d_padded: bool | None = None,
    ) -> torch.Tensor:
        """Scores of N (query, document) pairs: query `query_index[i]` against document i.

        Give either the layer-k document states (`d_states`) or each top layer's cross keys/values (`d_kv`).
        The first top layer's self-attention is computed once per query, before expanding to the pairs.
        `d_padded` says whether any document of the batch is padded, when the caller knows it from the host; left
        None, it is read from `d_mask` (which waits for the device).
        """
        dtype = q_states.dtype
        if d_padded is None:
            d_padded = not bool(d_mask.all())
        # no mask at all when no document in the batch is padded: SDPA then takes its fastest kernel
        cross_mask = padding_mask(d_mask, dtype) if d_padded else None
        hidden, q_length = q_states, q_states.shape[1]
        per_query: dict[Any, tuple[Any, Any, Any]] = {}  # layer kind -> (self mask, pair self mask, rotary)
        for j, layer in enumerate(self.top):
            kind = getattr(layer, "attention_type", None)
            if kind not in per_query:
                mask = self.top_self_mask(q_mask, j)
                pair_mask = mask if mask.shape[0] == 1 else mask[query_index]  # one query: broadcast, no copies
                per_query[kind] = (mask, pair_mask, self.rotary(q_states, q_length, j))
            self_mask, pair_self_mask, q_rope = per_query[kind]
            if j == 0:
                hidden = layer.self_attend(hidden, self_mask, q_rope)[query_index]  # per query, then per pair
            else:
                hidden = layer.self_attend(hidden, pair_self_mask, q_rope)
            if d_kv is not None:
                k, v = d_kv[j]
            else:
                k, v = layer.cross_kv(d_states, self.rotary(d_states, d_states.shape[1], j))
            hidden = layer.cross_attend(hidden, k, v, cross_mask, self.mice.cls_attends_document, q_rope)
            hidden = layer.feed_forward(hidden)
        return self.head(hidden, q_mask[query_index])

    def forward(
        self,
        q_input_ids: torch.Tensor,
        q_attention_mask: torch.Tensor,
        d_input_ids: torch.Tensor,
        d_attention_mask: torch.Tensor,
        query_index: torch.Tensor,
    ) -> torch.Tensor:
        """End to end: bottom layers for queries and documents, then the top layers; logits (N, labels)."""
        q_states = self.encode_bottom(q_input_ids, q_attention_mask)
        d_states = self.encode_bottom(d_input_ids, d_attention_mask)
        return self.score_from_states(q_states, q_attention_mask, d_attention_mask, query_index, d_states=d_states)

    def fingerprint(self, mode: str) -> str:
        """Hash of the weights a document store depends on: embeddings + bottom layers (+ top cross k/v for kv)."""
        modules: list[nn.Module] = [self.embeddings, self.bottom]
        if mode == "kv":
            modules += [m for layer in self.top for m in layer.kv_modules()]
        return weight_fingerprint(f"mice|{self.mice.merge_layer}|{self.mice.doc_max_length}|{mode}", *modules)
