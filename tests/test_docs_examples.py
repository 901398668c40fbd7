"""Every command example in README.md and docs/ runs offline, or says why it cannot; Python examples are doctests.

A shell block is preceded by a marker comment: `<!-- example: runnable -->` (run here, offline, on the local
mirror and the packaged model), `<!-- example: runnable slow -->` (the same, marked slow), or
`<!-- example: network -->` / `<!-- example: gpu -->` (needs what its name says; not run), or
`<!-- example: setup -->` (README's `make demo` / `make test`, which install; CI runs `make test` itself). A page's
runnable blocks run in order, in one fresh temporary folder, so a later block may use what an earlier one wrote.
"""

from __future__ import annotations

import doctest
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)
MARKER = re.compile(r"<!--\s*example:\s*(?P<kind>[\w ]+?)\s*-->\s*$")
SHELL = {"bash", "sh", "shell", "console"}
KINDS = {"runnable", "runnable slow", "network", "gpu", "setup"}


def shell_blocks(page: Path) -> list[tuple[str, str, int]]:
    """(kind, body, line) of every shell block of a page; kind is "" when the block has no marker."""
    text = page.read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        if match.group("lang") not in SHELL:
            continue
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.search(before)
        body = "\n".join(line[len(match.group("indent")) :] for line in match.group("body").splitlines())
        blocks.append((marker.group("kind") if marker else "", body, text[: match.start()].count("\n") + 1))
    return blocks


def test_every_shell_block_is_marked():
    unmarked = [
        f"{page.relative_to(ROOT)}:{line}: {kind or 'no marker'}"
        for page in PAGES
        for kind, _, line in shell_blocks(page)
        if kind not in KINDS
    ]
    assert not unmarked, "shell blocks without a valid <!-- example: ... --> marker:\n" + "\n".join(unmarked)


def _runnable_pages() -> list:
    params = []
    for page in PAGES:
        kinds = [kind for kind, _, _ in shell_blocks(page) if kind.startswith("runnable")]
        if kinds:
            marks = [pytest.mark.slow] if "runnable slow" in kinds else []
            params.append(pytest.param(page, id=str(page.relative_to(ROOT)), marks=marks))
    return params


@pytest.mark.parametrize("page", _runnable_pages())
def test_runnable_examples_run_offline(page: Path, tmp_path: Path, data_dir: Path):
    runnable = [(body, line) for kind, body, line in shell_blocks(page) if kind.startswith("runnable")]
    script = "set -euo pipefail\n" + "\n".join(f"echo '--- {page.name}:{line}'\n{body}" for body, line in runnable)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "MICEBENCH_DATA": str(data_dir),
        "MICEBENCH_CACHE": str(tmp_path / ".cache"),
        "IR_DATASETS_HOME": str(tmp_path / ".irds"),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    (tmp_path / "benchmarks").symlink_to(ROOT / "benchmarks")  # examples that run the project's scripts
    done = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert done.returncode == 0, f"{page.name}: examples failed\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def _doctest_pages() -> list[Path]:
    return [p for p in PAGES if ">>> " in p.read_text(encoding="utf-8")]


@pytest.mark.parametrize("page", _doctest_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_python_examples_are_doctests(page: Path, data_dir: Path, monkeypatch, tmp_path):
    if "import pyterrier" in page.read_text(encoding="utf-8"):
        pytest.importorskip("pyterrier", reason="the optional extra micebench[pyterrier] is not installed")
    monkeypatch.setenv("MICEBENCH_DATA", str(data_dir))
    monkeypatch.setenv("MICEBENCH_CACHE", str(tmp_path / ".cache"))
    monkeypatch.chdir(tmp_path)
    failures, tried = doctest.testfile(
        str(page), module_relative=False, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert tried > 0 and failures == 0
