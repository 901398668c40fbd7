"""Timing with the right clock: CUDA events (with synchronisation) on GPUs, the wall clock on CPUs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class TimingStats:
    """Seconds per call: median, p10, p90, mean, std over the measured repeats."""

    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.samples)
        position = q * (len(ordered) - 1)
        low = int(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    def as_dict(self) -> dict[str, float]:
        return {
            "median_ms": self.median * 1e3,
            "p10_ms": self.percentile(0.1) * 1e3,
            "p90_ms": self.percentile(0.9) * 1e3,
            "mean_ms": statistics.fmean(self.samples) * 1e3,
            "std_ms": (statistics.stdev(self.samples) if len(self.samples) > 1 else 0.0) * 1e3,
            "repeats": len(self.samples),
        }


class Clock:
    """Times one call of a function on a device; `cuda` uses events recorded around the call."""

    def __init__(self, device: Any):
        self.cuda = getattr(device, "type", str(device)).startswith("cuda")

    def time(self, fn: Callable[[], Any]) -> float:
        if self.cuda:
            import torch

            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1e3
        begin = time.perf_counter()
        fn()
        return time.perf_counter() - begin


def interleaved(
    calls: dict[str, Callable[[], Any]],
    clock: Clock,
    warmup: int,
    repeats: int,
    on_warm: Callable[[], None] | None = None,
) -> dict[str, TimingStats]:
    """Warm every call up, then time them in turn (A B C A B C ...) so that drift hits all alike."""
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    if on_warm is not None:
        on_warm()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            samples[name].append(clock.time(fn))
    return {name: TimingStats(values) for name, values in samples.items()}
