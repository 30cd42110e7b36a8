"""Weights & Biases logging: the resolved config, per-update metrics, a samples table and the
run's figures (``report.png`` at the end of an RL run, the eval histograms through
:func:`log_figures`).

Runs offline (``logger.mode=offline``, the default) unless configured online; files land in the
run directory's ``wandb/`` folder. ``wandb`` is imported only when this logger is selected.
"""

from __future__ import annotations

import os

from omegaconf import OmegaConf

from textrl.hookspecs import hookimpl
from textrl.report import RL_FIGURE


class WandbLogger:
    """Logs to wandb: ``wandb.init(config=<resolved config as a dict>)``, ``wandb.log`` per
    update, a ``samples`` table of (update, prompt, response, score) every ``table_every``
    updates, ``summary`` and the ``report.png`` figure (as the image ``report``) at the end."""

    def __init__(self, cfg_logger):
        self.cfg = cfg_logger
        self.run = None
        self.run_dir = None
        self.rows: list[list] = []

    @hookimpl
    def textrl_on_train_start(self, cfg, run_dir):
        import wandb

        self.wandb = wandb
        self.run_dir = run_dir
        self.run = wandb.init(project=self.cfg.project, entity=self.cfg.entity, mode=self.cfg.mode,
                              name=self.cfg.run_name, tags=list(self.cfg.tags), dir=run_dir,
                              config=OmegaConf.to_container(cfg, resolve=True), reinit="finish_previous")

    @hookimpl
    def textrl_on_update_end(self, update, metrics, samples):
        self.rows += [[update, s["prompt"], s["response"], s["score"]] for s in samples]
        record = dict(metrics)
        if self.rows and update % self.cfg.table_every == 0:
            record["samples"] = self.wandb.Table(columns=["update", "prompt", "response", "score"], data=self.rows)
        self.run.log(record, step=update)

    @hookimpl
    def textrl_on_train_end(self, summary):
        if self.rows:
            self.run.log({"samples": self.wandb.Table(columns=["update", "prompt", "response", "score"],
                                                      data=self.rows)})
        figure = os.path.join(self.run_dir, RL_FIGURE)
        if os.path.isfile(figure):  # drawn by the RL stage just before this hook
            self.run.log({"report": self.wandb.Image(figure)})
        self.run.summary.update(summary)
        self.run.finish()


def log_figures(cfg, run_dir: str, figures: dict[str, str], summary: dict | None = None) -> None:
    """Log PNG files to wandb as images (``{name: path}``) for a stage without a wandb run of its
    own (``stage=eval``), with ``summary`` in the run summary: one short run in ``run_dir/wandb``,
    configured like :class:`WandbLogger` (``logger.*``) and finished before returning. Inside an
    active wandb run the images go to that run instead."""
    import wandb

    active = wandb.run
    run = active or wandb.init(project=cfg.logger.project, entity=cfg.logger.entity, mode=cfg.logger.mode,
                               name=cfg.logger.run_name, tags=list(cfg.logger.tags), dir=run_dir,
                               config=OmegaConf.to_container(cfg, resolve=True), reinit="finish_previous")
    run.log({name: wandb.Image(path) for name, path in figures.items()})
    if summary:
        run.summary.update({k: v for k, v in summary.items() if not isinstance(v, (list, dict))})
        for block in ("policy", "reference"):
            for key, value in (summary.get(block) or {}).items():
                run.summary[f"{block}/{key}"] = value
    if active is None:
        run.finish()
