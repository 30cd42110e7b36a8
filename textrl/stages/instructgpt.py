"""Stage ``instructgpt``: SFT → RM → RL → eval in one command (Ouyang et al. 2022, Figure 2).

Each step runs in its own folder under the run directory and feeds the next through
``policy.model`` (so the policy must take one, as ``policy=hf`` does): ``sft/model`` is the RL
policy, the RM's initialisation and the eval reference; ``rm/model`` is the RL reward
(``reward=learned``); ``rl/policy`` is evaluated against ``sft/model``. With any other reward (a
verifier such as ``reward=arithmetic``, an RBRM) there is no reward model to train: the pipeline is
SFT → RL → eval. Each stage runs through :func:`textrl.stages.runner.run_logged`, so each gets its
own loggers (``metrics.jsonl`` in its folder; with ``logger=wandb`` its own wandb run, the four in
one ``logger.group``).

Stage ``rlhf`` is the same pipeline without SFT, for a policy that already follows instructions
(e.g. SmolLM2-135M-Instruct): RM → RL → eval, the RM initialised from ``rm.model`` (default
``policy.model``), the RL policy ``policy.model``, evaluated against ``eval.reference`` (default
``policy.model``). A ``reward=composite`` whose components include ``learned`` ones without a
``model`` gets the trained RM in each of them.
"""

from __future__ import annotations

import os
import time

from omegaconf import OmegaConf

from textrl.errors import TextRLError
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


def learned_reward_keys(reward) -> list[str]:
    """The config keys that take the trained RM's directory: ``reward.model`` for
    ``reward=learned``; for ``reward=composite``, ``reward.components.<label>.model`` of each
    ``learned`` component without a model. Empty: no reward model to train."""
    if reward.name == "learned":
        return ["reward.model"]
    if reward.name == "composite":
        components = OmegaConf.to_container(reward, resolve=True).get("components") or {}
        return [
            f"reward.components.{label}.model"
            for label, node in components.items()
            if isinstance(node, dict) and node.get("name") == "learned" and node.get("model") in (None, "???")
        ]
    return []


def run_pipeline(cfg, registry, run_dir: str, device, *, with_sft: bool = True) -> dict:
    """Run the stages (``with_sft=False``: stage ``rlhf``, see the module docstring); returns
    ``{stage: summary}`` (also ``summary.json``).

    Raises:
        TextRLError: a policy without ``policy.model`` (the stages pass their outputs on through
            it), or whatever a stage raises.
    """
    if "model" not in cfg.policy:
        raise TextRLError(
            f"stage: got {cfg.stage!r} with policy={cfg.policy.name}, which takes no policy.model; expected a "
            f"policy whose factory takes model (each stage's saved policy is loaded by the next through it), "
            f"e.g. policy=hf"
        )
    reward_keys = learned_reward_keys(cfg.reward)
    learned = bool(reward_keys)
    dirs = {
        name: os.path.join(run_dir, name) for name in STEPS if (learned or name != "rm") and (with_sft or name != "sft")
    }
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    group = cfg.logger.group or f"{cfg.stage}-{time.strftime('%Y%m%d-%H%M%S')}"

    def stage(name: str, **updates):  # one wandb group; run names <run_name>-<stage> when named
        named = {"logger.run_name": f"{cfg.logger.run_name}-{name}"} if cfg.logger.run_name else {}
        return run_logged(
            STEPS[name], _stage(cfg, name, **{"logger.group": group, **named, **updates}), registry, dirs[name], device
        )

    def load_from(directory: str) -> dict:  # the policy loads from a saved directory (policy.gguf_file off)
        return {"policy.model": directory, **({"policy.gguf_file": None} if "gguf_file" in cfg.policy else {})}

    out, policy, start = {}, {}, {}
    if with_sft:
        out["sft"] = stage("sft")
        sft_dir = out["sft"]["model_dir"]
        policy = load_from(sft_dir)
        start = {"rm.model": sft_dir, "rm.gguf_file": None}
        reference = {"eval.reference": sft_dir, "eval.reference_gguf_file": None}
    else:
        reference = {"eval.reference": cfg.eval.reference, "eval.reference_gguf_file": cfg.eval.reference_gguf_file}
    if learned:
        out["rm"] = stage("rm", **start)
        policy.update({key: out["rm"]["model_dir"] for key in reward_keys})
    out["rl"] = stage("rl", **policy, **{"trainer.save_policy": True})
    out["eval"] = stage(
        "eval",
        **{**policy, **load_from(os.path.join(dirs["rl"], "policy")), **reference},
    )
    atomic_write_json(os.path.join(run_dir, "summary.json"), out)
    return out
