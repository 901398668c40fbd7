"""Schedules as data: presets exactly as in the paper, parsing, files and validation."""

from __future__ import annotations

import pytest

from micebench.schedules import SEGMENTS, ScheduleError, parse_schedule, preset

ALL = set(SEGMENTS)


def removed(schedule, layer=0) -> set[tuple[str, str]]:
    grid = schedule.blocked(layer)
    return {(SEGMENTS[i], SEGMENTS[j]) for i in range(5) for j in range(5) if grid[i, j]}


# The paper's table, written out pair by pair.
MASK0 = (
    {(s, "cls") for s in ALL - {"cls"}}
    | {("document", "sep1"), ("query", "sep2")}
    | {("sep1", t) for t in ALL - {"sep1"}}
    | {("sep2", t) for t in ALL - {"sep2"}}
)
MASK1 = MASK0 | {("cls", "document"), ("cls", "sep2")}
MASK2 = MASK1 | {("document", "query")}


def test_cumulative_presets_match_the_paper():
    assert removed(preset("none")) == set()
    assert removed(preset("mask0")) == MASK0
    assert removed(preset("mask1")) == MASK1
    assert removed(preset("mask2")) == MASK2
    mask3 = preset("mask3-l4")
    assert all(removed(mask3, layer) == MASK2 | {("query", "document")} for layer in range(4))
    assert all(removed(mask3, layer) == MASK2 for layer in range(4, 12))


def test_prettr_separates_the_two_sides_below_k():
    prettr = preset("prettr-l3")
    query_side, doc_side = {"cls", "query", "sep1"}, {"document", "sep2"}
    expected = {(a, b) for a in query_side for b in doc_side} | {(a, b) for a in doc_side for b in query_side}
    assert removed(prettr, 2) == expected
    assert removed(prettr, 3) == set()
    assert [(s, e) for s, e, _ in prettr.layer_groups(6)] == [(0, 3), (3, 6)]


def test_compact_strings_and_round_trip():
    schedule = parse_schedule("mask1; document>query@0-4")
    assert removed(schedule, 0) == MASK2 and removed(schedule, 4) == MASK1
    again = parse_schedule(schedule.compact())
    assert all((again.blocked(layer) == schedule.blocked(layer)).all() for layer in range(6))
    open_ended = parse_schedule("query>document@2-")
    assert removed(open_ended, 1) == set() and removed(open_ended, 11) == {("query", "document")}


def test_schedule_files(tmp_path):
    toml = tmp_path / "mine.toml"
    toml.write_text('name = "mine"\n[[rules]]\nfrom = ["cls"]\nto = ["document", "sep2"]\nlayers = [0, 2]\n')
    yaml = tmp_path / "mine.yaml"
    yaml.write_text("rules:\n  - from: [cls]\n    to: [document, sep2]\n    layers: [0, 2]\n")
    for path in (toml, yaml):
        schedule = parse_schedule(str(path))
        assert removed(schedule, 1) == {("cls", "document"), ("cls", "sep2")} and removed(schedule, 2) == set()
    assert parse_schedule(str(toml)).name == "mine"


@pytest.mark.parametrize(
    ("spec", "layers", "message"),
    [
        ("query>title", 6, "unknown segment 'title'"),
        ("mask3-l8", 6, "reaches beyond the model's 6 layers"),
        ("query>document@4-9", 6, "reaches beyond"),
        ("query>cls,query,sep1,document,sep2", 6, "segment 'query' attends to nothing in layers 0-5"),
        ("mask0;sep1>sep1@1-2", 6, "segment 'sep1' attends to nothing in layers 1-1"),
        ("query>document@3-1", 6, "empty or negative layer range"),
        ("query->document", 6, "cannot parse schedule rule"),
        ("mask9", 6, "cannot parse schedule rule"),
    ],
)
def test_invalid_schedules_are_refused(spec, layers, message):
    with pytest.raises(ScheduleError, match=message):
        parse_schedule(spec).validate(layers)


def test_missing_schedule_file(tmp_path):
    with pytest.raises(ScheduleError, match="schedule file not found"):
        parse_schedule(str(tmp_path / "absent.toml"))
