"""The package layout as a rule: every import of `micebench/` (module level or inside a function) goes to the same
layer or one below it, and no modules import each other in a cycle. The layers are those of docs/ARCHITECTURE.md."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent / "micebench"

#: module prefixes, lowest layer first; a module belongs to the layer of its longest matching prefix
LAYERS: list[tuple[str, ...]] = [
    # 0. foundations: errors, atomic writes, caches, progress bars, schedule syntax, field types of options
    (
        "micebench.errors",
        "micebench.atomic",
        "micebench.cache",
        "micebench.progress",
        "micebench.schedules",
        "micebench.fieldtypes",
    ),
    # 1. data: collections, TREC files, evaluation, result-folder format, run progress
    ("micebench.data", "micebench.evaluation", "micebench.results", "micebench.runstate"),
    # 2. first stages and candidate frames
    ("micebench.firststage", "micebench.frames"),
    # 3. models: loading, precision, batching, FLOP arithmetic, MICE and masking modules
    ("micebench.models",),
    # 4. the document store's format: manifest, index, shards, writer, reader
    ("micebench.store",),
    # 5. rankers: contract, model base, capabilities, registry, families
    ("micebench.rankers",),
    # 6. what runs rankers: pipeline, precompute, training, latency, attention analysis, experiments, suites
    (
        "micebench.pipeline",
        "micebench.store.precompute",
        "micebench.training",
        "micebench.latency",
        "micebench.analysis",
        "micebench.experiments",
        "micebench.suites",
    ),
    # 7. reports over finished results
    ("micebench.report",),
    # 8. the command line, the PyTerrier adapter and the package's public face
    ("micebench.cli", "micebench.__main__", "micebench.pyterrier", "micebench"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    best, layer = -1, -1
    for number, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, layer = len(prefix), number
    assert layer >= 0, f"{module} is in no layer: add it to LAYERS and docs/ARCHITECTURE.md"
    return layer


def import_graph() -> nx.DiGraph:
    """Module -> the micebench modules it imports (a `from package import name` counts the submodule `name`)."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph = nx.DiGraph()
    for name, path in modules.items():
        graph.add_node(name)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("micebench"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    graph.add_edge(name, sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                graph.add_edges_from((name, a.name) for a in node.names if a.name.startswith("micebench"))
    graph.remove_edges_from(nx.selfloop_edges(graph))
    return graph


def test_no_module_imports_a_higher_layer():
    upward = [
        f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
        for a, b in import_graph().edges
        if layer_of(b) > layer_of(a)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    cycles = [" -> ".join([*c, c[0]]) for c in nx.simple_cycles(import_graph())]
    assert not cycles, "\n".join(cycles)


def test_the_check_sees_an_upward_import_and_a_cycle(monkeypatch):
    graph = nx.DiGraph([("micebench.models.hf", "micebench.rankers.contract"), ("a", "b"), ("b", "a")])
    assert layer_of("micebench.rankers.contract") > layer_of("micebench.models.hf")
    assert list(nx.simple_cycles(graph.subgraph(["a", "b"])))
