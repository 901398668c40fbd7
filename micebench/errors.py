"""User-facing errors: the CLI prints them as one line and exits non-zero."""

from __future__ import annotations


class MicebenchError(Exception):
    """A problem with the user's input or environment, reported as one line without a traceback."""


class DataError(MicebenchError):
    """Malformed or inconsistent data (qrels, runs, corpus, queries)."""


class UnknownNameError(MicebenchError):
    """A model, dataset or first-stage name that does not resolve."""


class EnvironmentFault(MicebenchError):
    """A fault of the machine rather than of the input (a read-only or full disk, ...); the CLI exits with 1."""


class TrainingDiverged(EnvironmentFault):
    """A training run whose loss became non-finite on valid input: the run failed, not the input (exit 1)."""


def first_line(error: BaseException) -> str:
    """The first non-blank line of an error's message, or its type's name when the message is empty."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
