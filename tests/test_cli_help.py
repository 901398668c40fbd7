"""Every command's help points to its guide, and every numeric option's help says its range."""

from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path

import typer

from micebench.cli import GUIDES, app, datasets_app

ROOT = Path(__file__).resolve().parent.parent
#: how a help text states a range: ">= 1", "> 0", "in (0, 1)", "2 to the model's positions", "1 <= k < ...", "integer"
RANGE = re.compile(r">=|<=|> 0|\(0, 1\)|\d+ to \S|\binteger\b")


def _commands() -> list[tuple[str, typing.Any, str | None]]:
    commands = [(c.name or c.callback.__name__, c.callback, c.epilog) for c in app.registered_commands]
    commands += [(f"datasets {c.name}", c.callback, datasets_app.info.epilog) for c in datasets_app.registered_commands]
    return commands


def test_every_command_names_an_existing_guide():
    names = {name.split()[0] for name, _, _ in _commands()}
    assert names <= set(GUIDES), f"commands without a guide: {sorted(names - set(GUIDES))}"
    for name, _, epilog in _commands():
        pages = re.findall(r"docs/guides/[\w-]+\.md", epilog or "")
        assert pages, f"{name}: no guide in its help"
        assert all((ROOT / page).is_file() for page in pages), f"{name}: {pages}"


def test_every_numeric_option_states_its_range():
    vague = []
    for name, callback, _ in _commands():
        hints = typing.get_type_hints(callback, include_extras=True)
        for parameter in inspect.signature(callback).parameters:
            hint = hints.get(parameter)
            infos = [m for m in getattr(hint, "__metadata__", ()) if isinstance(m, typer.models.ParameterInfo)]
            kinds = set(typing.get_args(typing.get_args(hint)[0])) | {typing.get_args(hint)[0]} if infos else set()
            if infos and kinds & {int, float} and not RANGE.search(infos[0].help or ""):
                vague.append(f"{name} --{parameter.replace('_', '-')}: {infos[0].help!r}")
    assert not vague, "numeric options whose help gives no range:\n" + "\n".join(vague)
