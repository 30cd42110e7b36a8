"""The package's layering, read from the source: the config package is a leaf, modules import no
private names of other modules, the module-level imports have no cycle, and the stage table and
the stage choice list agree."""

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


def test_module_level_imports_have_no_cycle():
    graph = {name: {m for m, _ in imports(path) if m in MODULES and m != name} for name, path in MODULES.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(nxt) :] + [node, nxt]))
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_no_stage_or_reward_imports_inside_functions_back_into_run_or_plugins():
    """The cycles the function-level imports used to hide: stages -> run, rewards -> plugins."""
    for name, path in MODULES.items():
        if name.startswith(("textrl.stages", "textrl.rewards", "textrl.loggers")):
            modules = {m for m, _ in imports(path, top_level_only=False)}
            assert not modules & {"textrl.run", "textrl.plugins", "textrl.cli"}, name
            if name.startswith("textrl.loggers"):
                assert not any(m.startswith("textrl.stages") for m in modules), name


def test_the_stage_table_has_every_stage_choice():
    from textrl.config.choices import STAGES as CHOICES
    from textrl.stages import STAGES

    assert tuple(STAGES) == CHOICES
