"""The benchmark protocol of the learning benchmark scripts (``main_job.py``, ``calculator.py``,
``imdb_sentiment.py``, ``hh_dialogue.py``): seeds, a record of the commit of every run, means over
seeds with bootstrap intervals, and learning curves over seeds.

- **Seeds.** ``--seeds N`` runs seeds ``0 .. N-1`` (``--seed-list 3,7`` names them instead); each
  seed's runs go to their own directory ``DIR/seed<k>`` (:func:`seed_dir`).
- **Run records.** A *run* is a directory holding ``run.json``: :func:`run_recorded` writes it when
  the run starts (the commit of the working tree, the tracked files with uncommitted changes, the
  seed, the ``textrl`` commands) and completes it when the run ends (wall time in seconds, end
  time). A finished run of the same commands is reused, not run again.
- **Pages.** :func:`page_commit` is the check ``docs_page.write_page`` makes before it writes a
  page: the working tree is clean, every run on the page finished from a clean tree at one commit,
  and that commit is ``HEAD`` (or differs from it only in the pages, ``docs/benchmarks/``, so the
  pages of one commit's runs can be written one after another). Anything else is a
  :class:`ProtocolError` (one line, exit status 1).
- **Intervals.** :func:`mean_interval`: the mean over seeds and a 95% percentile-bootstrap
  interval of it (``scipy.stats.bootstrap``; Efron & Tibshirani 1993, ch. 13); :func:`seed_table`
  prints per-seed values, the mean and the interval. With three seeds the percentile interval is
  narrow for what three draws can tell (it undercovers), so read it as a spread, not a guarantee.
- **Curves.** :func:`plot_seed_curves`: the mean over seeds per update with a min–max band, one
  figure (matplotlib, Agg) with one panel per quantity.

Not collected by pytest (a helper of the benchmark scripts, imported from their folder; the unit
tests load it by file location).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parents[2]
"""The repository the benchmarks measure (its commit goes on every page)."""
PAGES = "docs/benchmarks/"
"""Where the pages live, relative to the repository: what the benchmarks write, not what they run,
so changes there neither make a tree dirty nor make a commit another one (pages of one commit's
runs can be written one after the other, and committed)."""
RUN_RECORD = "run.json"
"""The file in a run directory that records the run (see :func:`run_recorded`)."""
CONFIDENCE = 0.95
"""Confidence level of :func:`mean_interval`."""
RESAMPLES = 10_000
"""Bootstrap resamples of :func:`mean_interval`."""
INTERVAL_NOTE = (
    "95% interval: percentile bootstrap of the mean over seeds (scipy.stats.bootstrap, "
    f"{RESAMPLES:,} resamples); with fewer than 2 seeds there is none. With a handful of seeds it "
    "stays within the seeds' range and undercovers: read it as their spread, not a guarantee."
)
"""The sentence the scripts print under a :func:`seed_table`."""


class ProtocolError(SystemExit):
    """A benchmark run or page that breaks the protocol: exits with status 1 and prints one line,
    ``<script>: error: <body>``, to stderr (no traceback).

    Attributes:
        body: the message without the script's name.
    """

    def __init__(self, body: str):
        self.body = body
        super().__init__(f"{Path(sys.argv[0]).name}: error: {body}")


# --- the commit -------------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as error:
        raise ProtocolError(f"git {' '.join(args)} in {repo}: failed ({error}); expected a git checkout") from None
    return done.stdout


def head_commit(repo: Path = ROOT) -> str:
    """The full hash (40 hex digits) of ``HEAD`` in ``repo``.

    Raises:
        ProtocolError: ``repo`` is no git checkout (or git is missing).
    """
    return _git(repo, "rev-parse", "HEAD").strip()


def dirty_files(repo: Path = ROOT) -> list[str]:
    """Tracked files of ``repo`` with uncommitted changes, staged or not, as paths relative to
    ``repo``. Untracked files do not count (run outputs and virtual environments live there), nor
    do the pages under :data:`PAGES`.

    Raises:
        ProtocolError: ``repo`` is no git checkout.
    """
    lines = _git(repo, "status", "--porcelain", "--untracked-files=no").splitlines()
    return [path for line in lines if line.strip() and not (path := line[3:]).startswith(PAGES)]


def code_changes(commit: str, *, repo: Path = ROOT) -> list[str]:
    """Files that differ between ``commit`` and ``HEAD`` of ``repo``, the pages under
    :data:`PAGES` left out (empty: ``HEAD`` runs the code ``commit`` ran).

    Raises:
        ProtocolError: ``commit`` is unknown to ``repo``.
    """
    changed = _git(repo, "diff", "--name-only", commit, "HEAD").splitlines()
    return [path for path in changed if path and not path.startswith(PAGES)]


def require_clean_tree(repo: Path = ROOT) -> str:
    """``HEAD``'s full hash when ``repo`` has no uncommitted changes to tracked files.

    Raises:
        ProtocolError: a tracked file has uncommitted changes (the first few are named).
    """
    dirty = dirty_files(repo)
    if dirty:
        shown = ", ".join(dirty[:3]) + (f" and {len(dirty) - 3} more" if len(dirty) > 3 else "")
        raise ProtocolError(
            f"--write-docs: got uncommitted changes to {shown}; expected a clean working tree "
            "(a page records one commit: commit or stash, then run)"
        )
    return head_commit(repo)


# --- seeds ------------------------------------------------------------------------------------


def add_seed_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--seeds N`` (default 1: seed 0) and ``--seed-list 0,3,7`` to an ``argparse`` parser."""
    parser.add_argument("--seeds", type=int, default=1, help="run seeds 0..N-1 (default 1)")
    parser.add_argument("--seed-list", default=None, help="comma-separated seeds to run instead of --seeds, e.g. 0,3,7")


def seeds_of(args: argparse.Namespace) -> list[int]:
    """The seeds ``args`` asks for (:func:`add_seed_arguments`), in order, each once.

    Raises:
        ProtocolError: ``--seeds`` below 1, or a ``--seed-list`` that is not non-negative integers.
    """
    if args.seed_list is not None:
        try:
            seeds = [int(s) for s in args.seed_list.split(",")]
        except ValueError:
            seeds = [-1]
        if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
            raise ProtocolError(
                f"--seed-list: got {args.seed_list!r}; expected distinct non-negative integers, e.g. 0,1,2"
            )
        return seeds
    if args.seeds < 1:
        raise ProtocolError(f"--seeds: got {args.seeds}; expected 1 or more")
    return list(range(args.seeds))


def seed_dir(root: Path, seed: int) -> Path:
    """``root / "seed<seed>"``: where one seed's runs go."""
    return root / f"seed{seed}"


# --- run records ------------------------------------------------------------------------------


def read_record(run_dir: Path) -> dict | None:
    """The ``run.json`` of ``run_dir`` (``commit``, ``dirty``, ``seed``, ``commands``, ``started``,
    and once finished ``walls_s``, ``wall_s`` and ``finished``), or ``None`` when there is none."""
    path = Path(run_dir) / RUN_RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def _write_record(run_dir: Path, record: dict) -> None:
    path = Path(run_dir) / RUN_RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def run_recorded(
    run_dir: Path,
    *,
    seed: int,
    commands: Sequence[Sequence[str]],
    run_command: Callable[[list[str], Path], float],
    repo: Path = ROOT,
) -> dict:
    """Run ``commands`` in order as one recorded run in ``run_dir``, unless a finished run of the
    same commands is there already (then it is reused as it is). Returns the run's record.

    ``run.json`` is written before the first command (``commit``: ``HEAD``'s full hash; ``dirty``:
    the tracked files with uncommitted changes; ``seed``; ``commands``; ``started``) and completed
    after the last (``walls_s``: each command's wall time in seconds, as ``run_command`` returned
    it; ``wall_s``: their sum; ``finished``: UTC time). Command ``i`` logs to ``run_dir/textrl-<i>.log``. A run
    that did not finish is run again from the start.

    Args:
        run_dir: the run's directory (created).
        seed: the seed the commands use (recorded; the commands must already pass it).
        commands: argument lists for ``run_command``, e.g. ``["experiment=calculator", "seed=1", ...]``.
        run_command: ``(args, log_path) -> wall seconds``, e.g. ``textrl_run.run_textrl``.
        repo: the repository whose commit is recorded.

    Raises:
        ProtocolError: ``run_dir`` holds a finished run of other commands (use another ``--run-dir``
            or remove that run).
        SystemExit: a command failed (``run_command``'s error).
    """
    run_dir = Path(run_dir)
    commands = [list(c) for c in commands]
    record = read_record(run_dir)
    if record and record.get("finished"):
        if record["commands"] != commands:
            there = {a for c in record["commands"] for a in c}
            asked = {a for c in commands for a in c}
            differ = ", ".join(sorted(there - asked)) or "the same arguments in another order"
            raise ProtocolError(
                f"--run-dir: got a finished run of other commands in {run_dir} ({differ}); expected one of "
                f"{', '.join(sorted(asked - there)) or 'these commands'}: use another --run-dir or remove {run_dir}"
            )
        return record
    record = {
        "commit": head_commit(repo),
        "dirty": dirty_files(repo),
        "seed": seed,
        "commands": commands,
        "started": _now(),
    }
    _write_record(run_dir, record)
    walls = [run_command(command, run_dir / f"textrl-{i}.log") for i, command in enumerate(commands)]
    record.update(wall_s=sum(walls), walls_s=walls, finished=_now())
    _write_record(run_dir, record)
    return record


def page_commit(run_dirs: Sequence[Path], *, repo: Path = ROOT, run_root: Path | None = None) -> str:
    """The short commit every run in ``run_dirs`` ran at, after checking what a page needs: the
    working tree is clean, each run has a finished ``run.json`` recorded from a clean tree, all
    runs ran at one commit, and it is ``HEAD`` or differs from ``HEAD`` only in the pages
    (:data:`PAGES`; so a page written and committed does not void the runs of the next).

    Args:
        run_dirs: the runs whose results the page shows (at least one).
        repo: the repository (``HEAD``, the working tree).
        run_root: runs are named relative to it in errors (default: their full paths).

    Returns:
        str: the commit's short hash (7 hex digits).

    Raises:
        ProtocolError: no runs; a dirty tree; a run without ``run.json``, unfinished, or from a
            dirty tree; runs of several commits; or a commit whose code differs from ``HEAD``'s.
    """
    if not run_dirs:
        raise ProtocolError("--write-docs: got no runs; expected the runs the page shows")
    head = require_clean_tree(repo)

    def name(path: Path) -> str:
        path = Path(path)
        return str(path.relative_to(run_root)) if run_root and path.is_relative_to(run_root) else str(path)

    by_commit: dict[str, list[str]] = {}
    for run_dir in run_dirs:
        record = read_record(run_dir)
        if record is None or not record.get("finished"):
            state = "no run.json" if record is None else "an unfinished run"
            raise ProtocolError(f"--write-docs: got {state} in {name(run_dir)}; expected a finished run: run it again")
        if record.get("dirty"):
            raise ProtocolError(
                f"--write-docs: got a run from a dirty tree in {name(run_dir)} (uncommitted changes to "
                f"{', '.join(record['dirty'][:3])}); expected runs of a committed tree: remove it and run again"
            )
        by_commit.setdefault(record["commit"], []).append(name(run_dir))
    if len(by_commit) > 1:
        found = "; ".join(f"{c[:7]}: {', '.join(names)}" for c, names in by_commit.items())
        raise ProtocolError(
            f"--write-docs: got runs of {len(by_commit)} commits ({found}); expected one commit: run them again at HEAD"
        )
    (commit,) = by_commit
    changed = code_changes(commit, repo=repo) if commit != head else []
    if changed:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise ProtocolError(
            f"--write-docs: got runs of commit {commit[:7]}, whose code differs from HEAD ({head[:7]}: {shown}); "
            f"expected runs of HEAD's code: run them again at HEAD, or check out {commit[:7]} to write their page"
        )
    return commit[:7]


# --- intervals --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """The mean of per-seed values and its bootstrap interval.

    Attributes:
        mean: the mean (float).
        low: the interval's lower end, ``None`` with fewer than 2 values.
        high: the interval's upper end, ``None`` with fewer than 2 values.
        n: the number of values (seeds).
    """

    mean: float
    low: float | None
    high: float | None
    n: int

    def format(self, spec: str = ".3f") -> str:
        """``"0.845 [0.800, 0.900]"``, or ``"0.845 (1 seed: no interval)"``; numbers in ``spec``."""
        if self.low is None:
            return f"{self.mean:{spec}} ({self.n} seed: no interval)"
        return f"{self.mean:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"


def mean_interval(values: Sequence[float], *, confidence: float = CONFIDENCE, seed: int = 0) -> Interval:
    """The mean of ``values`` and a ``confidence`` percentile-bootstrap interval of it
    (``scipy.stats.bootstrap``, :data:`RESAMPLES` resamples drawn from ``seed``, so a page's
    interval is the same each time it is written). With one value there is no interval.

    Raises:
        ValueError: no values, or a value that is not finite.
    """
    values = [float(v) for v in values]
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"expected finite values, got {values}")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return Interval(mean, None, None, len(values))
    import numpy as np
    from scipy.stats import bootstrap

    result = bootstrap(
        (np.asarray(values),),
        np.mean,
        confidence_level=confidence,
        n_resamples=RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    return Interval(mean, float(ci.low), float(ci.high), len(values))


@dataclass(frozen=True)
class SeedRow:
    """One row of :func:`seed_table`: ``label``, one value per seed (``values``, in the table's seed
    order) and the format ``spec`` of its numbers (e.g. ``".1f"``)."""

    label: str
    values: Sequence[float]
    spec: str = ".3f"


def seed_table(rows: Sequence[SeedRow], *, seeds: Sequence[int]) -> str:
    """A Markdown table: one row per :class:`SeedRow` with its value for each seed, the mean and
    the 95% interval (:func:`mean_interval`; ``—`` with fewer than 2 seeds, and mean and interval
    ``—`` when a value is missing: NaN or infinite).

    Raises:
        ValueError: a row without one value per seed.
    """
    header = "| | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | 95% interval |"
    lines = [header, "| --- " * (len(seeds) + 3) + "|"]
    for row in rows:
        if len(row.values) != len(seeds):
            raise ValueError(f"{row.label}: expected {len(seeds)} values (one per seed), got {len(row.values)}")
        cells = " | ".join(f"{v:{row.spec}}" for v in row.values)
        if not all(math.isfinite(v) for v in row.values):
            lines.append(f"| {row.label} | {cells} | — | — |")
            continue
        iv = mean_interval(row.values)
        interval = f"[{iv.low:{row.spec}}, {iv.high:{row.spec}}]" if iv.low is not None else "—"
        lines.append(f"| {row.label} | {cells} | **{iv.mean:{row.spec}}** | {interval} |")
    return "\n".join(lines)


# --- curves -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Panel:
    """One panel of :func:`plot_seed_curves`.

    Attributes:
        ylabel: the quantity and its unit, e.g. ``"KL to π_ref (nats)"``.
        series: label → one curve per seed (each a list of per-update values).
        target: a horizontal reference line (e.g. ``algo.kl.target``), or ``None``.
    """

    ylabel: str
    series: dict[str, Sequence[Sequence[float]]] = field(default_factory=dict)
    target: float | None = None


def plot_seed_curves(path: Path, *, panels: Sequence[Panel], title: str) -> Path:
    """Draw ``panels`` side by side in one figure at ``path`` (PNG): for each series, the mean over
    its seeds per update (x: update 1, 2, ...) and a band from the minimum to the maximum over
    seeds (none with one seed); curves of different lengths are cut to the shortest. The legend
    names the number of seeds and the band. Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for label, curves in panel.series.items():
            curves = [list(c) for c in curves if len(c)]
            if not curves:
                continue
            length = min(len(c) for c in curves)
            values = np.array([c[:length] for c in curves], dtype=float)
            x = np.arange(1, length + 1)
            n = len(curves)
            shown = f"{label} (mean of {n} seeds; band: min–max)" if n > 1 else f"{label} (1 seed)"
            (line,) = ax.plot(x, values.mean(axis=0), label=shown)
            if n > 1:
                ax.fill_between(x, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.2)
        if panel.target is not None:
            ax.axhline(panel.target, color="black", linestyle="--", linewidth=1, label=f"target {panel.target:g}")
        ax.set_xlabel("update")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
