"""CUDA out-of-memory back-off for scoring: halve the batch and retry, down to one document."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from micebench.errors import MicebenchError

log = logging.getLogger("micebench")
F = TypeVar("F", bound=Callable[..., Any])


def oom_backoff(method: F) -> F:
    """Decorate a ranker method that uses `self.batch_size`: on CUDA OOM halve it and call again.

    The batch size the run ends with is what `describe()` reports (and thus the manifest records).
    """

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        import torch

        while True:
            try:
                return method(self, *args, **kwargs)
            except torch.cuda.OutOfMemoryError:
                if self.batch_size <= 1:
                    raise MicebenchError("out of GPU memory even with a batch of one document") from None
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                self.batch_size = max(1, self.batch_size // 2)
                self.oom_backoffs = getattr(self, "oom_backoffs", 0) + 1
                log.warning("CUDA out of memory: retrying with batch size %d", self.batch_size)

    return wrapper  # type: ignore[return-value]
