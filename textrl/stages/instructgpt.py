"""Stage ``instructgpt``: SFT → RM → RL → eval in one command (Ouyang et al. 2022, Figure 2).

Each step runs in its own folder under the run directory and feeds the next:
``sft/model`` is the RL policy, the RM's initialisation and the eval reference; ``rm/model`` is
the RL reward (``reward=learned``); ``rl/policy`` is evaluated against ``sft/model``.
"""

from __future__ import annotations

import os

from omegaconf import OmegaConf

from textrl.errors import TextRLError
from textrl.io import atomic_write_json


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
        TextRLError: the RL reward is not ``learned`` (the pipeline trains it).
    """
    from textrl.stages import evaluate, reward_model, rl, sft

    if cfg.reward.name != "learned":
        raise TextRLError(f"stage=instructgpt: got reward={cfg.reward.name}; expected reward=learned (trained by rm)")
    dirs = {name: os.path.join(run_dir, name) for name in ("sft", "rm", "rl", "eval")}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    out = {"sft": sft.train(_stage(cfg, "sft"), dirs["sft"], device)}
    sft_dir = out["sft"]["model_dir"]
    out["rm"] = reward_model.train(_stage(cfg, "rm", **{"rm.model": sft_dir, "rm.gguf_file": None}), dirs["rm"], device)
    policy = {"policy.model": sft_dir, "policy.gguf_file": None, "reward.model": out["rm"]["model_dir"]}
    out["rl"] = rl.train(_stage(cfg, "rl", **policy, **{"trainer.save_policy": True}), registry, dirs["rl"], device)
    out["eval"] = evaluate.evaluate(
        _stage(cfg, "eval", **{**policy, "policy.model": os.path.join(dirs["rl"], "policy"), "eval.reference": sft_dir,
                               "eval.reference_gguf_file": None}), registry, dirs["eval"], device)
    atomic_write_json(os.path.join(run_dir, "summary.json"), out)
    return out
