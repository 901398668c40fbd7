"""Paired significance tests (ranx's Student t-test and Fisher randomization) with multiple-test correction, and
the paired difference of two systems with its confidence interval."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from micebench.errors import MicebenchError

TESTS = ("student", "fisher")
CORRECTIONS = ("holm", "bonferroni", "none")


def paired_p_value(control: Sequence[float], treatment: Sequence[float], test: str = "student") -> float:
    """Two-sided p-value of a paired test over per-query values (same queries, same order)."""
    a, b = np.asarray(control, dtype=np.float64), np.asarray(treatment, dtype=np.float64)
    if a.shape != b.shape or a.size < 2:
        raise MicebenchError("a paired test needs the same (at least two) queries for both systems")
    if np.array_equal(a, b):
        return 1.0
    if test == "student":
        from ranx.statistical_tests import paired_student_t_test

        return float(paired_student_t_test(a, b)[0])
    if test == "fisher":
        from ranx.statistical_tests import fisher_randomization_test

        return float(fisher_randomization_test(a, b, 10_000, 0.05, 42)[0])
    raise MicebenchError(f"unknown test {test!r} (use {', '.join(TESTS)})")


@dataclass(frozen=True)
class PairedDifference:
    """`mean` ± `ci95` (Student's t half-width) of the per-query differences, the paired t-test's two-sided `p`."""

    mean: float
    ci95: float
    p: float
    queries: int


def paired_difference(
    mine: Mapping[str, float], reference: Mapping[str, float], scale: float = 100.0
) -> PairedDifference:
    """How far `mine` lies from `reference` on the reference's queries, read against the queries' noise: the
    differences `mine - reference` times `scale` (100: nDCG points; a query `mine` lacks counts 0, as trec_eval -c
    does), their mean, the 95% confidence interval of the mean, and `paired_p_value`'s Student t-test."""
    from scipy import stats

    a = np.asarray(list(reference.values()), dtype=np.float64)
    b = np.asarray([mine.get(q, 0.0) for q in reference], dtype=np.float64)
    diffs = scale * (b - a)
    if diffs.size == 0:
        return PairedDifference(0.0, 0.0, 1.0, 0)
    mean = float(diffs.mean())
    if diffs.size < 2 or not diffs.std() > 0:  # no spread: the interval is empty, the test undefined
        return PairedDifference(mean, 0.0, 1.0 if mean == 0 else 0.0, int(diffs.size))
    half = float(stats.t.ppf(0.975, diffs.size - 1) * diffs.std(ddof=1) / np.sqrt(diffs.size))
    return PairedDifference(mean, half, paired_p_value(a, b), int(diffs.size))


def correct(p_values: Sequence[float], method: str = "holm") -> np.ndarray:
    """Adjusted p-values (family = the given list): Holm's step-down, Bonferroni, or none."""
    p = np.asarray(p_values, dtype=np.float64)
    if method == "none":
        return p.copy()
    m = len(p)
    if method == "bonferroni":
        return np.minimum(p * m, 1.0)
    if method == "holm":
        order = np.argsort(p, kind="stable")
        adjusted = np.empty(m)
        running = 0.0
        for rank, i in enumerate(order):
            running = max(running, min(1.0, (m - rank) * p[i]))
            adjusted[i] = running
        return adjusted
    raise MicebenchError(f"unknown correction {method!r} (use {', '.join(CORRECTIONS)})")
