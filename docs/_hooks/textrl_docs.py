"""MkDocs hooks of the textrl site (registered under ``hooks:`` in ``mkdocs.yml``).

- ``reference/configuration.md`` and ``reference/metrics.md`` are generated at build time, by
  :mod:`config_reference` (the schema, the ``conf/`` options and the plugin factories, composed
  by Hydra) and :mod:`metrics_glossary` (``textrl/metrics.py``). Their files in ``docs/`` are
  stubs that say so, so a link to them works in the repository too; the build replaces each
  stub's text with the generated page. The reference warns (a strict build fails) when a
  bundled plugin (``plugins/``) is not installed, so the site never lacks ``algo=grpo`` or
  ``reward=regex``.
- ``reference/api/<module>.md``: one ``::: textrl.<module>`` page per public module of the
  package (found by walking ``textrl/``), listed in the nav under *Reference → API*.
- *Benchmarks*: the nav lists ``benchmarks/index.md`` and then every ``docs/benchmarks/*.md``
  that exists (the benchmark scripts write them with ``--write-docs``), its nav title without
  Markdown's backticks; the index page's ``<!-- benchmark-pages -->`` marker becomes the list of
  those pages with their dates.

So the nav names only pages that exist when the site is built (``mkdocs build --strict``).
"""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
log = logging.getLogger("mkdocs.hooks.textrl_docs")  # under mkdocs.*: a warning fails a strict build

BUNDLED_PLUGINS = {"algo": ("grpo", "plugins/textrl-grpo"), "reward": ("regex", "plugins/textrl-regex-reward")}
"""The example plugin packages in ``plugins/`` whose options the configuration reference must list:
``{group: (option, package folder)}``."""


def _hook_module(name: str):
    """``docs/_hooks/<name>.py`` as a module (hooks are loaded by path, not as a package)."""
    spec = importlib.util.spec_from_file_location(f"textrl_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def missing_bundled_plugins(registry) -> list[str]:
    """One message per bundled plugin (:data:`BUNDLED_PLUGINS`) that ``registry`` lacks, naming
    the option the reference would miss and the command that installs it."""
    installed = {"algo": registry.algorithms, "reward": registry.rewards}
    return [
        f"configuration reference: {group}={option} is missing (its plugin is not installed); "
        f"pip install -e {folder}, as the docs install command in the README does"
        for group, (option, folder) in BUNDLED_PLUGINS.items()
        if option not in installed[group]
    ]


def configuration_page() -> str:
    """The generated configuration reference, after a warning for each bundled plugin not installed."""
    from textrl.plugins import load_plugins

    registry = load_plugins()
    for message in missing_bundled_plugins(registry):
        log.warning(message)
    return _hook_module("config_reference").markdown(registry)


GENERATED_PAGES = {
    "reference/configuration.md": configuration_page,
    "reference/metrics.md": lambda: _hook_module("metrics_glossary").markdown(),
}
"""Pages whose stub in ``docs/`` the build replaces with generated Markdown: path → generator."""


SKIP_MODULES = {"textrl.__main__", "textrl.conf", "textrl.data", "textrl.cli", "textrl.hookspecs"}
"""Modules without an API page: the ``python -m textrl`` shim, data-only packages, and the modules
rendered on their own reference pages (``reference/cli.md``, ``reference/hooks.md``; an object
rendered twice would have two URLs)."""


def api_modules() -> list[str]:
    """Dotted names of textrl's public modules and packages, sorted."""
    names = []
    for path in sorted((ROOT / "textrl").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        if any(p.startswith("_") for p in parts) or name in SKIP_MODULES:
            continue
        names.append(name)
    return names


def benchmark_pages() -> list[Path]:
    """The benchmark pages present now, ``index.md`` left out, by file name."""
    return sorted(p for p in (DOCS / "benchmarks").glob("*.md") if p.name != "index.md")


def _title(page: Path) -> str:
    """The first ``# `` heading of a page, else its stem."""
    for line in page.read_text().splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return page.stem


def _nav_title(page: Path) -> str:
    """:func:`_title` as plain text for the nav, which shows Markdown literally (no backticks)."""
    return _title(page).replace("`", "")


def _expand(nav: list, placeholder: str, entries: list) -> bool:
    """Replace the nav item whose value is ``placeholder`` by a section of ``entries`` (first the
    placeholder page itself); True when found."""
    for i, item in enumerate(nav):
        if isinstance(item, dict):
            ((title, value),) = item.items()
            if value == placeholder:
                nav[i] = {title: [placeholder, *entries]}
                return True
            if isinstance(value, list) and _expand(value, placeholder, entries):
                return True
    return False


def on_config(config, **kwargs):
    """Fill the nav's *API* and *Benchmarks* sections from what exists."""
    nav = config["nav"]
    _expand(nav, "reference/api/index.md", [{name: f"reference/api/{name}.md"} for name in api_modules()])
    _expand(
        nav,
        "benchmarks/index.md",
        [{_nav_title(p): f"benchmarks/{p.name}"} for p in benchmark_pages()],
    )
    return config


def on_files(files, config, **kwargs):
    """Add one API page per module."""
    for name in api_modules():
        content = f"# `{name}`\n\n::: {name}\n"
        files.append(File.generated(config, f"reference/api/{name}.md", content=content))
    return files


def on_page_markdown(markdown, page, config, files, **kwargs):
    """Replace the generated pages' stubs, and expand the benchmark index and API index markers."""
    if page.file.src_uri in GENERATED_PAGES:
        return GENERATED_PAGES[page.file.src_uri]()
    if "<!-- benchmark-pages -->" in markdown:
        rows = []
        for p in benchmark_pages():
            date = re.search(r"\*\*Date\*\*: (\S+)", p.read_text())
            rows.append(f"- [{_title(p)}]({p.name})" + (f" ({date.group(1)})" if date else ""))
        markdown = markdown.replace("<!-- benchmark-pages -->", "\n".join(rows) or "No benchmark page yet.")
    if "<!-- api-modules -->" in markdown:
        rows = [f"- [`{name}`]({name}.md)" for name in api_modules()]
        markdown = markdown.replace("<!-- api-modules -->", "\n".join(rows))
    return markdown
