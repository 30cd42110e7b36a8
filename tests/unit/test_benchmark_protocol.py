"""The benchmark protocol (tests/benchmarks/protocol.py) and the page writer that applies it
(tests/benchmarks/docs_page.py), on a temporary git repository: a dirty tree and runs of mixed or
old commits are refused, runs record their commit and are reused only for the same commands, the
bootstrap interval behaves on known data, and a page carries no absolute path of the run
directory."""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str, monkeypatch):
    """The benchmark module ``name`` loaded by file location, under its own name in ``sys.modules``
    for the test (dataclasses look their module up there; ``docs_page`` imports ``protocol``)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def protocol(monkeypatch):
    return load("protocol", monkeypatch)


@pytest.fixture
def docs_page(protocol, monkeypatch):
    return load("docs_page", monkeypatch)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git repository with one commit of one tracked file, ``code.py``."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    (root / "code.py").write_text("x = 1\n")
    git(root, "add", "code.py")
    git(root, "commit", "-q", "-m", "first")
    return root


def commit_change(repo: Path, text: str) -> str:
    (repo / "code.py").write_text(text)
    git(repo, "commit", "-q", "-am", text)
    return git(repo, "rev-parse", "HEAD")


class FakeTextrl:
    """A ``run_command``: writes ``result.txt`` in the run directory (the log's folder), counts
    its calls and returns 2.5 s; fails (``SystemExit``) when ``fail`` is set."""

    def __init__(self):
        self.calls, self.fail = 0, False

    def __call__(self, args, log_path):
        self.calls += 1
        if self.fail:
            raise SystemExit("textrl failed")
        log_path.write_text(" ".join(args))
        (log_path.parent / "result.txt").write_text("done")
        return 2.5


def test_a_dirty_tree_is_refused_and_untracked_files_do_not_count(protocol, repo):
    assert protocol.require_clean_tree(repo) == git(repo, "rev-parse", "HEAD")
    (repo / "outputs.log").write_text("untracked: a run's output")
    assert protocol.dirty_files(repo) == []
    (repo / "code.py").write_text("x = 2\n")
    assert protocol.dirty_files(repo) == ["code.py"]
    with pytest.raises(protocol.ProtocolError) as refused:
        protocol.require_clean_tree(repo)
    assert "uncommitted changes to code.py" in refused.value.body and "\n" not in str(refused.value.code)
    git(repo, "add", "code.py")  # staged but not committed is still dirty
    with pytest.raises(protocol.ProtocolError):
        protocol.require_clean_tree(repo)


def test_a_run_records_its_commit_seed_and_commands_and_is_reused_only_for_the_same_commands(protocol, repo, tmp_path):
    textrl, run_dir = FakeTextrl(), tmp_path / "runs" / "seed3"
    commands = [["experiment=x", "seed=3"], ["stage=eval", "seed=3"]]
    record = protocol.run_recorded(run_dir, seed=3, commands=commands, run_command=textrl, repo=repo)
    assert textrl.calls == 2 and (run_dir / "result.txt").is_file() and (run_dir / "textrl-1.log").is_file()
    assert record == json.loads((run_dir / "run.json").read_text())
    assert record["commit"] == git(repo, "rev-parse", "HEAD") and record["dirty"] == []
    assert (record["seed"], record["commands"], record["walls_s"], record["wall_s"]) == (3, commands, [2.5, 2.5], 5.0)
    assert record["finished"]
    again = protocol.run_recorded(run_dir, seed=3, commands=commands, run_command=textrl, repo=repo)
    assert again == record and textrl.calls == 2  # reused, not run again
    with pytest.raises(protocol.ProtocolError, match=r"seed=3.*expected one of seed=4"):
        protocol.run_recorded(run_dir, seed=4, commands=[["experiment=x", "seed=4"]], run_command=textrl, repo=repo)


def test_a_run_that_failed_is_recorded_unfinished_and_run_again(protocol, repo, tmp_path):
    textrl, run_dir = FakeTextrl(), tmp_path / "runs" / "seed0"
    textrl.fail = True
    with pytest.raises(SystemExit):
        protocol.run_recorded(run_dir, seed=0, commands=[["a"]], run_command=textrl, repo=repo)
    assert "finished" not in protocol.read_record(run_dir)
    with pytest.raises(protocol.ProtocolError, match="unfinished run in seed0"):
        protocol.page_commit([run_dir], repo=repo, run_root=run_dir.parent)
    textrl.fail = False
    assert protocol.run_recorded(run_dir, seed=0, commands=[["a"]], run_command=textrl, repo=repo)["finished"]
    assert textrl.calls == 2


def test_a_page_refuses_runs_of_mixed_commits_of_another_commit_or_of_a_dirty_tree(protocol, repo, tmp_path):
    runs, textrl = tmp_path / "runs", FakeTextrl()
    first = git(repo, "rev-parse", "HEAD")
    protocol.run_recorded(runs / "seed0", seed=0, commands=[["seed=0"]], run_command=textrl, repo=repo)
    second = commit_change(repo, "x = 2\n")
    protocol.run_recorded(runs / "seed1", seed=1, commands=[["seed=1"]], run_command=textrl, repo=repo)
    with pytest.raises(protocol.ProtocolError) as mixed:
        protocol.page_commit([runs / "seed0", runs / "seed1"], repo=repo, run_root=runs)
    assert f"runs of 2 commits ({first[:7]}: seed0; {second[:7]}: seed1)" in mixed.value.body
    with pytest.raises(protocol.ProtocolError, match=f"runs of commit {first[:7]}, whose code differs from HEAD"):
        protocol.page_commit([runs / "seed0"], repo=repo, run_root=runs)
    assert protocol.page_commit([runs / "seed1"], repo=repo, run_root=runs) == second[:7]
    with pytest.raises(protocol.ProtocolError, match="no run.json in seed9"):
        protocol.page_commit([runs / "seed1", runs / "seed9"], repo=repo, run_root=runs)
    (repo / "code.py").write_text("x = 3\n")  # a run from a dirty tree...
    protocol.run_recorded(runs / "seed2", seed=2, commands=[["seed=2"]], run_command=textrl, repo=repo)
    with pytest.raises(protocol.ProtocolError, match="uncommitted changes"):  # ...and no page while it is dirty
        protocol.page_commit([runs / "seed1"], repo=repo, run_root=runs)
    git(repo, "checkout", "code.py")
    with pytest.raises(protocol.ProtocolError, match="run from a dirty tree in seed2"):
        protocol.page_commit([runs / "seed1", runs / "seed2"], repo=repo, run_root=runs)


def test_pages_are_outputs_a_page_written_or_committed_voids_no_run(protocol, repo, tmp_path):
    """Changes under docs/benchmarks/ (the pages) neither dirty the tree nor make another commit's
    code, so the pages of one commit's runs can be written one after another."""
    runs, pages = tmp_path / "runs", repo / "docs" / "benchmarks"
    pages.mkdir(parents=True)
    (pages / "main-job.md").write_text("old page\n")
    git(repo, "add", "docs")
    git(repo, "commit", "-q", "-m", "pages")
    ran_at = git(repo, "rev-parse", "HEAD")
    protocol.run_recorded(runs / "seed0", seed=0, commands=[["seed=0"]], run_command=FakeTextrl(), repo=repo)
    (pages / "main-job.md").write_text("new page\n")  # the first page is written...
    assert protocol.dirty_files(repo) == []
    assert protocol.page_commit([runs / "seed0"], repo=repo) == ran_at[:7]  # ...the next one still may be
    git(repo, "commit", "-q", "-am", "the new page")
    assert protocol.code_changes(ran_at, repo=repo) == []
    assert protocol.page_commit([runs / "seed0"], repo=repo) == ran_at[:7]  # the header names where they ran
    (repo / "README.md").write_text("figures\n")
    git(repo, "add", "README.md")
    git(repo, "commit", "-q", "-m", "quote the figures")
    assert protocol.code_changes(ran_at, repo=repo) == ["README.md"]
    with pytest.raises(protocol.ProtocolError, match="whose code differs from HEAD .*README.md"):
        protocol.page_commit([runs / "seed0"], repo=repo)


def test_seeds_come_from_seeds_or_a_seed_list(protocol):
    parser = argparse.ArgumentParser()
    protocol.add_seed_arguments(parser)
    assert protocol.seeds_of(parser.parse_args([])) == [0]
    assert protocol.seeds_of(parser.parse_args(["--seeds", "3"])) == [0, 1, 2]
    assert protocol.seeds_of(parser.parse_args(["--seeds", "3", "--seed-list", "4,7"])) == [4, 7]
    for bad in (["--seeds", "0"], ["--seed-list", "1,x"], ["--seed-list", "2,2"], ["--seed-list", "-1"]):
        with pytest.raises(protocol.ProtocolError, match=bad[0]):
            protocol.seeds_of(parser.parse_args(bad))


def test_the_bootstrap_interval_on_known_data(protocol):
    constant = protocol.mean_interval([0.7, 0.7, 0.7])
    assert (constant.mean, constant.low, constant.high, constant.n) == pytest.approx((0.7, 0.7, 0.7, 3))
    three = protocol.mean_interval([0.80, 0.85, 0.90])
    assert three.mean == pytest.approx(0.85) and 0.80 <= three.low < three.mean < three.high <= 0.90
    rng = random.Random(1)
    sample = [rng.gauss(10.0, 2.0) for _ in range(40)]
    iv = protocol.mean_interval(sample)
    mean, sem = statistics.fmean(sample), statistics.stdev(sample) / len(sample) ** 0.5
    assert iv.low < mean < iv.high and iv.low < 10.0 < iv.high
    assert 0.8 * 2 * 1.96 * sem < iv.high - iv.low < 1.2 * 2 * 1.96 * sem  # about the normal interval's width
    assert protocol.mean_interval(sample) == iv  # seeded: a page's interval is the same each time
    one = protocol.mean_interval([0.5])
    assert (one.low, one.high) == (None, None) and one.format(".2f") == "0.50 (1 seed: no interval)"
    assert three.format(".2f") == f"0.85 [{three.low:.2f}, {three.high:.2f}]"
    with pytest.raises(ValueError):
        protocol.mean_interval([1.0, float("nan")])


def test_the_seed_table_gives_each_seed_the_mean_and_the_interval(protocol):
    table = protocol.seed_table(
        [protocol.SeedRow("accuracy", [80.0, 85.0, 90.0], ".1f"), protocol.SeedRow("kl", [1.0, float("nan"), 2.0])],
        seeds=[0, 1, 2],
    )
    lines = table.splitlines()
    assert lines[0] == "| | seed 0 | seed 1 | seed 2 | mean | 95% interval |"
    assert lines[2].startswith("| accuracy | 80.0 | 85.0 | 90.0 | **85.0** | [")
    assert lines[3].endswith("| — | — |")  # a missing value: no mean, no interval
    single = protocol.seed_table([protocol.SeedRow("accuracy", [80.0], ".1f")], seeds=[5])
    assert single.splitlines()[2] == "| accuracy | 80.0 | **80.0** | — |"
    with pytest.raises(ValueError, match="expected 3 values"):
        protocol.seed_table([protocol.SeedRow("accuracy", [1.0])], seeds=[0, 1, 2])


def test_seed_curves_are_one_png(protocol, tmp_path):
    path = protocol.plot_seed_curves(
        tmp_path / "img" / "curves.png",
        panels=[
            protocol.Panel("score", {"PPO": [[0.1, 0.2, 0.3], [0.2, 0.3]], "RLOO": [[0.1, 0.1]]}),
            protocol.Panel("KL (nats)", {"PPO": [[1.0, 2.0], [2.0, 3.0]]}, target=6.0),
        ],
        title="t",
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_page_names_its_commit_and_writes_paths_relative_to_the_run_directory(
    protocol, docs_page, repo, tmp_path, monkeypatch
):
    monkeypatch.setattr(docs_page, "ROOT", repo)
    monkeypatch.setattr(docs_page, "PAGES", repo / "docs" / "benchmarks")
    runs = tmp_path / "machine" / "runs" / "calc"
    for seed in (0, 1):
        protocol.run_recorded(
            runs / f"seed{seed}", seed=seed, commands=[[f"seed={seed}"]], run_command=FakeTextrl(), repo=repo
        )
    picture = protocol.plot_seed_curves(runs / "curves.png", panels=[protocol.Panel("s", {"a": [[1.0]]})], title="t")
    page = docs_page.write_page(
        "calc",
        title="Calc",
        tables=[f"| run | {runs}/seed0/eval |\n\nreport  {runs}/seed1/run/report.png\nrun_dir={runs}"],
        notes=f"Code in {repo}/code.py.",
        command=f"python tests/benchmarks/calc.py --run-dir {runs} --seeds 2 --write-docs",
        pictures=[("curves", picture)],
        runs=[runs / "seed0", runs / "seed1"],
        run_dir=runs,
    )
    text = page.read_text()
    assert str(tmp_path) not in text
    assert f"- **Commit**: `{git(repo, 'rev-parse', 'HEAD')[:7]}`" in text
    assert "`python tests/benchmarks/calc.py --run-dir DIR --seeds 2 --write-docs`" in text
    assert "| run | seed0/eval |" in text and "report  seed1/run/report.png" in text and "run_dir=DIR" in text
    assert "`seed0`, `seed1`" in text and "Code in code.py." in text
    assert "![curves](img/calc-curves.png)" in text and (repo / "docs/benchmarks/img/calc-curves.png").is_file()
    (repo / "docs/benchmarks/img/calc-old.png").write_bytes(b"old")
    page.write_text(text + "\n![old](img/calc-old.png)\n")  # the previous version showed a picture this one does not
    docs_page.write_page("calc", title="Calc", tables=["| a |"], runs=[runs / "seed0"], run_dir=runs)
    assert not (repo / "docs/benchmarks/img/calc-old.png").exists()
    assert not (repo / "docs/benchmarks/img/calc-curves.png").exists()
    commit_change(repo, "x = 2\n")  # the runs are now of an older commit: no page
    with pytest.raises(protocol.ProtocolError, match="code differs from HEAD"):
        docs_page.write_page("calc", title="Calc", tables=["| a |"], runs=[runs / "seed0"], run_dir=runs)


def test_hh_dialogue_turn_table_gives_every_turn_per_seed_and_a_dash_where_none_reached(protocol, monkeypatch):
    load("docs_page", monkeypatch)
    hh = load("hh_dialogue", monkeypatch)
    stats = lambda turns, cut, **rewards: {"turns": turns, "cut_at_budget": cut, **rewards}  # noqa: E731
    ev = {
        0: {
            "reference": stats(1.5, 0.75, turn_reward_1=-1.0, turn_reward_2=-0.5),
            "policy": stats(1.0, 1.0, turn_reward_1=-0.25),  # no episode reached the second turn
        },
        3: {
            "reference": stats(1.25, 0.5, turn_reward_1=0.5, turn_reward_2=0.125),
            "policy": stats(2.0, 0.0, turn_reward_1=1.0, turn_reward_2=2.0),
        },
    }
    lines = hh.turns_by_seed(ev, [0, 3]).splitlines()
    assert lines[0].split(" | ")[1:5] == [
        "turn 1 reward, before",
        "turn 1 reward, after",
        "turn 2 reward, before",
        "turn 2 reward, after",
    ]
    assert lines[2] == "| 0 | -1.00 | -0.25 | -0.50 | — | 50 → 0 | 75 → 100 |"
    assert lines[3] == "| 3 | +0.50 | +1.00 | +0.12 | +2.00 | 25 → 100 | 50 → 0 |"


def test_branching_rank_counts_a_tied_best_as_a_hit_and_skips_groups_with_nothing_to_rank(protocol, monkeypatch):
    from types import SimpleNamespace

    import torch

    load("docs_page", monkeypatch)
    bc = load("branching_calculator", monkeypatch)
    rows, width = 15, 4  # 3 groups of 5 episodes; chosen states at column 0 (the prompt) and column 2
    mask = torch.zeros(rows, width)
    mask[:, 0] = mask[:, 2] = 1
    mean = torch.zeros(rows, width)
    values = torch.zeros(rows, width)
    mean[0:5, 2] = torch.tensor([1.0, 0.5, 1.0, 0.25, 0.0])  # group 0: two states tie for the best
    values[0:5, 2] = torch.tensor([0.1, 0.9, 0.2, 0.0, 0.0])  # the head picks state 1 (0.5): a miss
    mean[5:10, 2] = torch.tensor([0.5, 0.5, 1.0, 0.5, 0.5])  # group 1: one best
    values[5:10, 2] = torch.tensor([0.0, 0.0, 0.7, 0.1, 0.0])  # the head picks it: a hit
    mean[10:15, 2] = 1.0  # group 2: all equal, nothing to rank
    batch = SimpleNamespace(
        branches=SimpleNamespace(mask=mask, mean=mean),
        action_mask=torch.ones(rows, width),
        values=values,
        batch_size=rows,
    )
    counted, hits, chance = bc.rank_batch(batch, groups=3)
    assert (counted, hits) == (2, 1)
    assert chance == pytest.approx(2 / 5 + 1 / 5)
    values[0:5, 2] = torch.tensor([0.1, 0.0, 0.9, 0.2, 0.0])  # now the head picks state 2, tied best: a hit
    assert bc.rank_batch(batch, groups=3)[:2] == (2, 2)
