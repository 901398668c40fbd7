"""Analytic FLOPs per document for the exact computation each ranker performs (no torch here).

Only matrix products are counted (2 FLOPs per multiply-add), which is what dominates and what
`torch.utils.flop_counter.FlopCounterMode` counts. For a transformer layer over L tokens with hidden H and
feed-forward width I:

    layer(L)     = 8 L H^2  (Q, K, V, output projections)  + 4 L^2 H (scores and weighted sum)  + ffn(L)
    ffn(L)       = 4 L H I (BERT: H -> I -> H)   or   6 L H I (ModernBERT's gated GLU: H -> 2I, I -> H)

Per document, with a batch of B documents for one query (query-side work is divided by B):

    ce / masked  = N layer(Lce) + head,  Lce = min(Lq + Ld - 1, max_positions)   (masks do not remove FLOPs)
    mice (k, m)  = [k layer(Lq) + first-top self-attention(Lq)] / B
                 + k layer(Ld)                                  (document bottom; 0 when precomputed)
                 + m [4 Lq H^2 (cross Q, O) + 4 Lq Ld H (cross attention) + ffn(Lq)]
                 + (m - 1) selfattn(Lq) + m 4 Ld H^2 (cross K, V; 0 with a kv store) + head
      selfattn(L) = 8 L H^2 + 4 L^2 H
    colbert      = [N layer(Lq) + 2 Lq H D] / B + N layer(Ld) + 2 Ld H D (0 when precomputed) + 2 Lq Ld D
    head         = 2 H^2 (BERT pooler / ModernBERT prediction head) + 2 H (one-logit classifier)

ModernBERT's local layers use the same dense masked attention as its global ones (SDPA with a window mask), so
they count L^2 like the rest; a sliding-window kernel would do less.

Lq and Ld count each side's own special tokens ([CLS] ... [SEP]); D is ColBERT's projection width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Shape:
    """Transformer dimensions the formulas need."""

    layers: int
    hidden: int
    intermediate: int
    max_positions: int = 512
    glu: bool = False  # ModernBERT's gated feed-forward (Wi: H -> 2I)


def self_attention(length: int, hidden: int) -> float:
    return 8 * length * hidden**2 + 4 * length**2 * hidden


def feed_forward(length: int, shape: Shape) -> float:
    return (6 if shape.glu else 4) * length * shape.hidden * shape.intermediate


def layer(length: int, shape: Shape) -> float:
    return self_attention(length, shape.hidden) + feed_forward(length, shape)


def head(shape: Shape) -> float:
    return 2 * shape.hidden**2 + 2 * shape.hidden


def cross_encoder_length(query_len: int, doc_len: int, shape: Shape) -> int:
    """Tokens of `[CLS] q [SEP] d [SEP]` given each side's length with its own specials, truncated to the model."""
    return min(query_len + doc_len - 1, shape.max_positions)


def cross_encoder(query_len: int, doc_len: int, shape: Shape) -> float:
    return shape.layers * layer(cross_encoder_length(query_len, doc_len, shape), shape) + head(shape)


def mice(query_len: int, doc_len: int, shape: Shape, merge: int, top: int, batch: int, precompute: str) -> float:
    h = shape.hidden
    query_side = merge * layer(query_len, shape) + self_attention(query_len, h)
    doc_bottom = 0.0 if precompute in ("states", "kv") else merge * layer(doc_len, shape)
    cross_kv = 0.0 if precompute == "kv" else top * 4 * doc_len * h**2
    top_layers = top * (4 * query_len * h**2 + 4 * query_len * doc_len * h + feed_forward(query_len, shape))
    top_layers += (top - 1) * self_attention(query_len, h)
    return query_side / batch + doc_bottom + cross_kv + top_layers + head(shape)


def colbert(query_len: int, doc_len: int, shape: Shape, dim: int, batch: int, precompute: str) -> float:
    query_side = shape.layers * layer(query_len, shape) + 2 * query_len * shape.hidden * dim
    doc_side = 0.0 if precompute != "none" else shape.layers * layer(doc_len, shape) + 2 * doc_len * shape.hidden * dim
    return query_side / batch + doc_side + 2 * query_len * doc_len * dim


def shape_of(config: Any) -> Shape:
    """The Shape of a transformers config (BERT family or ModernBERT, whose feed-forward is gated)."""
    return Shape(
        config.num_hidden_layers,
        config.hidden_size,
        config.intermediate_size,
        int(config.max_position_embeddings),
        glu=config.model_type == "modernbert",
    )
