"""MICE-l<k>+<m>: Minimal Interaction Cross-Encoder built from a BERT-family cross-encoder (arXiv 2602.16299).

- bottom layers 0..k-1 encode `[CLS] query [SEP]` and `[CLS] document [SEP]` separately with shared weights, so
  layer-k document states can be computed once and stored;
- m top layers, copied from layers k..k+m-1 (the layers above are dropped), update query tokens only: query
  self-attention (query tokens may not attend to `cls`), cross-attention from query tokens to the frozen layer-k
  document states (`cls` does not cross-attend: its state passes through), then the feed-forward block;
  cross-attention starts as a copy of the layer's self-attention;
- score = the cross-encoder's head (pooler + classifier) on the query's `cls`.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from micebench.errors import MicebenchError
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
    query_max_length: int = 64
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


def _call_layer(layer: nn.Module, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    out = layer(hidden, attention_mask=mask)
    return out[0] if isinstance(out, tuple) else out


def padding_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, L) 1/0 -> additive (B, 1, 1, L) mask: 0 where attended, dtype minimum on padding."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class MiceTopLayer(nn.Module):
    """One top layer: query self-attention, cross-attention to document states, feed-forward (query tokens only)."""

    def __init__(self, source: nn.Module, config: Any, mice: MiceConfig):
        super().__init__()
        self.self_attention = source.attention if mice.top_self_attention else None
        self.cross_attention = copy.deepcopy(source.attention)
        self.intermediate = source.intermediate
        self.output = source.output
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dropout = config.attention_probs_dropout_prob

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, length, _ = x.shape
        return x.view(b, length, self.num_heads, self.head_dim).transpose(1, 2)

    def _attend(
        self, module: nn.Module, hidden: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Any
    ) -> torch.Tensor:
        q = self._heads(module.self.query(hidden))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        out = out.transpose(1, 2).reshape(hidden.shape)
        return module.output(out, hidden)

    def self_attend(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.self_attention is None:
            return hidden
        sa = self.self_attention.self
        return self._attend(
            self.self_attention, hidden, self._heads(sa.key(hidden)), self._heads(sa.value(hidden)), mask
        )

    def cross_kv(self, doc_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the document states, (B, heads, Ld, head_dim): what `kv` stores precompute."""
        ca = self.cross_attention.self
        return self._heads(ca.key(doc_states)), self._heads(ca.value(doc_states))

    def cross_attend(
        self, hidden: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, cls_too: bool
    ) -> torch.Tensor:
        updated = self._attend(self.cross_attention, hidden, k, v, mask)
        if cls_too:
            return updated
        return torch.cat([hidden[:, :1], updated[:, 1:]], dim=1)

    def feed_forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.output(self.intermediate(hidden), hidden)


class MiceModel(nn.Module):
    """The MICE network; built from a sequence-classification model (whose modules it reuses)."""

    def __init__(self, source_model: nn.Module, mice: MiceConfig):
        super().__init__()
        config = source_model.config
        layers = encoder_layers(source_model)
        validate_shape(mice.merge_layer, mice.top_layers, len(layers))
        base = source_model.base_model
        if not hasattr(base, "embeddings") or not hasattr(layers[0], "attention"):
            raise MicebenchError(f"MICE needs a BERT-family model; {type(source_model).__name__} is not supported")
        mice.source_num_layers = mice.source_num_layers or len(layers)
        self.config = config
        self.mice = mice
        self.embeddings = base.embeddings
        self.bottom = nn.ModuleList(layers[: mice.merge_layer])
        self.top = nn.ModuleList(
            MiceTopLayer(layers[mice.merge_layer + i], config, mice) for i in range(mice.top_layers)
        )
        self.pooler = getattr(base, "pooler", None)
        self.dropout = getattr(source_model, "dropout", nn.Identity())
        self.classifier = source_model.classifier
        self._pooled_head = isinstance(self.classifier, nn.Linear)
        if self._pooled_head and self.pooler is None:
            raise MicebenchError("cross-encoder checkpoint has a linear classifier but no pooler")
        if mice.random_top_layers:
            self._reinitialise(self.top)

    def _reinitialise(self, module: nn.Module) -> None:
        for m in module.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=self.config.initializer_range)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    # -- bottom -------------------------------------------------------------------------------------------------
    def encode_bottom(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Layer-k states of a single-sequence input `[CLS] text [SEP]` (token type 0, positions from 0)."""
        hidden = self.embeddings(input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids))
        mask = padding_mask(attention_mask, hidden.dtype)
        for layer in self.bottom:
            hidden = _call_layer(layer, hidden, mask)
        return hidden

    def document_kv(self, doc_states: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Cross-attention keys/values of every top layer for the given document states."""
        return [layer.cross_kv(doc_states) for layer in self.top]

    # -- top ----------------------------------------------------------------------------------------------------
    def _query_self_mask(self, q_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        mask = padding_mask(q_mask, dtype).expand(-1, 1, q_mask.shape[1], -1).clone()
        if not self.mice.query_attends_cls:
            mask[:, :, 1:, 0] = torch.finfo(dtype).min
        return mask

    def score_from_states(
        self,
        q_states: torch.Tensor,
        q_mask: torch.Tensor,
        d_mask: torch.Tensor,
        query_index: torch.Tensor,
        d_states: torch.Tensor | None = None,
        d_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """Scores of N (query, document) pairs: query `query_index[i]` against document i.

        Give either the layer-k document states (`d_states`) or each top layer's cross keys/values (`d_kv`).
        The first top layer's self-attention is computed once per query, before expanding to the pairs.
        """
        dtype = q_states.dtype
        self_mask = self._query_self_mask(q_mask, dtype)
        # no mask at all when no document in the batch is padded: SDPA then takes its fastest kernel
        cross_mask = None if bool(d_mask.all()) else padding_mask(d_mask, dtype)
        hidden = q_states
        for j, layer in enumerate(self.top):
            if j == 0:
                hidden = layer.self_attend(hidden, self_mask)[query_index]  # per query, then per pair
                pair_self_mask = self_mask[query_index]
            else:
                hidden = layer.self_attend(hidden, pair_self_mask)
            k, v = d_kv[j] if d_kv is not None else layer.cross_kv(d_states)
            hidden = layer.cross_attend(hidden, k, v, cross_mask, self.mice.cls_attends_document)
            hidden = layer.feed_forward(hidden)
        return self.head(hidden)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """The cross-encoder's classification head on the final query states; returns logits (N, labels)."""
        if self._pooled_head:
            return self.classifier(self.dropout(self.pooler(hidden)))
        return self.classifier(hidden)

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
        digest = hashlib.sha256(f"mice|{self.mice.merge_layer}|{self.mice.doc_max_length}|{mode}".encode())
        modules: list[nn.Module] = [self.embeddings, self.bottom]
        if mode == "kv":
            modules += [layer.cross_attention.self.key for layer in self.top]
            modules += [layer.cross_attention.self.value for layer in self.top]
        for module in modules:
            for name, tensor in sorted(module.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:20]
