"""Ranker flags generated from the options the built-in families declare (`rankers.options`).

Each field of a family's `Options` dataclass becomes one flag (`max_length` -> `--max-length`) with the field's type
and help; its default stays the ranker's own, so a flag not given is not passed (None) and the ranker decides.
A command gets every declared option except those it owns itself under the same name. The options given reach
the command as one dict (`model_options`), which `load_ranker` checks against the chosen model: an option the
model does not declare is refused in one line, and an option no family declares has no flag.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Collection
from typing import Annotated, Any

import typer

from micebench.fieldtypes import scalar_type
from micebench.rankers.options import BUILTIN_OPTIONS


@dataclasses.dataclass(frozen=True)
class RankerFlag:
    """One declared option as a command-line flag: its field name, type and, per family, default and help."""

    name: str
    kind: type
    takes: dict[str, tuple[Any, str]]  # family -> (default, help)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def help(self) -> str:
        """Which families take it and what it means to each (their fields' help), then the defaults."""
        texts: dict[str, list[str]] = {}
        for family, (_, text) in self.takes.items():
            texts.setdefault(text, []).append(family)
        said = "; ".join(f"{', '.join(families)}: {text}" for text, families in texts.items())
        defaults = {f: d for f, (d, _) in self.takes.items() if d is not None}
        if not defaults:
            return said
        if len(set(map(repr, defaults.values()))) == 1 and len(defaults) == len(self.takes):
            return f"{said}. Default {next(iter(defaults.values()))!r}."
        return f"{said}. Default: " + ", ".join(f"{f} {d!r}" for f, d in defaults.items()) + "."


def declared_flags(families: Collection[str] | None = None) -> list[RankerFlag]:
    """One flag per option name any of `families` (default: every built-in family) declares, in declaration
    order; families that inherit a field (masked-ce from ce) are listed with it."""
    chosen = BUILTIN_OPTIONS if families is None else {f: BUILTIN_OPTIONS[f] for f in families}
    takes: dict[str, dict[str, tuple[Any, str]]] = {}
    kinds: dict[str, type] = {}
    for family, options in chosen.items():
        for f in dataclasses.fields(options):
            takes.setdefault(f.name, {})[family] = (f.default, f.metadata.get("help", ""))
            kinds.setdefault(f.name, scalar_type(f.type))
    return [RankerFlag(name, kinds[name], by_family) for name, by_family in takes.items()]


def _parameter(flag: RankerFlag, required: bool = False) -> inspect.Parameter:
    names = f"{flag.flag}/--no-{flag.flag[2:]}" if flag.kind is bool else flag.flag
    option = typer.Option(names, help=flag.help(), rich_help_panel="Ranker options (from the model's declaration)")
    if required:  # a command that needs the option (convert: the MICE shape)
        return inspect.Parameter(flag.name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[flag.kind, option])
    return inspect.Parameter(
        flag.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[flag.kind | None, option]
    )


def with_ranker_flags(
    *, owned: Collection[str] = (), families: Collection[str] | None = None, required: Collection[str] = ()
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command taking `model_options: dict`: add a flag for every option `families` declare except
    the `owned` ones (the command sets or ignores them), and pass the given ones in that dict; `required` flags
    must be given."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        flags = [f for f in declared_flags(families) if f.name not in set(owned)]
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "model_options"]
        clash = {p.name for p in own} & {f.name for f in flags}
        if clash:
            raise TypeError(f"{command.__name__} has its own {sorted(clash)}: name them in owned=")
        parameters = own + [_parameter(f, f.name in set(required)) for f in flags]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            given = {f.name: kwargs.pop(f.name, None) for f in flags}
            return command(**kwargs, model_options={k: v for k, v in given.items() if v is not None})

        del wrapper.__wrapped__  # typer reads the signature below, not the command's
        wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        wrapper.ranker_flags = flags  # type: ignore[attr-defined]
        wrapper.ranker_families = tuple(BUILTIN_OPTIONS if families is None else families)  # type: ignore[attr-defined]
        return wrapper

    return decorate
