"""bf16 against fp32 on the same seed, through the RL stage (:mod:`textrl.precision`): no stale
weights (``policy/approxkl`` and ``policy/clipfrac`` at update 1 a sizeable fraction of fp32's; one
autocast region around the whole update gave 0.11x and 0.03x) and a KL at update 1 (policy =
reference) within a bound of 0 (measured -0.0013 nats per episode on TinyStories; -0.0155 with bf16
heads), for a full and a LoRA policy."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import compose_config


def update_one(tmp_path, precision, *extra):
    """Update 1 of ``experiment=tinystories_sentiment`` (2 PPO epochs) in this process: its metrics record."""
    from textrl.plugins import load_plugins
    from textrl.run import run

    registry = load_plugins(autoload=False)
    cfg = compose_config(
        [
            "experiment=tinystories_sentiment",
            "device=cpu",
            f"trainer.precision={precision}",
            "trainer.updates=1",
            "algo.epochs=2",
            "trainer.progress_bar=false",
            "logger=none",
            "trainer.save_policy=false",
            "trainer.threads=2",
            *extra,
        ],
        registry,
    )
    threads = torch.get_num_threads()
    try:
        run(cfg, run_dir=str(tmp_path / precision), registry=registry)
    finally:
        torch.set_num_threads(threads)
    return json.loads((tmp_path / precision / "metrics.jsonl").read_text().splitlines()[0])


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_bf16_ppo_steps_on_fresh_weights_and_keeps_kl_near_zero(assets, tmp_path, lora):
    extra = ["policy.lora.r=8", "algo.lr=1e-2"] if lora else []
    fp32, bf16 = (update_one(tmp_path, p, *extra) for p in ("fp32", "bf16"))
    print(
        {
            p: {k: r[k] for k in ("policy/approxkl", "policy/clipfrac", "objective/kl")}
            for p, r in (("fp32", fp32), ("bf16", bf16))
        }
    )
    assert abs(fp32["objective/kl"]) < 1e-5  # policy = reference at update 1: 0 up to summation order
    # measured (full): approxkl 0.00184 vs 0.00443 (0.41x), clipfrac 0.0132 vs 0.0381 (0.35x);
    # one autocast region around collect() and update() gave 0.11x and 0.03x
    assert bf16["policy/approxkl"] >= fp32["policy/approxkl"] / 4, (bf16, fp32)
    assert bf16["policy/clipfrac"] >= fp32["policy/clipfrac"] / 5, (bf16, fp32)
    assert fp32["policy/clipfrac"] > 0  # the bounds above are not met by two zeros
    # measured -0.0013 nats per episode on one 2-core CPU and +0.0096 on another (AMD EPYC with
    # avx512_bf16: oneDNN's bf16 kernels depend on the CPU); bf16 heads gave -0.0155 on the first
    assert abs(bf16["objective/kl"]) <= 0.012, bf16["objective/kl"]
