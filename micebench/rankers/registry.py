"""The registry of model names: families register a class (or a pattern of names), `load_ranker` builds one.

`load_ranker` refuses an option the ranker does not declare, naming the option and the ranker, before any model
loads.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

from micebench.errors import MicebenchError, UnknownNameError
from micebench.fieldtypes import field_types, type_problem
from micebench.rankers.contract import Ranker, RankerOptions


@dataclasses.dataclass(frozen=True)
class _Pattern:
    """A family of model names (e.g. ``mice-l<k>+<m>``): the class and the options a name fixes."""

    matches: Callable[[str], bool]
    cls: type[Ranker]
    fixed: Callable[[str], dict[str, Any]]


_REGISTRY: dict[str, type[Ranker]] = {}
_DESCRIPTIONS: dict[str, str] = {}
_PATTERNS: list[_Pattern] = []
#: modules holding the built-in rankers; imported on first lookup so `import micebench` stays light
_BUILTIN_MODULES = (
    "micebench.rankers.first_stage",
    "micebench.rankers.cross_encoder",
    "micebench.rankers.dense",
    "micebench.rankers.masked",
    "micebench.rankers.mice",
    "micebench.rankers.colbert",
)


def register_ranker(name: str, description: str = "") -> Callable[[type[Ranker]], type[Ranker]]:
    """Class decorator: make a ranker available to `load_ranker` and `--model` under `name`."""

    def decorate(cls: type[Ranker]) -> type[Ranker]:
        _REGISTRY[name] = cls
        _DESCRIPTIONS[name] = description or (cls.__doc__ or "").strip().splitlines()[0]
        return cls

    return decorate


def register_ranker_pattern(
    matches: Callable[[str], bool],
    cls: type[Ranker],
    fixed: Callable[[str], dict[str, Any]],
    descriptions: dict[str, str],
) -> None:
    """Register a family of names: `fixed(name)` gives the options the name sets (``mask2`` -> schedule mask2)."""
    _PATTERNS.append(_Pattern(matches, cls, fixed))
    _DESCRIPTIONS.update(descriptions)


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def resolve_ranker(spec: str) -> tuple[type[Ranker], dict[str, Any]]:
    """The ranker class of a model name and the options the name itself fixes; unknown names are one line."""
    _load_builtins()
    if spec in _REGISTRY:
        return _REGISTRY[spec], {}
    for pattern in _PATTERNS:
        if pattern.matches(spec):
            return pattern.cls, pattern.fixed(spec)
    family = _family_template(spec)
    if family is not None:
        raise UnknownNameError(family)
    known = ", ".join(sorted(_DESCRIPTIONS))
    raise UnknownNameError(f"unknown model {spec!r} (available: {known})")


def _family_template(spec: str) -> str | None:
    """The message for a listed family of names taken literally (`mice-l<k>+<m>`): which numbers to give."""
    import re

    holes = re.findall(r"<([a-z])>", spec)
    if not holes:
        return None
    example = re.sub(r"<[a-z]>", "2", spec)
    if not any(pattern.matches(example) for pattern in _PATTERNS):
        return None
    which = f"{' and '.join(holes)} as whole numbers" if len(holes) > 1 else f"{holes[0]} as a whole number"
    return f"{spec!r} is a family of model names: give {which} (e.g. {example})"


def is_registered(spec: str) -> bool:
    """True when `spec` names a registered ranker or matches a registered name family."""
    try:
        resolve_ranker(spec)
    except UnknownNameError:
        return False
    return True


def available_rankers() -> dict[str, str]:
    """Registered model names with a one-line description."""
    _load_builtins()
    return dict(sorted(_DESCRIPTIONS.items()))


def rankers_with(capability: type) -> list[str]:
    """Registered names (families as registered) whose class has `capability` (Trainable, StoreBacked, ...)."""
    _load_builtins()
    names = [name for name, cls in _REGISTRY.items() if issubclass(cls, capability)]
    return sorted(names)


def example_name(name: str) -> str:
    """A concrete model name for a name as listed (`mice-l<k>+<m>` -> `mice-l1+1`), to resolve its class and options."""
    return name.replace("<k>", "1").replace("<m>", "1")


def abilities(spec: str) -> list[str]:
    """What a model name can do beyond `run`: `train`, `store` (precompute, --precomputed), `latency`."""
    from micebench.rankers.capabilities import Benchmarkable, StoreBacked, Trainable

    cls, _ = resolve_ranker(example_name(spec))
    named = (("train", Trainable), ("store", StoreBacked), ("latency", Benchmarkable))
    return [ability for ability, capability in named if issubclass(cls, capability)]


def option_names(spec: str) -> list[str]:
    """The options a model name takes (fields of its Options dataclass)."""
    cls, _ = resolve_ranker(spec)
    return [f.name for f in dataclasses.fields(cls.Options)]


def declared_options(spec: str, **settings: Any) -> dict[str, Any]:
    """The subset of `settings` that `spec` declares: for callers that pass shared settings (device, dtype,
    checkpoint...) to rankers of several kinds."""
    takes = set(option_names(spec))
    return {k: v for k, v in settings.items() if k in takes}


def option_rows(spec: str) -> list[tuple[str, str, str]]:
    """(flag, default as shown, help) of every option a model declares; a name's own settings are marked as such.
    What `micebench models NAME` prints and the docs' options page lists."""
    cls, fixed = resolve_ranker(spec)
    rows = []
    for f in dataclasses.fields(cls.Options):
        default = f"{fixed[f.name]!r} (set by the name)" if f.name in fixed else repr(f.default)
        rows.append((f"--{f.name.replace('_', '-')}", default, f.metadata.get("help", "")))
    return rows


def accepts_option(spec: str, option: str) -> bool:
    """Whether `spec` declares `option` (callers that pass shared settings to several rankers ask first)."""
    return option in option_names(spec)


def ranker_options(spec: str, **given: Any) -> RankerOptions:
    """Check given options against the declaration of `spec` and build its Options (None means not given).

    An option the ranker does not take, or one that contradicts the model name, is refused in one line.
    """
    cls, fixed = resolve_ranker(spec)
    given = {k: v for k, v in given.items() if v is not None}
    declared = {f.name for f in dataclasses.fields(cls.Options)}
    for key in given:
        if key not in declared:
            takes = ", ".join(f"--{k.replace('_', '-')}" for k in sorted(declared)) or "no options"
            flag = f"--{key.replace('_', '-')}"
            raise MicebenchError(f"option {flag} does not apply to model {spec!r} (it takes {takes})")
    types = field_types(cls.Options)
    for key, value in given.items():
        problem = type_problem(value, types[key])
        if problem:
            raise MicebenchError(f"--{key.replace('_', '-')} {problem}")
    for key, value in fixed.items():
        if key in given and given[key] != value:
            raise MicebenchError(f"--{key.replace('_', '-')} {given[key]} contradicts model name {spec!r}")
    return cls.Options(**{**given, **fixed})


def load_ranker(spec: str, **options: Any) -> Ranker:
    """Build a ranker from its registered name, e.g. ``load_ranker("ce", checkpoint="...", device="cpu")``."""
    cls, _ = resolve_ranker(spec)
    return cls(ranker_options(spec, **options))
