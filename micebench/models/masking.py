"""Per-layer additive attention masks applied through forward pre-hooks on the public encoder layer modules.

The model runs unchanged (its own embeddings, layers, SDPA attention and head); a hook on each layer combines
the attention mask the layer receives (padding, and ModernBERT's sliding window on its local layers) with the
schedule's mask of that layer, so a schedule only ever removes attention. No transformers internals are copied.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from micebench.errors import MicebenchError
from micebench.models.segments import PAD
from micebench.schedules import Schedule


def encoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The list of transformer layers of a BERT-family model (BERT, MiniLM, ELECTRA, RoBERTa, ModernBERT)."""
    base = getattr(model, "base_model", model)
    for path in ("encoder.layer", "layers", "encoder.layers"):
        obj: Any = base
        for attr in path.split("."):
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if isinstance(obj, torch.nn.ModuleList):
            return obj
    raise MicebenchError(f"cannot find the encoder layers of {type(model).__name__}")


def blocked_table(schedule: Schedule, layer: int) -> torch.Tensor:
    """6x6 bool table over (from, to) segment ids incl. padding: padding keys are always blocked."""
    table = np.zeros((PAD + 1, PAD + 1), dtype=bool)
    table[:PAD, :PAD] = schedule.blocked(layer)
    table[:, PAD] = True  # nobody attends to padding
    table[PAD, :] = False  # padding rows read everything real (their outputs are never used)
    table[PAD, PAD] = True
    return torch.from_numpy(table)


def additive_mask(table: torch.Tensor, seg: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The (batch, 1, L, L) additive mask of one blocked table: 0 where allowed, the dtype's minimum where removed.

    Rows are looked up per query token (batch, L, 6) and gathered by key segment through an expanded (strided,
    not copied) index, so the only (batch, L, L) tensor made is the mask itself, already in `dtype`.
    """
    values = torch.zeros(table.shape, dtype=dtype).masked_fill_(table, torch.finfo(dtype).min).to(seg.device)
    rows = values[seg]  # batch x L x 6: the additive row of each query token's segment
    keys = seg.unsqueeze(1).expand(-1, seg.shape[1], -1)  # batch x L x L view of the key segments
    return torch.gather(rows, 2, keys).unsqueeze(1)


def schedule_masks(schedule: Schedule, seg: torch.Tensor, num_layers: int, dtype: torch.dtype) -> list[torch.Tensor]:
    """One additive (batch, 1, L, L) mask per layer; every layer with the same blocked pattern shares one tensor."""
    built: dict[bytes, torch.Tensor] = {}
    masks: list[torch.Tensor] = []
    for start, end, grid in schedule.layer_groups(num_layers):
        key = np.ascontiguousarray(grid).tobytes()
        if key not in built:
            built[key] = additive_mask(blocked_table(schedule, start), seg, dtype)
        masks.extend([built[key]] * (end - start))
    return masks


def combine_masks(schedule_mask: torch.Tensor, own: torch.Tensor | None) -> torch.Tensor:
    """The schedule's additive mask with the layer's own mask (None, boolean keep-mask or additive) removed too."""
    if own is None:
        return schedule_mask
    minimum = torch.finfo(schedule_mask.dtype).min
    if own.dtype == torch.bool:
        return schedule_mask.masked_fill(~own, minimum)
    return (schedule_mask + own.to(schedule_mask.dtype)).clamp_min(minimum)


class LayerMasks:
    """Installs pre-hooks on every encoder layer; `apply(masks)` sets the masks for the next forward calls.

    The combination of a schedule mask with a layer's own mask is made once per distinct pair and reused by every
    layer that receives the same two tensors (BERT hands all layers one padding mask; ModernBERT one global and one
    sliding-window mask), so a forward call builds a handful of masks, not one per layer.
    """

    def __init__(self, model: torch.nn.Module):
        self.layers = encoder_layers(model)
        self._masks: list[torch.Tensor] | None = None
        self._combined: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]] = {}
        self._handles = [
            layer.register_forward_pre_hook(self._hook(i), with_kwargs=True) for i, layer in enumerate(self.layers)
        ]

    def combined(self, index: int, own: torch.Tensor | None) -> torch.Tensor:
        """Layer `index`'s schedule mask with `own` removed too, built once per (schedule mask, own mask) pair."""
        assert self._masks is not None
        mask = self._masks[index]
        key = (id(mask), id(own))
        hit = self._combined.get(key)
        if hit is None or hit[0] is not mask or hit[1] is not own:  # entries keep both alive, so ids stay unique
            hit = (mask, own, combine_masks(mask, own))
            self._combined[key] = hit
        return hit[2]

    def _hook(self, index: int) -> Any:
        def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            if self._masks is None:
                return args, kwargs
            if "attention_mask" in kwargs or len(args) < 2:
                kwargs = {**kwargs, "attention_mask": self.combined(index, kwargs.get("attention_mask"))}
            else:
                args = (args[0], self.combined(index, args[1]), *args[2:])
            return args, kwargs

        return hook

    @contextmanager
    def apply(self, masks: list[torch.Tensor]) -> Iterator[None]:
        if len(masks) != len(self.layers):
            raise MicebenchError(f"{len(masks)} masks for {len(self.layers)} layers")
        self._masks = masks
        self._combined = {}
        try:
            yield
        finally:
            self._masks = None
            self._combined = {}

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
