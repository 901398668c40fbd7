"""Paired significance tests (ranx's Student t-test and Fisher randomization) with multiple-test correction."""

from __future__ import annotations

from collections.abc import Sequence

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
