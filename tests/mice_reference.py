"""An outside reference for BERT-MICE: the paper's equations written eagerly with `torch.nn.functional` only.

It reads the source cross-encoder's weights (a transformers state dict) and nothing of micebench, and scores one
(query, document) pair at a time, without padding:

- bottom layers 0..k-1 encode `[CLS] q [SEP]` and `[CLS] d [SEP]` apart (post-norm BERT layers, token type 0);
- top layer j (copied from source layer k+j): query self-attention in which query tokens do not see `cls`
  (unless `query_attends_cls`), cross-attention from the query tokens to the layer-k document states with a copy
  of the layer's attention weights (`cls` keeps its state unless `cls_attends_document`), then the feed-forward;
- the score is the classifier over the pooled `cls` state.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def _linear(w: dict[str, torch.Tensor], name: str, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, w[f"{name}.weight"], w[f"{name}.bias"])


def _norm(w: dict[str, torch.Tensor], name: str, x: torch.Tensor, eps: float) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], w[f"{name}.weight"], w[f"{name}.bias"], eps)


def _attention(w, layer: str, x: torch.Tensor, memory: torch.Tensor, blocked: torch.Tensor, heads: int) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d) with `blocked` (Lx, Lm) positions removed) V, projected: one sequence, (Lx, H)."""
    dim = x.shape[-1] // heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(t.shape[0], heads, dim).transpose(0, 1)  # (heads, L, dim)

    q = split(_linear(w, f"{layer}.attention.self.query", x))
    k = split(_linear(w, f"{layer}.attention.self.key", memory))
    v = split(_linear(w, f"{layer}.attention.self.value", memory))
    logits = (q @ k.transpose(1, 2)) / math.sqrt(dim)
    weights = F.softmax(logits.masked_fill(blocked, float("-inf")), dim=-1)
    out = (weights @ v).transpose(0, 1).reshape(x.shape)
    return _linear(w, f"{layer}.attention.output.dense", out)


def _feed_forward(w, layer: str, x: torch.Tensor, eps: float) -> torch.Tensor:
    inner = F.gelu(_linear(w, f"{layer}.intermediate.dense", x))
    return _norm(w, f"{layer}.output.LayerNorm", x + _linear(w, f"{layer}.output.dense", inner), eps)


def _encoder_layer(w, layer: str, x: torch.Tensor, heads: int, eps: float) -> torch.Tensor:
    nothing = torch.zeros(x.shape[0], x.shape[0], dtype=torch.bool)
    h = _norm(w, f"{layer}.attention.output.LayerNorm", x + _attention(w, layer, x, x, nothing, heads), eps)
    return _feed_forward(w, layer, h, eps)


def mice_score(
    state: dict[str, torch.Tensor],
    config: dict,
    query_ids: list[int],
    doc_ids: list[int],
    merge_layer: int,
    top_layers: int,
    query_attends_cls: bool = False,
    cls_attends_document: bool = False,
) -> float:
    """The MICE-l<k>+<m> score of one pair, from a BERT sequence classifier's `state_dict` and config."""
    w = {k.removeprefix("bert."): v.double() for k, v in state.items()}
    heads, eps = config["num_attention_heads"], config["layer_norm_eps"]

    def embed(ids: list[int]) -> torch.Tensor:
        positions = torch.arange(len(ids))
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][positions]
        x = x + w["embeddings.token_type_embeddings.weight"][0]
        return _norm(w, "embeddings.LayerNorm", x, eps)

    q, d = embed(query_ids), embed(doc_ids)
    for i in range(merge_layer):
        q = _encoder_layer(w, f"encoder.layer.{i}", q, heads, eps)
        d = _encoder_layer(w, f"encoder.layer.{i}", d, heads, eps)
    no_cls = torch.zeros(len(query_ids), len(query_ids), dtype=torch.bool)
    if not query_attends_cls:
        no_cls[1:, 0] = True
    nothing = torch.zeros(len(query_ids), len(doc_ids), dtype=torch.bool)
    for j in range(top_layers):
        layer = f"encoder.layer.{merge_layer + j}"
        ln = f"{layer}.attention.output.LayerNorm"
        h = _norm(w, ln, q + _attention(w, layer, q, q, no_cls, heads), eps)
        crossed = _norm(w, ln, h + _attention(w, layer, h, d, nothing, heads), eps)
        h = crossed if cls_attends_document else torch.cat([h[:1], crossed[1:]])
        q = _feed_forward(w, layer, h, eps)
    pooled = torch.tanh(_linear(w, "pooler.dense", q[0]))
    return float(F.linear(pooled, state["classifier.weight"].double(), state["classifier.bias"].double())[0])
