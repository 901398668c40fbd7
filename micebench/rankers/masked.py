"""`masked-ce`: a cross-encoder whose attention follows an interaction-removal schedule (Mask0-3, PreTTR)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from micebench.models.batching import move
from micebench.models.masking import LayerMasks, schedule_masks
from micebench.models.segments import segment_ids
from micebench.rankers.cross_encoder import CrossEncoderRanker
from micebench.rankers.options import MaskedOptions
from micebench.rankers.registry import register_ranker, register_ranker_pattern
from micebench.schedules import PRESET_HELP, Schedule, is_preset, parse_schedule

#: the config.json key of the schedule a masked-ce checkpoint was trained with
SCHEDULE_KEY = "micebench_schedule"


@register_ranker("masked-ce", "cross-encoder with a per-layer attention schedule (--schedule mask2, ...)")
class MaskedCrossEncoderRanker(CrossEncoderRanker):
    """Applies a schedule as additive masks on the attention logits of each layer, before the softmax."""

    name = "masked-ce"
    Options = MaskedOptions
    onnx_backend = False  # the per-layer masks are hooks the exported graph would not keep

    def __init__(self, options: MaskedOptions):
        schedule = options.schedule
        self.schedule = schedule if isinstance(schedule, Schedule) else parse_schedule(schedule)
        super().__init__(options)
        saved = getattr(self.model.config, SCHEDULE_KEY, None)
        if saved and not self.schedule.rules and self.schedule.name in ("none", "full"):
            # a checkpoint trained with a schedule carries it: `--model masked-ce --checkpoint X` scores as trained
            self.schedule = Schedule.from_dict(saved)
        self.num_layers = self.model.config.num_hidden_layers
        self.schedule.validate(self.num_layers)
        self.layer_masks = LayerMasks(self.model)

    @classmethod
    def run_label(cls, spec: str, options: dict[str, Any]) -> str:
        schedule = options.get("schedule")
        return f"{spec}-{Path(str(schedule)).stem}" if schedule else spec

    def masks_for(self, batch: Any) -> list[Any]:
        """Per-layer additive masks for a tokenised batch, on the model's device. Segments are found where the
        batch is: for a host batch (scoring) on the host, so that nothing waits for the device."""
        seg = segment_ids(batch["input_ids"], batch["attention_mask"], self.tokenizer.sep_token_id)
        return schedule_masks(self.schedule, move(seg, self.device), self.num_layers, self.model.dtype)

    def forward(self, batch: Any, **kwargs: Any) -> Any:
        with self.layer_masks.apply(self.masks_for(batch)):
            return super().forward(batch, **kwargs)

    def save_checkpoint(self, folder: Path) -> None:
        """The cross-encoder's checkpoint with the schedule in its config.json (read back when none is given)."""
        setattr(self.model.config, SCHEDULE_KEY, self.schedule.as_dict())
        super().save_checkpoint(folder)

    def effective_options(self) -> dict[str, Any]:
        return {**super().effective_options(), "schedule": self.schedule.as_dict()}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "schedule": self.schedule.as_dict()}

    @property
    def label(self) -> str:
        return self.schedule.name


register_ranker_pattern(
    is_preset,
    MaskedCrossEncoderRanker,
    lambda name: {"schedule": name},
    {k: f"masked-ce with the {k} schedule: {v}" for k, v in PRESET_HELP.items() if k != "none"},
)
