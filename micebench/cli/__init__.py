"""The `micebench` command line: one module per command group, each a thin layer that parses options, calls the
library and renders with rich. Ranker flags are generated from the rankers' declared options (`cli.flags`)."""

from __future__ import annotations

import importlib

from micebench.cli.app import GUIDES, app, datasets_app, guide
from micebench.cli.entry import interrupted_message, main, say_error

#: the command modules, each registering its commands on `app` when imported; `micebench --help` lists the commands
#: in this order, then the `datasets` group
COMMAND_MODULES = ("run", "report", "data", "models", "store", "latency", "train")
for _module in COMMAND_MODULES:
    importlib.import_module(f"micebench.cli.{_module}")

__all__ = ["GUIDES", "app", "datasets_app", "guide", "interrupted_message", "main", "say_error"]
