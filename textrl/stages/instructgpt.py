"""Stage ``instructgpt``: SFT → RM → RL → eval in one command (Ouyang et al. 2022, Figure 2).

Each step runs in its own folder under the run directory and feeds the next:
``sft/model`` is the RL policy, the RM's initialisation and the eval reference; ``rm/model`` is
the RL reward (``reward=learned``); ``rl/policy`` is evaluated against ``sft/model``. With any
other reward (a verifier such as ``reward=arithmetic``, an RBRM) there is no reward model to
train: the pipeline is SFT → RL → eval. Each stage
runs through :func:`textrl.stages.runner.run_logged`, so each gets its own loggers (``metrics.jsonl`` in its
folder; with ``logger=wandb`` its own wandb run, the four in one ``logger.group``).
"""

from __future__ import annotations

import os
import time

from omegaconf import OmegaConf

from textrl.io import atomic_write_json
from textrl.stages import evaluate, reward_model, rl, sft
from textrl.stages.runner import run_logged

STEPS = {"sft": sft.train, "rm": reward_model.train, "rl": rl.train, "eval": evaluate.evaluate}
"""The pipeline's four stages, in order."""


def _stage(cfg, stage: str, **updates):
    sub = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    OmegaConf.set_struct(sub, True)
    OmegaConf.update(sub, "stage", stage)
    for key, value in updates.items():
        OmegaConf.update(sub, key, value)
    return sub


def run_pipeline(cfg, registry, run_dir: str, device) -> dict:
    """Run the four stages; returns ``{stage: summary}`` (also ``summary.json``).

    Raises:
        TextRLError: whatever a stage raises.
    """
    learned = cfg.reward.name == "learned"
    dirs = {name: os.path.join(run_dir, name) for name in STEPS if learned or name != "rm"}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    group = cfg.logger.group or f"instructgpt-{time.strftime('%Y%m%d-%H%M%S')}"

    def stage(name: str, **updates):  # one wandb group; run names <run_name>-<stage> when named
        named = {"logger.run_name": f"{cfg.logger.run_name}-{name}"} if cfg.logger.run_name else {}
        return run_logged(
            STEPS[name], _stage(cfg, name, **{"logger.group": group, **named, **updates}), registry, dirs[name], device
        )

    out = {"sft": stage("sft")}
    sft_dir = out["sft"]["model_dir"]
    policy = {"policy.model": sft_dir, "policy.gguf_file": None}
    if learned:
        out["rm"] = stage("rm", **{"rm.model": sft_dir, "rm.gguf_file": None})
        policy["reward.model"] = out["rm"]["model_dir"]
    out["rl"] = stage("rl", **policy, **{"trainer.save_policy": True})
    out["eval"] = stage(
        "eval",
        **{
            **policy,
            "policy.model": os.path.join(dirs["rl"], "policy"),
            "eval.reference": sft_dir,
            "eval.reference_gguf_file": None,
        },
    )
    atomic_write_json(os.path.join(run_dir, "summary.json"), out)
    return out
