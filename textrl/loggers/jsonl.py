"""``metrics.jsonl`` (one object per metrics record) and ``samples.jsonl`` in the stage's run directory."""

from __future__ import annotations

import os

from textrl.hookspecs import hookimpl
from textrl.io import append_jsonl


class JsonlLogger:
    """Appends each metrics record (with ``update``) and its samples as strict JSON lines
    (non-finite numbers become ``null``).

    Args:
        run_dir: the stage's run directory.
        fresh: delete the files an earlier run left in ``run_dir`` first; for the stages that do
            not resume (sft, rm, eval). rl keeps them: its resume cuts them back to the checkpoint.
    """

    def __init__(self, run_dir: str, fresh: bool = False):
        self.metrics_path = os.path.join(run_dir, "metrics.jsonl")
        self.samples_path = os.path.join(run_dir, "samples.jsonl")
        if fresh:
            for path in (self.metrics_path, self.samples_path):
                if os.path.exists(path):
                    os.remove(path)

    @hookimpl
    def textrl_on_metrics(self, update, metrics, samples):
        """Append the update's record to ``metrics.jsonl`` and its samples to ``samples.jsonl``."""
        append_jsonl(self.metrics_path, {"update": update, **metrics})
        for sample in samples:
            append_jsonl(self.samples_path, {"update": update, **sample})
