"""Weights & Biases logging: the resolved config, per-update metrics, a samples table and the
stage's figures (``report.png`` at the end of an RL run, ``eval_report.png`` at the end of eval).

One wandb run per stage (``job_type`` = the stage), grouped by ``logger.group``;
``stage=instructgpt`` puts its four stages in one group. Runs offline (``logger.mode=offline``, the
default) unless configured online; files land in the stage's run directory's ``wandb/`` folder.
``wandb`` is imported only when this logger is selected.
"""

from __future__ import annotations

import os

from omegaconf import OmegaConf

from textrl.hookspecs import hookimpl
from textrl.report import EVAL_FIGURE, RL_FIGURE


class WandbLogger:
    """Logs to wandb: ``wandb.init(config=<resolved config as a dict>, group=logger.group,
    job_type=<stage>)`` at the stage's start, ``wandb.log`` per metrics record, a ``samples``
    table of (update, prompt, response, score) every ``table_every`` updates, ``summary``, the
    stage's figure (``report.png`` as the image ``report``, eval's ``eval_report.png`` as
    ``eval/reward_histogram``) and ``finish`` at the stage's end."""

    def __init__(self, cfg_logger):
        self.cfg = cfg_logger
        self.run = None
        self.run_dir = None
        self.rows: list[list] = []

    @hookimpl
    def textrl_on_stage_start(self, cfg, run_dir):
        """Start the stage's wandb run (grouped with the pipeline's other stages)."""
        import wandb

        self.wandb = wandb
        self.run_dir = run_dir
        self.run = wandb.init(
            project=self.cfg.project,
            entity=self.cfg.entity,
            mode=self.cfg.mode,
            name=self.cfg.run_name,
            group=self.cfg.group,
            job_type=cfg.stage,
            tags=list(self.cfg.tags),
            dir=run_dir,
            config=OmegaConf.to_container(cfg, resolve=True),
            reinit="finish_previous",
        )

    @hookimpl
    def textrl_on_metrics(self, update, metrics, samples):
        """Log the update's metrics at step ``update`` and keep its samples for the table."""
        self.rows += [[update, s["prompt"], s["response"], s["score"]] for s in samples]
        record = dict(metrics)
        if self.rows and update % self.cfg.table_every == 0:
            record["samples"] = self.wandb.Table(columns=["update", "prompt", "response", "score"], data=self.rows)
        self.run.log(record, step=update)

    @hookimpl
    def textrl_on_stage_end(self, summary):
        """Log the samples table, the report figures and the summary, then finish the run."""
        if self.rows:
            self.run.log(
                {"samples": self.wandb.Table(columns=["update", "prompt", "response", "score"], data=self.rows)}
            )
        for name, figure in (("report", RL_FIGURE), ("eval/reward_histogram", EVAL_FIGURE)):
            path = os.path.join(self.run_dir, figure)
            if os.path.isfile(path):  # drawn by the rl (eval) stage just before this hook
                self.run.log({name: self.wandb.Image(path)})
        self.run.summary.update(summary)
        self.run.finish()
