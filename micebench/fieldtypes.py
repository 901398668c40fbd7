"""Values checked against a dataclass field's annotation (`int | None`, `list[str]`, ...), for options and
experiment-file keys that come from TOML or Python callers rather than the typed command line."""

from __future__ import annotations

import dataclasses
from typing import Any

#: the scalar types an annotation may name; an int is accepted where a float is, a bool never as a number
_SCALARS: dict[str, type] = {"int": int, "str": str, "bool": bool, "float": float, "None": type(None)}


def _fits(value: Any, part: str) -> bool | None:
    """Whether `value` fits one alternative of an annotation (None: an alternative this check does not read)."""
    if part.startswith("list[") and part.endswith("]"):
        inner = part[5:-1].strip()
        return isinstance(value, list) and all(_fits(item, inner) is not False for item in value)
    kind = _SCALARS.get(part)
    if kind is None:
        return None
    if isinstance(value, bool) and kind is not bool:
        return False
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


def scalar_type(annotation: Any) -> type:
    """The one scalar type a command-line flag parses for an annotation (`int | None` -> int; bool before int, since
    a bool is an int; any other alternative, e.g. a schedule object, is given as its string form)."""
    parts = {p.strip() for p in str(annotation).split("|")}
    for name in ("bool", "int", "float"):
        if name in parts:
            return _SCALARS[name]
    return str


def type_problem(value: Any, annotation: Any) -> str | None:
    """What is wrong with `value` for `annotation` ("must be int or None (got 'two')"), or None when it fits or
    the annotation is not one this check reads."""
    parts = [p.strip() for p in str(annotation).split("|")]
    verdicts = [_fits(value, p) for p in parts]
    if any(v is not False for v in verdicts):
        return None
    wanted = " or ".join("a whole number" if p == "int" else "a number" if p == "float" else p for p in parts)
    return f"must be {wanted} (got {value!r})"


def field_types(cls: type) -> dict[str, Any]:
    """Field name -> annotation of a dataclass."""
    return {f.name: f.type for f in dataclasses.fields(cls)}
