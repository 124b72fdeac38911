"""The one rule of what may import what (README, velollm/api/README.md):

    kernels <- engine <- serving (api, proxy, tools, wire, and feature packages) <- commands / cli / LLM
    proxy never imports api; engine imports no serving package; hw imports nothing of velollm.

Every import counts, also the lazy ones inside functions and under TYPE_CHECKING: they are what
makes a layer depend on another. Read from the source (AST), so nothing is imported here.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "velollm"
BASE = {"errors", "config", "outputs", "sampling_params", "output_budget"}  # plain types every layer may use
EDGE = {"commands", "cli", "llm", "__init__", "__main__"}  # the CLI and `velollm.LLM`: may import anything
# Who may import whom (besides itself and BASE). A package not named here is a serving package.
ALLOWED = {
    "hw": set(),
    "kernels": set(),
    "engine": {"kernels", "hw"},
    "wire": set(),
    "tools": {"engine", "wire"},
}
SERVING_MAY_IMPORT = {"engine", "kernels", "hw", "wire", "tools"}


def _top(node_module: str, names: list[str]) -> set[str]:
    """velollm.X.y -> {X}; `from velollm import kernels` -> {kernels}."""
    parts = node_module.split(".")
    if parts[0] != "velollm":
        return set()
    if len(parts) > 1:
        return {parts[1]}
    return set(names)


def import_graph() -> dict[str, dict[str, list[str]]]:
    """package -> imported package -> the files that import it."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        owner = rel.parts[0].removesuffix(".py") if len(rel.parts) == 1 else rel.parts[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            found: set[str] = set()
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found |= _top(alias.name, [])
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found |= _top(node.module, [a.name for a in node.names])
            for target in found - {owner}:
                graph[owner][target].append(str(rel))
    return graph


def _violations(owner: str, imports: dict[str, list[str]]) -> list[str]:
    if owner in EDGE:
        return []
    if owner in BASE:
        allowed = BASE
    elif owner in ALLOWED:
        allowed = ALLOWED[owner] | (set() if owner == "hw" else BASE)
    else:  # a serving package: api, proxy, and the feature packages beside them
        allowed = BASE | SERVING_MAY_IMPORT | {p for p in imports if p not in ALLOWED and p not in EDGE}
        if owner in ("proxy", "router"):
            allowed.discard("api")  # the proxy is a leaf: upstream client + converters; the router sits on it
            allowed.discard("engine")  # --proxy-only / --config without a native backend: no engine, no torch
    return [f"{owner} imports {target} ({', '.join(sorted(set(files)))})"
            for target, files in sorted(imports.items()) if target not in allowed]


def test_layers_import_only_downwards():
    graph = import_graph()
    assert {"api", "engine", "kernels", "proxy", "wire"} <= set(graph)  # the walk did see the package
    bad = [v for owner, imports in sorted(graph.items()) for v in _violations(owner, imports)]
    assert not bad, "\n".join(bad)


def test_hw_imports_nothing_of_velollm():
    bad = _violations("hw", import_graph().get("hw", {}))  # absent from the graph: hw imports only itself
    assert not bad, "\n".join(bad)
    assert _violations("hw", {"engine": ["hw/x.py"]}) == ["hw imports engine (hw/x.py)"]


def test_the_rule_catches_what_it_forbids():
    assert _violations("proxy", {"api": ["proxy/x.py"]}) == ["proxy imports api (proxy/x.py)"]
    assert _violations("engine", {"api": ["engine/x.py"]}) and _violations("engine", {"proxy": ["engine/x.py"]})
    assert _violations("kernels", {"engine": ["kernels/x.py"]})
    assert _violations("wire", {"api": ["wire/x.py"]})
    assert _violations("api", {"commands": ["api/x.py"]})
    assert _violations("hw", {"errors": ["hw/x.py"]})
    assert not _violations("api", {"proxy": ["api/x.py"], "engine": ["api/y.py"], "cache": ["api/z.py"]})
