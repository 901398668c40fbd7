"""Re-export: the FLOP arithmetic lives in `micebench.models.flops`, below the rankers that count with it."""

from micebench.models.flops import *  # noqa: F403
from micebench.models.flops import __doc__ as __doc__
