"""Interaction-removal schedules: which input segments may attend to which, layer by layer (plain data).

A schedule is a list of rules ``{from: [segments], to: [segments], layers: [start, end)}``; each rule removes
attention from the `from` segments to the `to` segments in the given layers. Segments of a cross-encoder input
``[CLS] query [SEP] document [SEP]`` are `cls`, `query`, `sep1`, `document`, `sep2`; padding is always masked.
No torch here: schedules are configuration, saved in manifests and checkpoints.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from micebench.errors import MicebenchError, not_found

SEGMENTS: tuple[str, ...] = ("cls", "query", "sep1", "document", "sep2")
SEGMENT_INDEX = {name: i for i, name in enumerate(SEGMENTS)}
QUERY_SIDE = ("cls", "query", "sep1")
DOCUMENT_SIDE = ("document", "sep2")


class ScheduleError(MicebenchError):
    """An invalid schedule (unknown segment, impossible layer range, a segment left with nothing to attend)."""


def _segments(names: Iterable[str], where: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in names if n.strip())
    if not names:
        raise ScheduleError(f"{where}: empty segment list")
    for name in names:
        if name not in SEGMENT_INDEX:
            raise ScheduleError(f"{where}: unknown segment {name!r} (segments: {', '.join(SEGMENTS)})")
    return names


@dataclass(frozen=True)
class Rule:
    """Remove attention from `src` segments to `dst` segments in layers [start, end) (end None = to the top)."""

    src: tuple[str, ...]
    dst: tuple[str, ...]
    start: int = 0
    end: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "src", _segments(self.src, "rule 'from'"))
        object.__setattr__(self, "dst", _segments(self.dst, "rule 'to'"))
        if self.start < 0 or (self.end is not None and self.end <= self.start):
            raise ScheduleError(f"rule {self.compact()}: empty or negative layer range")

    def applies(self, layer: int) -> bool:
        return self.start <= layer and (self.end is None or layer < self.end)

    def compact(self) -> str:
        """The rule in the command-line syntax, e.g. ``query>document@0-4``."""
        layers = (
            "" if (self.start == 0 and self.end is None) else f"@{self.start}-{'' if self.end is None else self.end}"
        )
        return f"{','.join(self.src)}>{','.join(self.dst)}{layers}"

    def as_dict(self) -> dict[str, Any]:
        return {"from": list(self.src), "to": list(self.dst), "layers": [self.start, self.end]}


@dataclass(frozen=True)
class Schedule:
    """An ordered set of removal rules; the empty schedule is the full cross-encoder."""

    name: str
    rules: tuple[Rule, ...] = field(default_factory=tuple)

    def blocked(self, layer: int) -> np.ndarray:
        """5x5 boolean matrix for one layer: blocked[from, to] is True when that attention is removed."""
        grid = np.zeros((len(SEGMENTS), len(SEGMENTS)), dtype=bool)
        for rule in self.rules:
            if rule.applies(layer):
                for s in rule.src:
                    for d in rule.dst:
                        grid[SEGMENT_INDEX[s], SEGMENT_INDEX[d]] = True
        return grid

    def layer_groups(self, num_layers: int) -> list[tuple[int, int, np.ndarray]]:
        """Consecutive layers sharing the same pattern, as (start, end, blocked) triples."""
        groups: list[tuple[int, int, np.ndarray]] = []
        for layer in range(num_layers):
            grid = self.blocked(layer)
            if groups and np.array_equal(groups[-1][2], grid):
                groups[-1] = (groups[-1][0], layer + 1, grid)
            else:
                groups.append((layer, layer + 1, grid))
        return groups

    def validate(self, num_layers: int) -> Schedule:
        """Check the schedule against a model depth; returns itself so calls can chain."""
        for rule in self.rules:
            if rule.start >= num_layers or (rule.end is not None and rule.end > num_layers):
                raise ScheduleError(
                    f"schedule {self.name!r}: rule {rule.compact()} reaches beyond the model's {num_layers} layers"
                )
        for start, end, grid in self.layer_groups(num_layers):
            for i, segment in enumerate(SEGMENTS):
                if grid[i].all():
                    raise ScheduleError(
                        f"schedule {self.name!r}: segment {segment!r} attends to nothing in layers {start}-{end - 1}"
                    )
        return self

    def compact(self) -> str:
        return ";".join(rule.compact() for rule in self.rules) or "none"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "rules": [rule.as_dict() for rule in self.rules]}

    @classmethod
    def from_dict(cls, data: dict[str, Any], name: str | None = None) -> Schedule:
        """Build from ``{"name": ..., "rules": [{"from": [...], "to": [...], "layers": [s, e]}]}``; every key and
        type is checked (an unknown key or a wrong type is one line, never an empty or half-read schedule)."""
        unknown = sorted(set(data) - {"name", "rules"})
        if unknown:
            raise ScheduleError(f"unknown schedule key(s) {unknown} (a schedule has 'name' and 'rules')")
        if "name" in data and not isinstance(data["name"], str):
            raise ScheduleError(f"schedule 'name' must be a string (got {data['name']!r})")
        if not isinstance(data.get("rules", []), list):
            raise ScheduleError(f"schedule 'rules' must be a list of rules (got {data['rules']!r})")
        rules = []
        for i, rule in enumerate(data.get("rules", [])):
            if not isinstance(rule, dict) or "from" not in rule or "to" not in rule:
                raise ScheduleError(f"rule {i}: needs 'from' and 'to' lists")
            extra = sorted(set(rule) - {"from", "to", "layers"})
            if extra:
                raise ScheduleError(f"rule {i}: unknown key(s) {extra} (a rule has 'from', 'to' and 'layers')")
            layers = rule.get("layers") or [0, None]
            if not isinstance(layers, (list, tuple)) or len(layers) != 2:
                raise ScheduleError(f"rule {i}: 'layers' must be [start, end)")
            if any(x is not None and (isinstance(x, bool) or not isinstance(x, int)) for x in layers):
                raise ScheduleError(f"rule {i}: 'layers' must be two whole numbers [start, end) (got {layers!r})")
            for key in ("from", "to"):
                value = rule[key]
                if not isinstance(value, str) and not (
                    isinstance(value, list) and value and all(isinstance(x, str) for x in value)
                ):
                    raise ScheduleError(f"rule {i}: '{key}' must be a segment name or a list of them (got {value!r})")
            src = [rule["from"]] if isinstance(rule["from"], str) else rule["from"]
            dst = [rule["to"]] if isinstance(rule["to"], str) else rule["to"]
            rules.append(
                Rule(tuple(src), tuple(dst), int(layers[0] or 0), None if layers[1] is None else int(layers[1]))
            )
        return cls(name or str(data.get("name", "custom")), tuple(rules))


# -- presets ----------------------------------------------------------------------------------------------

_NOT_CLS = ("query", "sep1", "document", "sep2")
MASK0_RULES = (
    Rule(_NOT_CLS, ("cls",)),  # nobody but cls attends to cls
    Rule(("document",), ("sep1",)),
    Rule(("query",), ("sep2",)),
    Rule(("sep1",), ("cls", "query", "document", "sep2")),  # separators attend to themselves only
    Rule(("sep2",), ("cls", "query", "sep1", "document")),
)
MASK1_RULES = (*MASK0_RULES, Rule(("cls",), ("document", "sep2")))
MASK2_RULES = (*MASK1_RULES, Rule(("document",), ("query",)))

PRESET_HELP = {
    "none": "full attention (the plain cross-encoder)",
    "mask0": "nobody but cls attends to cls; document-/>sep1; query-/>sep2; separators attend only to themselves",
    "mask1": "mask0 + cls does not attend to document or sep2",
    "mask2": "mask1 + document does not attend to query",
    "mask3-l<k>": "mask2 + query does not attend to document in layers 0..k-1",
    "prettr-l<k>": "query side (cls, query, sep1) and document side (document, sep2) apart in layers 0..k-1",
}
_LAYERED = re.compile(r"^(mask3|prettr)-l(\d+)$")


def is_preset(name: str) -> bool:
    return name in ("none", "full", "mask0", "mask1", "mask2") or bool(_LAYERED.match(name))


def preset(name: str) -> Schedule:
    """A named preset: none, mask0, mask1, mask2, mask3-l<k>, prettr-l<k>."""
    fixed = {"none": (), "full": (), "mask0": MASK0_RULES, "mask1": MASK1_RULES, "mask2": MASK2_RULES}
    if name in fixed:
        return Schedule(name, fixed[name])
    match = _LAYERED.match(name)
    if not match:
        raise ScheduleError(f"unknown schedule preset {name!r} (presets: {', '.join(PRESET_HELP)})")
    kind, k = match.group(1), int(match.group(2))
    if k < 1:
        raise ScheduleError(f"schedule {name!r}: k must be at least 1")
    if kind == "mask3":
        return Schedule(name, (*MASK2_RULES, Rule(("query",), ("document",), 0, k)))
    return Schedule(name, (Rule(QUERY_SIDE, DOCUMENT_SIDE, 0, k), Rule(DOCUMENT_SIDE, QUERY_SIDE, 0, k)))


_RULE = re.compile(r"^(?P<src>[a-z0-9_,\s]+)>(?P<dst>[a-z0-9_,\s]+)(@(?P<start>\d+)-(?P<end>\d*))?$")


def parse_schedule(spec: str | Path) -> Schedule:
    """A preset name, a TOML/YAML file, or a compact string like ``mask1;document>query@0-4``."""
    text = str(spec).strip()
    path = Path(text).expanduser()
    if text.endswith((".toml", ".yaml", ".yml", ".json")):
        return load_schedule_file(path)
    if is_preset(text):
        return preset(text)
    rules: list[Rule] = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        if is_preset(part):
            rules.extend(preset(part).rules)
            continue
        match = _RULE.match(part)
        if not match:
            raise ScheduleError(f"cannot parse schedule rule {part!r} (expected from>to[@start-end] or a preset)")
        end = match.group("end")
        rules.append(
            Rule(
                tuple(match.group("src").split(",")),
                tuple(match.group("dst").split(",")),
                int(match.group("start") or 0),
                int(end) if end else None,
            )
        )
    if not rules:
        raise ScheduleError(f"empty schedule {text!r}")
    return Schedule(text, tuple(rules))


def load_schedule_file(path: Path) -> Schedule:
    """Read a schedule from TOML (``[[rules]] from=[...] to=[...] layers=[0, 4]``), YAML or JSON."""
    if not path.is_file():
        raise ScheduleError(not_found("schedule file", path))
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(path.read_text())
        elif path.suffix == ".json":
            import json

            data = json.loads(path.read_text())
        else:
            import yaml

            data = yaml.safe_load(path.read_text())
    except Exception as err:  # parse errors of three libraries
        raise ScheduleError(f"{path}: cannot parse schedule ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise ScheduleError(f"{path}: a schedule file holds a table with a 'rules' list")
    try:
        return Schedule.from_dict(data, name=data.get("name") or path.stem)
    except ScheduleError as err:
        raise ScheduleError(f"{path}: {err}") from None


def render_grid(blocked: np.ndarray, segments: Sequence[str] = SEGMENTS) -> list[list[str]]:
    """Rows of a from x to grid: '✓' attends, '·' removed."""
    return [["·" if blocked[i, j] else "✓" for j in range(len(segments))] for i in range(len(segments))]
