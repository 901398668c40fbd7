"""Did a training run learn? The two signs of a run that did not, checked after it ends.

- After the warm-up, the loss stays at the level of a scorer that gives every pair the same score (not below half
  of it over the last quarter of the steps): for Margin-MSE that level is the mean squared teacher margin (a
  constant scorer's margins are all 0), for BCE ln 2 (the best constant logit, 0, on balanced labels), for the
  listwise loss ln G (a uniform softmax over G documents).
- The best validation value stays below the first stage the student re-ranks (re-ranking made the ranking worse).

`train` warns on stderr, and the checkpoint's `micebench_training.json` and model card record the verdict.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: the loss over the last quarter of the post-warm-up steps must fall below this fraction of the constant level.
#: Measured: MICE-l2+2 runs that ranked at random stayed at 0.8-1.0 of it (seed 14, 100 steps; the 2026-12-06
#: seed 14, about 25 of about 30), students that learned ended at 0.1-0.2 (loss 2-6); a student that only learns
#: the teacher's mean margin already reaches 0.27 on the BM25 + dense teacher's scores.
LOSS_RATIO = 0.5


def constant_loss(loss: str, teacher_margins: Sequence[float] | np.ndarray, group_size: int = 2) -> float | None:
    """The loss of a scorer that outputs one constant for every pair (None when it cannot be computed)."""
    if loss == "margin-mse":
        margins = np.asarray(teacher_margins, dtype=np.float64)
        return float(np.mean(margins**2)) if margins.size else None
    if loss == "bce":
        return math.log(2.0)
    if loss == "listwise":
        return math.log(group_size)
    return None


def verdict(
    history: list[dict[str, Any]], warmup: int, constant: float | None, first_stage: float | None
) -> dict[str, Any]:
    """{"learned": bool, "reasons": [...], and the numbers they rest on} for a finished run's records."""
    reasons: list[str] = []
    facts: dict[str, Any] = {"constant_loss": constant, "first_stage": first_stage}
    after = [r["loss"] for r in history if r.get("step", 0) > warmup and r.get("loss") is not None]
    if constant is not None and after:
        tail = after[-max(1, len(after) // 4) :]
        late = sum(tail) / len(tail)
        facts["late_loss"] = late
        facts["late_loss_ratio"] = late / constant if constant > 0 else None
        if constant > 0 and late >= LOSS_RATIO * constant:
            reasons.append(
                f"the loss after the warm-up ({late:.4g}, mean of the last {len(tail)} steps) stays at the level of "
                f"a constant scorer ({constant:.4g}; learning brings it below {LOSS_RATIO:g} of that)"
            )
    values = [r["validation"] for r in history if r.get("validation") is not None]
    if values:
        facts["best_validation"] = max(values)
        if first_stage is not None and max(values) < first_stage:
            reasons.append(
                f"the best validation value ({max(values):.4f}) stays below the first stage it re-ranks "
                f"({first_stage:.4f})"
            )
    return {"learned": not reasons, "reasons": reasons, **facts}


def warning_text(name: str, result: dict[str, Any]) -> str:
    """The one line `train` prints on stderr for a run that did not learn."""
    return f"warning: {name} did not learn: " + "; ".join(result["reasons"])


def recorded_verdict(checkpoint: str | Path | None) -> dict[str, Any] | None:
    """The verdict `train` recorded in a checkpoint folder's micebench_training.json (None: no folder, not a
    micebench-trained checkpoint, or one from before the check); `run` copies it into its manifest."""
    if not isinstance(checkpoint, (str, Path)) or not str(checkpoint):
        return None
    from micebench.models.checkpoints import TRAINING_MARKER

    try:
        learned = json.loads((Path(checkpoint).expanduser() / TRAINING_MARKER).read_text(encoding="utf-8"))
        learned = learned.get("learned")
    except (OSError, ValueError, AttributeError):
        return None
    return learned if isinstance(learned, dict) and "learned" in learned else None
