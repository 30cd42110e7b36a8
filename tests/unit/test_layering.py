"""The package's layering, read from the source: the config package is a leaf, modules import no
private names of other modules, every import (at module level or inside a function, where a lazy
import can hide a cycle) goes to the same or a lower layer of :data:`LAYERS` and closes no cycle,
and the stage table and the stage choice list agree."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "textrl"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path, top_level_only: bool = True):
    """``(module imported, names imported)`` for each textrl import of the file at ``path``:
    ``from textrl.stages import sft`` resolves to the submodule ``textrl.stages.sft``."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("textrl"):
                    yield alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("textrl"):
            names = [a.name for a in node.names]
            subs = [f"{node.module}.{n}" for n in names if f"{node.module}.{n}" in MODULES]
            yield from ((s, []) for s in subs)
            rest = [n for n in names if f"{node.module}.{n}" not in MODULES]
            if rest:
                yield node.module, rest


def test_the_config_package_imports_no_model_env_or_stage_code():
    for name, path in MODULES.items():
        if name.startswith("textrl.config"):
            for module, _ in imports(path, top_level_only=False):
                assert module.startswith("textrl.config") or module == "textrl.errors", (name, module)


def test_no_module_imports_a_private_name_of_another():
    for name, path in MODULES.items():
        for module, names in imports(path, top_level_only=False):
            private = [n for n in names if n.startswith("_")]
            assert not private, f"{name} imports {private} from {module}"


FACADE = "textrl"
"""The public API (``textrl/__init__.py``): above every layer, imported by none of them."""

LAYERS = (
    (
        "foundation",
        (
            "textrl.errors",
            "textrl.config",
            "textrl.io",
            "textrl.hookspecs",
            "textrl.metrics",
            "textrl.devices",
            "textrl.distributed",
            "textrl.precision",
            "textrl.signals",
            "textrl.data",
            "textrl.data_sources",
            "textrl.checkpoint",
            "textrl.report",
        ),
    ),
    ("data and models", ("textrl.prompts", "textrl.training_examples", "textrl.policies", "textrl.sharding")),
    ("components", ("textrl.envs", "textrl.interactions", "textrl.rewards", "textrl.tasks", "textrl.loggers")),
    ("rollout", ("textrl.rollout",)),
    ("algorithms", ("textrl.algorithms",)),
    ("stages", ("textrl.stages",)),
    ("entry points", ("textrl.plugins", "textrl.run", "textrl.cli", "textrl.__main__", "textrl.reference")),
)
"""Lowest first: a module may import modules of its own layer or a lower one, never a higher one.
A prefix names a module and the modules under it (``textrl.envs`` holds ``textrl.envs.episode``)."""


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of ``module`` (``len(LAYERS)`` for the facade), ``None`` when no
    layer names it."""
    if module == FACADE:
        return len(LAYERS)
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    return None


def layer_name(index: int) -> str:
    return "the public API" if index == len(LAYERS) else LAYERS[index][0]


def dependencies(name: str, path: Path) -> set[str]:
    """The textrl modules importing ``name`` loads, its lazy (function-level) imports included: each
    module it imports and that module's parent packages (Python runs a package's ``__init__``
    before its submodule), leaving out ``name``'s own parent packages (already running) and the
    facade unless ``name`` imports it by name (every submodule's import runs it first)."""
    own_parents = {name.rsplit(".", k)[0] for k in range(1, name.count(".") + 1)}
    found = set()
    for module, _ in imports(path, top_level_only=False):
        if module == FACADE and name != FACADE:
            found.add(FACADE)
        parts = module.split(".")
        for end in range(2, len(parts) + 1):
            target = ".".join(parts[:end])
            if target in MODULES and target != name and target not in own_parents:
                found.add(target)
    return found


GRAPH = {name: dependencies(name, path) for name, path in MODULES.items()}


def test_every_module_has_a_layer():
    assert not [name for name in MODULES if layer_of(name) is None], "add them to LAYERS"


def test_no_import_goes_up_a_layer():
    """Module-level and function-level imports alike: e.g. nothing in textrl/envs,
    textrl/interactions or textrl/training_examples.py imports textrl.plugins (data sources come
    down as an explicit table, textrl.data_sources.DataSources)."""
    upward = [
        f"{name} ({layer_name(layer_of(name))}) imports {dep} ({layer_name(layer_of(dep))})"
        for name in sorted(GRAPH)
        for dep in sorted(GRAPH[name])
        if layer_of(name) is not None and layer_of(dep) is not None and layer_of(dep) > layer_of(name)
    ]
    assert not upward, "imports up a layer:\n" + "\n".join(upward)


def test_the_data_readers_read_no_plugin_registry():
    """Prompts, SFT/RM rows and the interactions get the generated datasets as an explicit
    ``sources`` table from the stage; none of them imports textrl.plugins, even lazily."""
    readers = [
        n for n in GRAPH if n.startswith(("textrl.envs", "textrl.interactions")) or n == "textrl.training_examples"
    ]
    assert len(readers) >= 8
    assert not [n for n in readers if "textrl.plugins" in GRAPH[n]]


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of ``graph`` with more than one module (Tarjan), each
    sorted: every import cycle lies inside one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_import_cycles_are_found():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_imports_have_no_cycle():
    """Module-level and function-level imports together: a lazy import inside a function closes a
    cycle as surely as one at the top of the file."""
    cycles = import_cycles(GRAPH)
    assert not cycles, "import cycles among: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_stage_table_has_every_stage_choice():
    from textrl.config.choices import STAGES as CHOICES
    from textrl.stages import STAGES

    assert tuple(STAGES) == CHOICES


def test_no_function_in_the_env_and_rollout_packages_is_over_60_lines():
    """The env and the rollout loop read top to bottom: every function there fits a screen."""
    for package in ("envs", "rollout"):
        for path in sorted((PACKAGE / package).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    assert node.end_lineno - node.lineno + 1 <= 60, f"{path.name}:{node.name}"
