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


def cuda_device(device: Any) -> Any:
    """The torch.device of a CUDA `device` (`cuda`, `cuda:N`, a torch.device), or None for any other device."""
    import torch

    target = torch.device(device) if isinstance(device, str) else device
    return target if getattr(target, "type", None) == "cuda" else None


class Clock:
    """Times one call of a function on a device; `cuda:N` uses events recorded on that GPU's current stream."""

    def __init__(self, device: Any):
        self.device = cuda_device(device)
        self.cuda = self.device is not None

    def time(self, fn: Callable[[], Any]) -> float:
        """Seconds taken by `fn()`: GPU time between two events on CUDA (synchronised before and after)."""
        if self.cuda:
            import torch

            with torch.cuda.device(self.device):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                stream = torch.cuda.current_stream(self.device)
                torch.cuda.synchronize(self.device)
                start.record(stream)
                fn()
                end.record(stream)
                torch.cuda.synchronize(self.device)
            return start.elapsed_time(end) / 1e3
        begin = time.perf_counter()
        fn()
        return time.perf_counter() - begin


def peak_memory_mb(device: Any, fn: Callable[[], Any]) -> float:
    """Peak CUDA allocator memory (MiB) that one call of `fn()` adds on `device`, measured on that GPU only."""
    import torch

    target = cuda_device(device)
    if target is None:
        raise ValueError(f"peak_memory_mb measures a CUDA device, not {device!r}")
    with torch.cuda.device(target):
        torch.cuda.synchronize(target)
        torch.cuda.reset_peak_memory_stats(target)
        base = torch.cuda.memory_allocated(target)
        fn()
        torch.cuda.synchronize(target)
        return (torch.cuda.max_memory_allocated(target) - base) / 2**20


def _status_kib(field: str) -> int | None:
    """A `kB` field of /proc/self/status (VmRSS, VmHWM), None where there is none (not Linux)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _release_freed_memory() -> None:
    """Hand memory that earlier calls freed back to the system (glibc's `malloc_trim`), so that the next call's
    pages count as its own rather than being served, unseen, from the allocator's free lists."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def peak_rss_mb(fn: Callable[[], Any]) -> float | None:
    """Peak resident memory (MiB) that one call of `fn()` adds to this process on the CPU, or None where it cannot
    be measured (not Linux, or /proc/self/clear_refs not writable).

    The process's high-water mark (VmHWM) is reset to the current resident size before the call (writing 5 to
    /proc/self/clear_refs, Linux 4.0+) and read after it; the figure is that peak less the resident size before
    the call, so the weights and every other ranker's memory, resident before, are left out."""
    gc_collect()
    _release_freed_memory()
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return None
    before = _status_kib("VmRSS")
    fn()
    peak = _status_kib("VmHWM")
    if before is None or peak is None:
        return None
    return max(peak - before, 0) / 1024


def gc_collect() -> None:
    """Free unreachable Python objects (and the tensors they hold) before a memory measurement."""
    import gc

    gc.collect()


def interleaved(
    calls: dict[str, Callable[[], Any]],
    clock: Clock,
    warmup: int,
    repeats: int,
    on_warm: Callable[[], None] | None = None,
    tick: Callable[[], None] | None = None,
) -> dict[str, TimingStats]:
    """Warm every call up, then time them in turn (A B C A B C ...) so that drift hits all alike.

    `tick` is called after every call, warm-up included (a progress bar's advance)."""
    tick = tick or (lambda: None)
    for _ in range(warmup):
        for fn in calls.values():
            fn()
            tick()
    if on_warm is not None:
        on_warm()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            samples[name].append(clock.time(fn))
            tick()
    return {name: TimingStats(values) for name, values in samples.items()}
