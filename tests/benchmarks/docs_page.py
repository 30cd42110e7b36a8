"""Benchmark pages for the docs site: each benchmark script that takes ``--write-docs`` writes
``docs/benchmarks/<name>.md`` through :func:`write_page`, with the date, the commit, the command
and the machine of the run, the tables it printed and its pictures (copied to
``docs/benchmarks/img/``). A page is the record of its runs at one commit: :func:`write_page`
refuses (one error line, exit status 1) a dirty working tree and, for the learning benchmarks,
runs of another commit (:func:`protocol.page_commit`). Rerunning the script rewrites the page.

Not collected by pytest (a helper of the benchmark scripts, imported from their folder).
"""

from __future__ import annotations

import contextlib
import datetime
import io
import os
import platform
import re
import shlex
import shutil
import sys
from pathlib import Path

from protocol import ROOT, page_commit, require_clean_tree

PAGES = ROOT / "docs" / "benchmarks"
RUN_DIR = "DIR"
"""How a page names the run directory (``--run-dir``) itself; paths below it are written relative to it."""


def add_docs_argument(parser) -> None:
    """Add ``--write-docs`` (store_true) to an ``argparse`` parser."""
    parser.add_argument(
        "--write-docs", action="store_true", help="also write the run's page under docs/benchmarks/ (tables, pictures)"
    )


def machine() -> str:
    """One line: CPU model and cores, memory, the GPU if torch sees one, Python and torch versions."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        memory = f", {kib / 2**20:.0f} GiB"
    parts = [f"{os.cpu_count()} cores ({cpu}){memory}"]
    try:
        import torch

        if torch.cuda.is_available():
            parts.append(torch.cuda.get_device_name(0))
        else:
            parts.append("no GPU")
        parts.append(f"torch {torch.__version__}")
    except ImportError:
        pass
    parts.append(f"Python {platform.python_version()}")
    return ", ".join(parts)


class record_output(contextlib.AbstractContextManager):
    """Context manager: everything printed inside goes to the terminal as usual and is kept in
    ``.text`` (a ``str``) for the page."""

    def __init__(self) -> None:
        self.text = ""
        self._buffer = io.StringIO()
        self._stdout = None

    def __enter__(self) -> record_output:
        self._stdout = sys.stdout
        outer, buffer = self._stdout, self._buffer

        class Tee(io.TextIOBase):
            def write(self, s: str) -> int:
                buffer.write(s)
                return outer.write(s)

            def flush(self) -> None:
                outer.flush()

        sys.stdout = Tee()
        return self

    def __exit__(self, *exc) -> None:
        sys.stdout = self._stdout
        self.text = self._buffer.getvalue()


def as_markdown(text: str) -> str:
    """Printed benchmark output as Markdown: each run of table lines (starting with ``|``) stays a
    table (a ``| --- |`` separator is added after its header when the script printed none), and
    every other run of lines goes into a ``text`` code block, so ``key=value`` lines keep their
    layout."""
    blocks: list[tuple[bool, list[str]]] = []
    for line in text.splitlines():
        is_table = line.lstrip().startswith("|")
        if not line.strip():
            if blocks and not blocks[-1][0]:
                blocks[-1][1].append("")
            elif blocks:
                blocks.append((False, []))  # a blank line ends a table: the next one is another
            continue
        if blocks and blocks[-1][0] == is_table:
            blocks[-1][1].append(line.strip() if is_table else line)
        else:
            blocks.append((is_table, [line.strip() if is_table else line]))
    out = []
    for is_table, lines in blocks:
        if is_table:
            if len(lines) < 2 or not set(lines[1].replace(" ", "")) <= set("|-:"):
                columns = lines[0].strip("|").count("|") + 1
                lines = [lines[0], "|" + " --- |" * columns, *lines[1:]]
            out.append("\n".join(lines))
        else:
            body = "\n".join(lines).strip("\n")
            if body:
                out.append(f"```text\n{body}\n```")
    return "\n\n".join(out)


def relative_paths(text: str, *, run_dir: Path | None, repo: Path, places: dict[str, Path] | None = None) -> str:
    """``text`` with the machine's absolute paths taken out: a path below ``run_dir`` is written
    relative to it (``/runs/calc/seed0/eval`` → ``seed0/eval``), ``run_dir`` itself as
    :data:`RUN_DIR`; a folder of ``places`` (label → path) as its label (``CLASSIFIER/model``); and
    a path below ``repo`` relative to the repository."""
    bases = [(Path(path), label, label + "/") for label, path in (places or {}).items()]
    if run_dir is not None:
        bases.insert(0, (Path(run_dir), RUN_DIR, ""))
    for base, itself, below in [*bases, (Path(repo), ".", "")]:
        pattern = re.escape(str(base).rstrip("/"))
        text = re.sub(pattern + "/", lambda _, below=below: below, text)
        text = re.sub(pattern + r"(?![\w.-])", lambda _, itself=itself: itself, text)
    return text


def _linked_images(page: Path) -> set[str]:
    """The ``img/...`` files a page links to (none when the page does not exist)."""
    return set(re.findall(r"\]\(img/([^)]+)\)", page.read_text())) if page.is_file() else set()


def write_page(
    name: str,
    *,
    title: str,
    tables: list[str],
    pictures: list = (),
    notes: str = "",
    command: str | None = None,
    runs: list[Path] | None = None,
    run_dir: Path | None = None,
    places: dict[str, Path] | None = None,
) -> Path:
    """Write ``docs/benchmarks/<name>.md``: the title, the date, commit, command, runs and machine,
    ``notes`` (Markdown), the printed ``tables`` (Markdown, as the script printed them) and each
    picture that exists, copied to ``docs/benchmarks/img/<name>-<label>.png``. A picture is a path
    (its label: the file's stem) or a ``(label, path)`` pair (label: a short slug). Images the
    previous version of the page linked to and this one does not are removed.

    Args:
        runs: the run directories (each with a finished ``run.json``, see :mod:`protocol`) whose
            results the page shows; the page's commit is theirs. ``None``: the page records what
            this process measured, at ``HEAD``.
        run_dir: the folder holding the runs (``--run-dir``); every path below it in the command,
            notes and tables is written relative to it, so the page carries no path of the machine
            that ran it.
        places: other folders the page names by a label instead of their path, e.g.
            ``{"CLASSIFIER": <the --classifier folder>}``.
        command: defaults to this process's command line.

    Returns:
        Path: the page's path.

    Raises:
        protocol.ProtocolError: the working tree has uncommitted changes to tracked files, or the
            runs disagree on their commit or ran at a commit other than ``HEAD``
            (:func:`protocol.page_commit`).
    """
    if runs is None:
        commit = require_clean_tree(ROOT)[:7]
    else:
        commit = page_commit(runs, repo=ROOT, run_root=run_dir)
    PAGES.mkdir(parents=True, exist_ok=True)
    images = PAGES / "img"
    if command is None:
        script = Path(sys.argv[0]).resolve()
        shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
        command = "python " + " ".join(shlex.quote(a) for a in [str(shown), *sys.argv[1:]])
    local = lambda text: relative_paths(text, run_dir=run_dir, repo=ROOT, places=places)  # noqa: E731
    lines = [
        f"# {title}",
        "",
        f"- **Date**: {datetime.date.today().isoformat()}",
        f"- **Commit**: `{commit}`" + (" (every run on this page, each from a clean tree)" if runs else ""),
        f"- **Command**: `{local(command)}`",
    ]
    if runs:
        named = ", ".join(f"`{local(str(r))}`" for r in runs)
        where = f"in `{RUN_DIR}` (`--run-dir`; paths on this page are relative to it): " if run_dir else ""
        lines.append(f"- **Runs** {where}{named}; each `run.json` records its commit, seed, commands and wall time")
    lines += [f"- **Machine**: {machine()}", ""]
    if notes:
        lines += [local(notes).strip(), ""]
    for table in tables:
        lines += [local(table).strip(), ""]
    page = PAGES / f"{name}.md"
    before = _linked_images(page)
    for item in pictures:
        label, picture = item if isinstance(item, tuple) else (Path(item).stem, item)
        picture = Path(picture)
        if not picture.is_file():
            continue
        images.mkdir(parents=True, exist_ok=True)
        target = images / f"{name}-{label}{picture.suffix}"
        shutil.copyfile(picture, target)
        lines += [f"![{label}](img/{target.name})", ""]
    page.write_text("\n".join(lines))
    for stale in before - _linked_images(page):
        (images / stale).unlink(missing_ok=True)
    print(f"wrote {page.relative_to(ROOT) if page.is_relative_to(ROOT) else page}")
    return page
