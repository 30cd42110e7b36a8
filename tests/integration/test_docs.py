"""The documentation: the site builds strictly, the README stays short, the code blocks marked to
run do run, and the generated configuration reference has a row for every key.

Runnable blocks (the convention, documented in ``docs/index.md``): an HTML comment right before a
fenced block in ``README.md`` or ``docs/**/*.md``:

- ``<!-- run -->``: the block runs as written (``python`` blocks with this interpreter, ``bash``
  blocks one ``textrl ...`` command after another);
- ``<!-- run: tiny -->``: a ``bash`` block whose ``textrl`` commands run with :data:`TINY`
  appended, so a command written for SmolLM2 (the main job, the pipeline) runs on TinyStories-656K
  in seconds with the same keys.

Blocks run in a temporary directory, with ``../shared/assets`` in their text pointed at the
assets the other tests use. A ``bash`` block may hold only ``textrl`` commands (comments and ``\\``
continuations allowed).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ASSETS, run_main

ROOT = Path(__file__).resolve().parents[2]
README_MAX_LINES = 150
RUN = re.compile(r"^<!-- run(?::\s*(?P<mode>[\w-]+))? -->\s*\n```(?P<lang>\w+)\n(?P<code>.*?)\n```", re.M | re.S)
TINY = [
    "policy=tinystories",
    "trainer.updates=2",
    "trainer.progress_bar=false",
    "rollout.batch_size=4",
    "algo.minibatch_size=4",
    "env.max_new_tokens=8",
    "sft.max_examples=16",
    "sft.batch_size=8",
    "sft.max_length=64",
    "rm.max_examples=16",
    "rm.max_eval_examples=8",
    "rm.batch_size=4",
    "rm.max_length=64",
    "eval.num_prompts=4",
    "eval.samples=2",
    "data.max_prompts=32",
]
"""Overrides appended to each ``textrl`` command of a ``<!-- run: tiny -->`` block (those whose key
the command sets itself are left out: the command's value wins)."""


def doc_files() -> list[Path]:
    """The README and every Markdown page of the site."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def runnable_blocks() -> list[tuple[str, str, str, str]]:
    """``(id, lang, mode, code)`` of every block marked to run, ``mode`` ``""`` or ``"tiny"``."""
    blocks = []
    for path in doc_files():
        for n, match in enumerate(RUN.finditer(path.read_text(encoding="utf-8"))):
            blocks.append((f"{path.relative_to(ROOT)}#{n}", match["lang"], match["mode"] or "", match["code"]))
    return blocks


def commands(code: str) -> list[list[str]]:
    """The commands of a ``bash`` block: continuations joined, comments dropped, split as the shell would."""
    joined = re.sub(r"\\\n", " ", code)
    return [args for line in joined.splitlines() if (args := shlex.split(line, comments=True))]


def with_assets(text: str) -> str:
    """``text`` with ``../shared/assets`` pointing at the assets the tests use."""
    return text.replace("../shared/assets", str(ASSETS))


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; keep it to {README_MAX_LINES}"
    text = "\n".join(lines)
    results = text.split("## Results", 1)[1].split("\n## ", 1)[0]  # the measured table, with links
    assert "| after PPO |" in results and "docs/benchmarks/calculator.md" in results
    assert "<!-- run -->" in text, "the README's environment example must be marked to run"


def test_readme_setup_commands_are_what_ci_runs():
    """``.ci/run`` runs the README's test command verbatim, as a new user would: in a fresh virtual
    environment (made with ``python3 -m venv`` in a git-ignored folder, removed first) that it
    activates before the command."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(pip install torch[^\n]*)\n```", (ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) == 2, blocks
    assert blocks[1] in ci
    venv = re.search(r'^venv=(\S+)\nrm -rf "\$venv" && python3 -m venv "\$venv"', ci, re.M)
    assert venv, "CI makes a fresh virtual environment"
    activate = ci.index('. "$venv/bin/activate"')
    assert ci.index("python3 -m venv") < activate < ci.index(blocks[1])
    assert f"/{venv[1]}/" in (ROOT / ".gitignore").read_text().splitlines(), f"{venv[1]} must be git-ignored"
    assert 'if [ "$rc" -eq 5 ]; then' in ci and "exit 1" in ci.split('if [ "$rc" -eq 5 ]; then', 1)[1]


def test_site_builds_strict(tmp_path):
    """``mkdocs build --strict``: no broken link, cross-reference, nav entry or docstring section."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    home = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "textrl" in home
    reference = (tmp_path / "site" / "reference" / "configuration" / "index.html").read_text(encoding="utf-8")
    assert "algo.kl.target" in reference
    maths = (tmp_path / "site" / "concepts" / "maths" / "index.html").read_text(encoding="utf-8")
    assert 'class="autorefs autorefs-internal"' in maths, "the maths page links the functions that implement it"
    api = (tmp_path / "site" / "reference" / "api" / "textrl" / "index.html").read_text(encoding="utf-8")
    assert ":func:`" not in api and ":class:`" not in api, "Sphinx roles must render as links"
    assert 'class="mermaid"' in (tmp_path / "site" / "concepts" / "data-flow" / "index.html").read_text()


def test_config_reference_has_every_key():
    """Every key of every composed section (:func:`textrl.reference.reference_entries`) has a row
    with a default and a meaning, in the section of its option, and schema keys carry their checks."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("textrl_config_reference", ROOT / "docs/_hooks/config_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)

    from textrl.plugins import load_plugins
    from textrl.reference import reference_entries

    registry = load_plugins()
    page = module.markdown(registry)
    sections = re.split(r"^## ", page, flags=re.M)[1:]
    by_title = {s.splitlines()[0]: s for s in sections}
    entries = reference_entries(registry)
    assert len(by_title) == len(entries)
    for option, table in entries.items():
        title = "Main job (`textrl`)" if not option else f"`{option}`"
        section = by_title[title]
        keys = re.findall(r"^\| `([^`]+)` \|", section, flags=re.M)
        assert keys == list(table), f"{title}: rows {keys} != composed keys {list(table)}"
        for row in re.findall(r"^\| `.*$", section, flags=re.M):
            cells = re.split(r"(?<!\\)\|", row)[1:-1]
            assert len(cells) == 5 and cells[4].strip(), f"{title}: a row without a meaning: {row}"
    main = by_title["Main job (`textrl`)"]
    assert re.search(r"^\| `rollout.top_p` \| float \| `1.0` \| a number in \(0, 1\] \|", main, flags=re.M)
    assert re.search(
        r"^\| `algo.clip_range` \| float \| `0.2` \| a number &gt; 0 \| policy ratio clip", main, flags=re.M
    )


@pytest.mark.slow
@pytest.mark.parametrize("block", runnable_blocks(), ids=lambda b: b[0])
def test_marked_blocks_run(block, tmp_path, monkeypatch, capsys, assets):
    _, lang, mode, code = block
    monkeypatch.chdir(tmp_path)
    if lang == "python":
        script = tmp_path / "block.py"
        script.write_text(with_assets(code), encoding="utf-8")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
        result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        return
    assert lang == "bash", f"a runnable block is python or bash, not {lang}"
    for args in commands(with_assets(code)):
        assert args[0] == "textrl", f"a runnable bash block holds textrl commands only: {args}"
        given = {a.split("=", 1)[0] for a in args[1:]}
        overrides = args[1:] + [t for t in (TINY if mode == "tiny" else []) if t.split("=", 1)[0] not in given]
        if not any(a.startswith("hydra.run.dir=") for a in overrides):
            overrides.append(f"hydra.run.dir={tmp_path / 'run'}")
        result = run_main(overrides, monkeypatch, capsys)
        assert result.returncode == 0, f"textrl {' '.join(overrides)}\n{result.stderr[-3000:]}"
