"""``metrics.jsonl`` (one object per update) and ``samples.jsonl`` in the run directory."""

from __future__ import annotations

import os

from textrl.hookspecs import hookimpl
from textrl.io import append_jsonl


class JsonlLogger:
    """Appends each update's metrics (with ``update``) and samples as JSON lines."""

    def __init__(self, run_dir: str):
        self.metrics_path = os.path.join(run_dir, "metrics.jsonl")
        self.samples_path = os.path.join(run_dir, "samples.jsonl")

    @hookimpl
    def textrl_on_update_end(self, update, metrics, samples):
        append_jsonl(self.metrics_path, {"update": update, **metrics})
        for sample in samples:
            append_jsonl(self.samples_path, {"update": update, **sample})
