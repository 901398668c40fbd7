"""The machine's load around a timing: how many cores other processes kept busy, and whether that was too many.

On a machine whose cores are shared, the timed models lose cores to other processes unevenly (a fast path of many
short parallel regions suffers most from a stolen core), so speed-up ratios measured there mean little. The load is
measured over the timed phase and recorded beside the results, with a warning when it was high.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: /proc/stat columns (after the "cpu" label) that count busy time: user, nice, system, irq, softirq, steal
#: (idle and iowait are idle; guest time is already inside user)
_BUSY_COLUMNS = (0, 1, 2, 5, 6, 7)
#: other processes may use this many cores beyond the free ones before a timing is called busy
BUSY_MARGIN = 0.5


@dataclass(frozen=True)
class CpuReading:
    """One reading: CPU seconds busy on the whole machine, CPU seconds of this process, and the wall clock."""

    machine_busy_s: float
    own_s: float
    wall_s: float


def machine_busy_seconds(stat_text: str, ticks_per_second: float) -> float:
    """Busy CPU seconds of all cores together since boot, from the aggregate `cpu` line of /proc/stat."""
    for line in stat_text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            values = [float(v) for v in fields[1:]]
            return sum(values[i] for i in _BUSY_COLUMNS if i < len(values)) / ticks_per_second
    raise ValueError("no aggregate cpu line in /proc/stat")


def read_cpu(stat: Path = Path("/proc/stat")) -> CpuReading | None:
    """The current reading, or None where the machine has no /proc/stat (macOS, Windows)."""
    try:
        busy = machine_busy_seconds(stat.read_text(), os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, AttributeError):
        return None
    times = os.times()
    return CpuReading(busy, times.user + times.system, time.perf_counter())


def other_load(before: CpuReading, after: CpuReading) -> float:
    """Cores other processes kept busy between two readings: the machine's busy CPU time less this process's,
    over the wall time (never below 0: the two clocks tick at different granularities)."""
    wall = after.wall_s - before.wall_s
    if wall <= 0:
        return 0.0
    others = (after.machine_busy_s - before.machine_busy_s) - (after.own_s - before.own_s)
    return max(others / wall, 0.0)


def loadavg_other_load(threads: int) -> float | None:
    """Where /proc/stat is absent: the 1-minute load average less the timing's own threads (a coarse, lagging
    estimate), or None where the system has no load average either."""
    try:
        return max(os.getloadavg()[0] - threads, 0.0)
    except (OSError, AttributeError):
        return None


def is_busy(other: float, cores: int, threads: int) -> bool:
    """Busy when other processes needed more than the cores the timing left free, by over half a core.

    The timing runs `threads` threads on a machine of `cores` logical cores: other processes fit in the remaining
    `cores - threads` cores without slowing it, and beyond that every core's worth of their work is taken from the
    timed threads. Half a core (BUSY_MARGIN) tolerates the background of an ordinary idle machine.
    """
    return other > max(cores - threads, 0) + BUSY_MARGIN


class LoadMeter:
    """Measures the other processes' load between `start()` and `stop()`; `facts()` gives what results record."""

    def __init__(self, cores: int, threads: int):
        self.cores, self.threads = cores, threads
        self._before: CpuReading | None = None
        self.other: float | None = None
        self.method: str | None = None

    def start(self) -> None:
        """Take the first reading (called once the warm-up calls are done)."""
        self._before = read_cpu()

    def stop(self) -> None:
        """Take the second reading and work out the other processes' load."""
        after = read_cpu() if self._before is not None else None
        if self._before is not None and after is not None:
            self.other, self.method = other_load(self._before, after), "/proc/stat"
        else:
            self.other = loadavg_other_load(self.threads)
            self.method = "load average" if self.other is not None else None

    @property
    def busy(self) -> bool:
        """Whether the timing shared its cores (False when the load could not be measured)."""
        return self.other is not None and is_busy(self.other, self.cores, self.threads)

    def facts(self) -> dict[str, Any]:
        """The `load` entry of the results' meta."""
        return {
            "other_cpu_load": None if self.other is None else round(self.other, 2),
            "cores": self.cores,
            "threads": self.threads,
            "busy": self.busy,
            "method": self.method,
        }


def busy_warning(load: dict[str, Any]) -> str:
    """The one-line warning shown under the latency table for a busy machine, from the results' `load` facts."""
    return (
        f"machine busy: other processes used {load['other_cpu_load']:.1f} of {load['cores']} cores while the "
        f"models ran on {load['threads']} thread(s), so times and ratios between models are unreliable; time on an "
        "idle machine or with fewer --threads"
    )
