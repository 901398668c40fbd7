"""Where micebench keeps derived files (BM25 indexes); never inside a dataset folder."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "MICEBENCH_CACHE"


def cache_dir(*parts: str) -> Path:
    """A folder under $MICEBENCH_CACHE (default ~/.cache/micebench), created on demand."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "micebench").expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
