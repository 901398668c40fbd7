"""CUDA out-of-memory back-off for scoring: halve the batch and retry, down to one document."""

from __future__ import annotations

import functools
import gc
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from micebench.errors import MicebenchError, first_line

log = logging.getLogger("micebench")
F = TypeVar("F", bound=Callable[..., Any])

#: messages of allocation failures that arrive as a plain RuntimeError (cuBLAS, cuDNN, the CUDA runtime)
OOM_MESSAGES = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether an exception is a device allocation failure (torch's OutOfMemoryError or a library's message)."""
    import torch

    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and any(message in str(error) for message in OOM_MESSAGES)


def release_memory() -> None:
    """Free what the failed batch held: collect garbage first, then hand cached CUDA blocks back to the driver."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def oom_backoff(method: F) -> F:
    """Decorate a ranker method that uses `self.batch_size`: on CUDA OOM halve it and call again.

    The except block only records the failure: memory is released after it, once the traceback (and with it the
    failed batch's tensors) is gone. The batch size the run ends with is what `describe()` reports (and thus the
    manifest records).
    """

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        while True:
            failure = ""
            try:
                return method(self, *args, **kwargs)
            except RuntimeError as error:
                if not is_out_of_memory(error):
                    raise
                failure = first_line(error)
            release_memory()
            if self.batch_size <= 1:
                raise MicebenchError(f"out of GPU memory even with a batch of one document ({failure})")
            self.batch_size = max(1, self.batch_size // 2)
            self.oom_backoffs = getattr(self, "oom_backoffs", 0) + 1
            log.warning("CUDA out of memory (%s): retrying with batch size %d", failure, self.batch_size)

    return wrapper  # type: ignore[return-value]
