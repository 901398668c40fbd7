"""`masked-ce`: a cross-encoder whose attention follows an interaction-removal schedule (Mask0-3, PreTTR)."""

from __future__ import annotations

from typing import Any

from micebench.models.masking import LayerMasks, schedule_masks
from micebench.models.segments import segment_ids
from micebench.rankers.base import register_ranker, register_ranker_pattern
from micebench.rankers.cross_encoder import CrossEncoderRanker
from micebench.schedules import PRESET_HELP, Schedule, is_preset, parse_schedule


@register_ranker("masked-ce", "cross-encoder with a per-layer attention schedule (--schedule mask2, ...)")
class MaskedCrossEncoderRanker(CrossEncoderRanker):
    """Applies a schedule as additive masks on the attention logits of each layer, before the softmax."""

    name = "masked-ce"

    def __init__(self, schedule: str | Schedule = "none", **options: Any):
        super().__init__(**options)
        self.schedule = schedule if isinstance(schedule, Schedule) else parse_schedule(schedule)
        self.num_layers = self.model.config.num_hidden_layers
        self.schedule.validate(self.num_layers)
        self.layer_masks = LayerMasks(self.model)

    def masks_for(self, batch: Any) -> list[Any]:
        """Per-layer additive masks for a tokenised batch."""
        seg = segment_ids(batch["input_ids"], batch["attention_mask"], self.tokenizer.sep_token_id)
        return schedule_masks(self.schedule, seg, self.num_layers, self.model.dtype)

    def forward(self, batch: Any, **kwargs: Any) -> Any:
        with self.layer_masks.apply(self.masks_for(batch)):
            return self.model(**batch, **kwargs)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "schedule": self.schedule.as_dict()}

    @property
    def label(self) -> str:
        return self.schedule.name


def _preset_factory(name: str, **options: Any) -> MaskedCrossEncoderRanker:
    if "schedule" in options:
        options.pop("schedule")
    return MaskedCrossEncoderRanker(schedule=name, **options)


register_ranker_pattern(
    is_preset,
    _preset_factory,
    {k: f"masked-ce with the {k} schedule: {v}" for k, v in PRESET_HELP.items() if k != "none"},
)
