"""MICE on ModernBERT backbones (Ettin): pre-norm layers, rotary positions, alternating local/global attention.

Rotary handling: the query `[CLS] q [SEP]` and each document `[CLS] d [SEP]` are encoded alone from position 0,
so stored document states do not depend on the query. In a top layer, query vectors carry the query's rotary
phases and the document keys (cross-attention) carry the document's own phases, computed with the rotary
parameters of that layer's type (local or global). A local layer's window applies to the query self-attention;
cross-attention reads the whole document (there is no shared sequence for a window to be measured in).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from micebench.models.mice import MiceConfig, MiceModel, call_layer


def rotate(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Apply rotary phases (cos, sin of shape (1, L, head_dim)) to (B, heads, L, head_dim) vectors."""
    cos, sin = (t.unsqueeze(1) for t in rope)
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class ModernBertMiceTopLayer(nn.Module):
    """Query self-attention, cross-attention to document states, MLP; each a pre-norm residual block."""

    def __init__(self, source: nn.Module, config: Any, mice: MiceConfig):
        super().__init__()
        keep_self = mice.top_self_attention
        self.self_norm = source.attn_norm if keep_self else None
        self.self_attention = source.attn if keep_self else None
        self.cross_norm = copy.deepcopy(source.attn_norm)
        self.cross_attention = copy.deepcopy(source.attn)
        self.mlp_norm = source.mlp_norm
        self.mlp = source.mlp
        self.attention_type = source.attention_type
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dropout = config.attention_dropout

    def _project(self, attn: nn.Module, x: torch.Tensor, parts: slice) -> list[torch.Tensor]:
        """Rows `parts` (0 = q, 1 = k, 2 = v) of the fused Wqkv projection, as (B, heads, L, head_dim) each."""
        width = self.num_heads * self.head_dim
        rows = slice(parts.start * width, parts.stop * width)
        bias = attn.Wqkv.bias[rows] if attn.Wqkv.bias is not None else None
        out = F.linear(x, attn.Wqkv.weight[rows], bias)
        b, length, _ = x.shape
        out = out.view(b, length, parts.stop - parts.start, self.num_heads, self.head_dim)
        return [t.transpose(1, 2) for t in out.unbind(2)]

    def _attend(self, attn: nn.Module, hidden: torch.Tensor, q: torch.Tensor, k: Any, v: Any, mask: Any) -> Any:
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0, scale=self.head_dim**-0.5
        )
        return hidden + attn.out_drop(attn.Wo(out.transpose(1, 2).reshape(hidden.shape)))

    def self_attend(self, hidden: torch.Tensor, mask: torch.Tensor, rope: Any) -> torch.Tensor:
        if self.self_attention is None:
            return hidden
        q, k, v = self._project(self.self_attention, self.self_norm(hidden), slice(0, 3))
        return self._attend(self.self_attention, hidden, rotate(q, rope), rotate(k, rope), v, mask)

    def cross_kv(self, doc_states: torch.Tensor, rope: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys (with the document's rotary phases) and values of the document states: what `kv` stores hold."""
        k, v = self._project(self.cross_attention, self.cross_norm(doc_states), slice(1, 3))
        return rotate(k, rope), v

    def kv_modules(self) -> list[nn.Module]:
        """The modules `cross_kv` depends on (part of a kv store's fingerprint)."""
        return [self.cross_norm, self.cross_attention.Wqkv]

    def cross_attend(
        self, hidden: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Any, cls_too: bool, rope: Any
    ) -> torch.Tensor:
        (q,) = self._project(self.cross_attention, self.cross_norm(hidden), slice(0, 1))
        updated = self._attend(self.cross_attention, hidden, rotate(q, rope), k, v, mask)
        if cls_too:
            return updated
        return torch.cat([hidden[:, :1], updated[:, 1:]], dim=1)

    def feed_forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.mlp(self.mlp_norm(hidden))


class ModernBertMice(MiceModel):
    """MICE from a ModernBERT sequence classifier; pooling (`cls` or mean) follows the checkpoint's config."""

    family = "modernbert"

    def make_top_layer(self, source_layer: nn.Module, index: int) -> nn.Module:
        return ModernBertMiceTopLayer(source_layer, self.config, self.mice)

    def attach_head(self, source_model: nn.Module) -> None:
        base = source_model.base_model
        self.rotary_emb = base.rotary_emb
        self.final_norm = base.final_norm
        self.prediction_head = source_model.head
        self.drop = source_model.drop
        self.classifier = source_model.classifier

    def rotary(self, reference: torch.Tensor, length: int, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(length, device=reference.device).unsqueeze(0)
        return self.rotary_emb(reference, positions, self.top[layer].attention_type)

    def window(self, length: int, device: torch.device) -> torch.Tensor:
        """(L, L) True outside ModernBERT's local window (|i - j| > local_attention / 2)."""
        positions = torch.arange(length, device=device)
        return (positions[:, None] - positions[None, :]).abs() > self.config.local_attention // 2

    def top_self_mask(self, q_mask: torch.Tensor, layer: int) -> torch.Tensor:
        mask = super().top_self_mask(q_mask, layer)
        if self.top[layer].attention_type == "sliding_attention":
            mask = mask.masked_fill(self.window(q_mask.shape[1], q_mask.device), torch.finfo(mask.dtype).min)
        return mask

    def encode_bottom(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask, create_bidirectional_sliding_window_mask

        hidden = self.embeddings(input_ids=input_ids)
        options = {"config": self.config, "inputs_embeds": hidden, "attention_mask": attention_mask}
        masks = {
            "full_attention": create_bidirectional_mask(**options),
            "sliding_attention": create_bidirectional_sliding_window_mask(**options),
        }
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        rope = {kind: self.rotary_emb(hidden, positions, kind) for kind in masks}
        for layer in self.bottom:
            kind = layer.attention_type
            hidden = call_layer(layer, hidden, masks[kind], position_embeddings=rope[kind])
        return hidden

    def head_modules(self) -> list[nn.Module]:
        return [self.final_norm, self.prediction_head, self.classifier]

    def head(self, hidden: torch.Tensor, q_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.final_norm(hidden)
        if self.config.classifier_pooling == "mean":
            weights = q_mask.to(hidden.dtype).unsqueeze(-1)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1)
        else:
            pooled = hidden[:, 0]
        return self.classifier(self.drop(self.prediction_head(pooled)))
