"""MICE on BERT-family backbones (BERT, MiniLM, ELECTRA, RoBERTa): post-norm layers, absolute positions."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from micebench.errors import MicebenchError
from micebench.models.mice import MiceConfig, MiceModel, call_layer, padding_mask


class BertMiceTopLayer(nn.Module):
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

    def self_attend(self, hidden: torch.Tensor, mask: torch.Tensor, rope: Any = None) -> torch.Tensor:
        if self.self_attention is None:
            return hidden
        sa = self.self_attention.self
        return self._attend(
            self.self_attention, hidden, self._heads(sa.key(hidden)), self._heads(sa.value(hidden)), mask
        )

    def cross_kv(self, doc_states: torch.Tensor, rope: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the document states, (B, heads, Ld, head_dim): what `kv` stores precompute."""
        ca = self.cross_attention.self
        return self._heads(ca.key(doc_states)), self._heads(ca.value(doc_states))

    def kv_modules(self) -> list[nn.Module]:
        """The modules `cross_kv` depends on (part of a kv store's fingerprint)."""
        return [self.cross_attention.self.key, self.cross_attention.self.value]

    def cross_attend(
        self,
        hidden: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None,
        cls_too: bool,
        rope: Any = None,
    ) -> torch.Tensor:
        updated = self._attend(self.cross_attention, hidden, k, v, mask)
        if cls_too:
            return updated
        return torch.cat([hidden[:, :1], updated[:, 1:]], dim=1)

    def feed_forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.output(self.intermediate(hidden), hidden)


class BertMice(MiceModel):
    """MICE from a BERT-family sequence classifier: token type 0 for every single-sequence input."""

    family = "bert"

    def make_top_layer(self, source_layer: nn.Module, index: int) -> nn.Module:
        return BertMiceTopLayer(source_layer, self.config, self.mice)

    def attach_head(self, source_model: nn.Module) -> None:
        self.pooler = getattr(source_model.base_model, "pooler", None)
        self.dropout = getattr(source_model, "dropout", nn.Identity())
        self.classifier = source_model.classifier
        self._pooled_head = isinstance(self.classifier, nn.Linear)
        if self._pooled_head and self.pooler is None:
            raise MicebenchError("cross-encoder checkpoint has a linear classifier but no pooler")

    def encode_bottom(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.embeddings(input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids))
        mask = padding_mask(attention_mask, hidden.dtype)
        for layer in self.bottom:
            hidden = call_layer(layer, hidden, mask)
        return hidden

    def head_modules(self) -> list[nn.Module]:
        return [self.pooler, self.classifier] if self._pooled_head else [self.classifier]

    def head(self, hidden: torch.Tensor, q_mask: torch.Tensor) -> torch.Tensor:
        if self._pooled_head:
            return self.classifier(self.dropout(self.pooler(hidden)))
        return self.classifier(hidden)
