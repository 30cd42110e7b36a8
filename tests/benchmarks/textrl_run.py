"""The one way the benchmark scripts run a ``textrl`` command: ``python -m textrl ARGS`` in a
subprocess with the Hugging Face Hub offline, its output in a log file, its wall time returned.

Not collected by pytest (a helper of the benchmark scripts, imported from their folder).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path


def run_textrl(args: list[str], log_path: Path, *, extra_env: dict[str, str] | None = None) -> float:
    """Run ``python -m textrl ARGS`` (``HF_HUB_OFFLINE=1``; ``WANDB_MODE`` as set, else ``disabled``;
    plus ``extra_env``) with stdout and stderr in ``log_path``; returns the wall time in seconds.

    Raises:
        SystemExit: the command failed; the message holds the end of its log.
    """
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": os.environ.get("WANDB_MODE", "disabled")}
    env.update(extra_env or {})
    print("$ python -m textrl " + " ".join(shlex.quote(a) for a in args), flush=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        code = subprocess.run([sys.executable, "-m", "textrl", *args], stdout=log, stderr=subprocess.STDOUT, env=env)
    if code.returncode:
        raise SystemExit(f"textrl failed ({code.returncode}); the end of {log_path}:\n{log_path.read_text()[-3000:]}")
    return time.perf_counter() - start
