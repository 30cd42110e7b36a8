"""Griffe extension for the docs site: Sphinx roles in textrl's docstrings become cross-references.

textrl's docstrings write references the Sphinx way (``:func:`gae```, ``:class:`~textrl.rewards.base.RewardModel```,
``:meth:`Algorithm.update```). mkdocstrings renders Markdown, so after the whole package is loaded this
extension rewrites every role in every docstring:

- a target that resolves to an object of the loaded package (tried as written, relative to the
  docstring's object, its module and its parents, then under ``textrl.``) becomes an autorefs link
  ``[`shown`][canonical.path]``; the strict build then fails if that object has no rendered page;
- a target outside the package (``torch.Tensor``) stays inline code.

``~`` shows the last component only, as in Sphinx. Registered in ``mkdocs.yml`` under the python
handler's ``extensions``. Nothing in ``textrl`` is changed.
"""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|data|attr|exc|obj|const|ref):`(?P<target>[^`]+)`")


def _lookup(root: griffe.Module, path: str):
    """The object at dotted ``path`` under the package ``root`` (``root.path`` included), or None."""
    parts = path.split(".")
    if parts[0] != root.name:
        return None
    obj = root
    for part in parts[1:]:
        try:
            obj = obj.members[part]
        except (KeyError, AttributeError):
            return None
    return obj


def _canonical(obj) -> str | None:
    """The path where ``obj`` is defined (an alias followed to its target), or None when the target
    is outside the package or private (no page renders it)."""
    try:
        while isinstance(obj, griffe.Alias):
            obj = obj.final_target
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None
    path = obj.path
    if any(part.startswith("_") and not part.startswith("__") for part in path.split(".")):
        return None
    return path


def resolve(root: griffe.Module, context, target: str) -> str | None:
    """The canonical path of ``target`` as seen from the object ``context``, or None."""
    target = target.lstrip("~.").rstrip("()")
    scopes = []
    scope = context
    while scope is not None:
        scopes.append(scope.path)
        scope = scope.parent
    candidates = [target] + [f"{s}.{target}" for s in scopes] + [f"{root.name}.{target}"]
    for path in candidates:
        obj = _lookup(root, path)
        if obj is not None:
            return _canonical(obj)
    return None


class SphinxRoles(griffe.Extension):
    """Rewrites Sphinx roles into autorefs cross-references once the package is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        """Walk every object of ``pkg`` (aliases skipped: their target is walked) and rewrite its docstring."""
        seen: set[int] = set()
        todo = [pkg]
        while todo:
            obj = todo.pop()
            if id(obj) in seen or isinstance(obj, griffe.Alias):
                continue
            seen.add(id(obj))
            if obj.docstring is not None:
                obj.docstring.value = self.rewrite(pkg, obj, obj.docstring.value)
            todo.extend(member for member in obj.members.values() if not isinstance(member, griffe.Alias))

    @staticmethod
    def rewrite(root: griffe.Module, context, text: str) -> str:
        """``text`` with each Sphinx role replaced by a link (or inline code when unresolved)."""

        def replace(match: re.Match) -> str:
            written = match.group("target")
            shown = written.lstrip("~")
            if written.startswith("~"):
                shown = shown.rsplit(".", 1)[-1]
            path = resolve(root, context, written)
            return f"[`{shown}`][{path}]" if path else f"`{shown}`"

        return ROLE.sub(replace, text)
