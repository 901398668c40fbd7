"""Rich progress bars shared by indexing, encoding and re-ranking (quiet when not on a terminal)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


class _Bar:
    def __init__(self, progress: Progress | None, task: int | None):
        self._progress = progress
        self._task = task

    def advance(self, n: int = 1) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, n)

    def describe(self, text: str) -> None:
        """Change the bar's description (e.g. the running loss); printed as a log line without a terminal."""
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=text)
        else:
            print(text, file=sys.stderr, flush=True)


@contextmanager
def progress_bar(description: str, total: int | None = None, unit: str = "items") -> Iterator[_Bar]:
    """A transient rich progress bar on stderr; a no-op when stderr is not a terminal (logs, tests)."""
    if not sys.stderr.isatty():
        yield _Bar(None, None)
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield _Bar(progress, task)
