"""The GPU benchmark's code paths on the CPU (``--smoke``), so that they cannot rot between GPU runs:
``tests/benchmarks/rollout.py --smoke`` (the ops count under one profiler session and the bf16 GPU
table on a tiny random model) and ``tests/benchmarks/gpu_check.sh --smoke`` (the GPU check script:
test_gpu.py, the table, bf16, instructgpt and sharded runs, on the CPU with tiny settings)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rollout_benchmark_smoke(capfd):
    load_benchmark("rollout").main(["--smoke"])
    out, err = capfd.readouterr()
    assert "USDT" not in out + err  # the profiler starts and stops quietly
    ops = dict(re.findall(r"(\w+)=(\d+)", re.search(r"^ops_per_step .*$", out, re.M).group(0)))
    assert set(ops) == {"generate", "eager", "compiled"} and all(int(v) > 0 for v in ops.values())
    rows = re.findall(r"^\| tiny \| 2 \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|", out, re.M)
    assert len(rows) == 1 and all(int(v) > 0 for v in rows[0]), out[-2000:]
    assert "smoke_ok rows=1" in out


def test_gpu_check_smoke(assets, tmp_path):
    """``gpu_check.sh --smoke``: every stage passes on the CPU and the outputs land in ``$OUT``."""
    if shutil.which("timeout") is None:
        pytest.skip("gpu_check.sh needs coreutils' timeout")
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "TEXTRL_ASSETS": str(assets)}
    result = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_check.sh"), "--smoke"], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    stages = [line.split("\t") for line in (out / "stages.tsv").read_text().splitlines()[1:]]
    assert [s[0] for s in stages] == [
        "1_test_gpu",
        "2_rollout_table",
        "3_tinystories_bf16",
        "4_instructgpt_tiny_bf16",
        "5_sharded_bf16",
    ]
    assert all(s[1] == "0" for s in stages), stages
    assert (out / "env.txt").is_file() and "smoke_ok rows=1" in (out / "2_rollout_table.log").read_text()
    assert "sharded_ok updates 2" in (out / "5_sharded_bf16.log").read_text()
    for run in ("tinystories_bf16", "instructgpt_tiny_bf16/rl", "sharded_bf16"):
        assert (out / run / "metrics.jsonl").is_file(), run
    assert any((out / "figures").glob("*.png"))
