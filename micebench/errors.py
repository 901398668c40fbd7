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


def not_found(what: str, path: object) -> str:
    """The one-line message of a path that cannot be opened: a symbolic link in a loop or pointing nowhere is named
    as such (both look like a missing file to `Path.is_file`), anything else is `WHAT not found: PATH`."""
    import errno
    import os
    from pathlib import Path

    target = Path(str(path))
    try:
        os.stat(target)
    except OSError as err:
        if err.errno == errno.ELOOP:  # the link in the loop: the path itself or a folder above it
            links = [p for p in (*reversed(target.parents), target) if p.is_symlink()]
            loop = next((p for p in links if _loops(p)), target)
            points = f"points to {os.readlink(loop)!r}" if loop.is_symlink() else "is in the loop"
            if loop == target:
                return f"{what} {target} is a symbolic link in a loop (it {points})"
            return f"{what} {target} lies under a symbolic link in a loop: {loop} {points}"
        if target.is_symlink():
            return f"{what} {target} is a symbolic link to {os.readlink(target)!r}, which does not exist"
    except ValueError:  # a NUL byte in the name
        pass
    return f"{what} not found: {path}"


def _loops(path: object) -> bool:
    import errno
    import os

    try:
        os.stat(str(path))
    except OSError as err:
        return err.errno == errno.ELOOP
    return False
