"""How far one system's per-query scores differ from another's on the same queries: the mean difference, its 95%
confidence interval and the paired t-test, so that a small difference is read against the queries' noise."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class PairedDifference:
    """`mean` ± `ci95` (Student's t half-width) of the per-query differences, the paired t-test's two-sided `p`."""

    mean: float
    ci95: float
    p: float
    queries: int

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "ci95": self.ci95, "p": self.p, "queries": self.queries}


def paired_difference(
    mine: Mapping[str, float], reference: Mapping[str, float], scale: float = 100.0
) -> PairedDifference:
    """Differences `mine - reference` over the reference's queries (a query `mine` lacks counts 0, as trec_eval -c
    does), times `scale` (100: nDCG points)."""
    from scipy import stats

    diffs = [scale * (mine.get(q, 0.0) - value) for q, value in reference.items()]
    if not diffs:
        return PairedDifference(0.0, 0.0, 1.0, 0)
    mean = statistics.fmean(diffs)
    if len(diffs) < 2 or statistics.pstdev(diffs) == 0:
        return PairedDifference(mean, 0.0, 1.0 if mean == 0 else 0.0, len(diffs))
    spread = statistics.stdev(diffs) / len(diffs) ** 0.5
    half = float(stats.t.ppf(0.975, len(diffs) - 1)) * spread
    p = float(2 * stats.t.sf(abs(mean) / spread, len(diffs) - 1))
    return PairedDifference(mean, half, p, len(diffs))
