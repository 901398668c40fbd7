"""Segment ids of `[CLS] query [SEP] document [SEP]` inputs, computed from the tokenizer's special tokens."""

from __future__ import annotations

import torch

from micebench.errors import MicebenchError
from micebench.schedules import SEGMENT_INDEX

CLS, QUERY, SEP1, DOCUMENT, SEP2 = (SEGMENT_INDEX[s] for s in ("cls", "query", "sep1", "document", "sep2"))
PAD = len(SEGMENT_INDEX)


def segment_ids(input_ids: torch.Tensor, attention_mask: torch.Tensor, sep_token_id: int) -> torch.Tensor:
    """(batch, length) segment index per token; sep1 is the first [SEP], sep2 the last real token's [SEP].

    Truncation keeps the final [SEP], so a truncated document still ends with its sep2.
    """
    real = attention_mask.bool()
    positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    is_sep = (input_ids == sep_token_id) & real
    length = input_ids.shape[1]
    first_sep = torch.where(is_sep, positions, length).min(dim=1, keepdim=True).values
    last_sep = torch.where(is_sep, positions, -1).max(dim=1, keepdim=True).values
    if bool((first_sep >= last_sep).any()):
        raise MicebenchError("input without two [SEP] tokens: expected [CLS] query [SEP] document [SEP] pairs")
    seg = torch.full_like(input_ids, DOCUMENT)
    seg = torch.where(positions < first_sep, QUERY, seg)
    seg = torch.where(positions == 0, CLS, seg)
    seg = torch.where(positions == first_sep, SEP1, seg)
    seg = torch.where(positions == last_sep, SEP2, seg)
    return torch.where(real, seg, PAD)
