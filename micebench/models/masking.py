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


def schedule_masks(schedule: Schedule, seg: torch.Tensor, num_layers: int, dtype: torch.dtype) -> list[torch.Tensor]:
    """One additive (batch, 1, L, L) mask per layer; layers with the same pattern share one tensor."""
    masks: list[torch.Tensor] = []
    minimum = torch.finfo(dtype).min
    for start, end, _ in schedule.layer_groups(num_layers):
        table = blocked_table(schedule, start).to(seg.device)
        blocked = table[seg.unsqueeze(2), seg.unsqueeze(1)]
        additive = torch.zeros(blocked.shape, dtype=dtype, device=seg.device).masked_fill_(blocked, minimum)
        masks.extend([additive.unsqueeze(1)] * (end - start))
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
    """Installs pre-hooks on every encoder layer; `apply(masks)` sets the masks for the next forward calls."""

    def __init__(self, model: torch.nn.Module):
        self.layers = encoder_layers(model)
        self._masks: list[torch.Tensor] | None = None
        self._handles = [
            layer.register_forward_pre_hook(self._hook(i), with_kwargs=True) for i, layer in enumerate(self.layers)
        ]

    def _hook(self, index: int) -> Any:
        def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            if self._masks is None:
                return args, kwargs
            if "attention_mask" in kwargs or len(args) < 2:
                kwargs = {**kwargs, "attention_mask": combine_masks(self._masks[index], kwargs.get("attention_mask"))}
            else:
                args = (args[0], combine_masks(self._masks[index], args[1]), *args[2:])
            return args, kwargs

        return hook

    @contextmanager
    def apply(self, masks: list[torch.Tensor]) -> Iterator[None]:
        if len(masks) != len(self.layers):
            raise MicebenchError(f"{len(masks)} masks for {len(self.layers)} layers")
        self._masks = masks
        try:
            yield
        finally:
            self._masks = None

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
