"""Sharded training (``trainer.sharding=fsdp``, FSDP2 over gloo on the CPU): two processes under
the shipped launch config (``textrl/data/accelerate/fsdp.yaml``) compute what two data-parallel
(DDP) processes compute, each storing half of the weights and optimizer state; a run killed and
resumed from its sharded checkpoint ends as the uninterrupted run; the saved policy is a plain
Hugging Face directory; LoRA, bf16, gradient checkpointing and a (sharded) learned reward model
compose with it; and one sharded process gives exactly the metrics of a plain run.

Why a two-process sharded run equals a two-process DDP run only to float tolerance, and neither
equals one process at the same global batch: each process draws its own episodes (its own seeds)
and normalises its advantages over its own half of the batch, so one process drawing the whole
batch runs another experiment; between sharded and DDP processes, the episodes are the same
(same seeds, same weights) but FSDP reduce-scatters each gradient shard and sums the squared
norm over shards where DDP all-reduces buckets of whole gradients, so sums are added in another
order and differ in the last bits (about 1e-6 relative after three updates here, 1e-4 for the
explained variance, a difference of nearly equal variances). One sharded process
has nothing to reduce: its metrics are bit-identical to a plain run's.
"""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import pytest
import torch

from conftest import REPO, accelerate_launch, fast, read_jsonl
from textrl.signals import TEST_SIGNAL_AT_UPDATE

FSDP_CONFIG = REPO / "textrl" / "data" / "accelerate" / "fsdp.yaml"
UPDATES = 3


def run_args(out, *extra):
    return fast(out, "device=cpu", "seed=3", f"trainer.updates={UPDATES}", "trainer.threads=1", "logger=none", *extra)


def sharded(out, *extra, env=None):
    """A two-process sharded run through the shipped launch config."""
    return accelerate_launch(*run_args(out, "trainer.sharding=fsdp", *extra), config_file=FSDP_CONFIG, env=env)


def comparable(records):
    """Metrics without wall-clock timings."""
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in records]


@pytest.fixture(scope="module")
def ddp_run(assets, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "run"
    result = accelerate_launch(*run_args(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def fsdp_run(assets, tmp_path_factory) -> Path:
    """Gathering layer by layer (the processes decode in lockstep), a checkpoint after every update."""
    out = tmp_path_factory.mktemp("fsdp") / "run"
    result = sharded(out, "trainer.rollout_gather=per_layer", "trainer.checkpoint_every=1")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_sharded_processes_compute_what_data_parallel_processes_compute(ddp_run, fsdp_run):
    ddp, fsdp = comparable(read_jsonl(ddp_run / "metrics.jsonl")), comparable(read_jsonl(fsdp_run / "metrics.jsonl"))
    assert [r["update"] for r in fsdp] == list(range(1, UPDATES + 1))
    assert [sorted(r) for r in fsdp] == [sorted(r) for r in ddp]
    for a, b in zip(ddp, fsdp):
        far = {k: (a[k], b[k]) for k in a if not math.isclose(a[k], b[k], rel_tol=1e-3, abs_tol=1e-4)}
        assert not far, f"update {a['update']}: {far}"
    assert abs(fsdp[-1]["objective/kl"]) > 1e-3  # the policy moved: the comparison is not of two idle runs
    assert all("perf/gather_s" in r for r in read_jsonl(fsdp_run / "metrics.jsonl"))


def test_the_consolidated_policy_loads_with_transformers_alone(assets, ddp_run, fsdp_run):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    ours = AutoModelForCausalLM.from_pretrained(fsdp_run / "policy").state_dict()
    theirs = AutoModelForCausalLM.from_pretrained(ddp_run / "policy").state_dict()
    assert sorted(ours) == sorted(theirs)
    assert max((ours[k] - theirs[k]).abs().max().item() for k in ours) < 1e-4
    start = AutoModelForCausalLM.from_pretrained(assets / "tinystories-656k", dtype=torch.float32).state_dict()
    moved = max((ours[k] - v).abs().max().item() for k, v in start.items())
    assert moved > 1e-5  # trained weights, not the starting ones
    head, ddp_head = (load_file(run / "policy" / "value_head.safetensors") for run in (fsdp_run, ddp_run))
    assert torch.allclose(head["summary.weight"], ddp_head["summary.weight"], atol=1e-4)
    tied = (fsdp_run / "policy" / "model.safetensors").stat().st_size
    assert tied == (ddp_run / "policy" / "model.safetensors").stat().st_size  # the tied head stored once


def test_each_process_stores_half_of_the_weights_and_optimizer_state(ddp_run, fsdp_run):
    ddp = json.loads((ddp_run / "summary.json").read_text())["stored_bytes"]
    fsdp = json.loads((fsdp_run / "summary.json").read_text())["stored_bytes"]
    assert len(fsdp) == len(ddp) == 2
    for key in ("policy", "reference", "optimizer"):
        whole = ddp[0][key]
        assert whole > 0 and ddp[1][key] == whole
        for process in fsdp:  # dimension 0 split in two; a 1-row value head lands on one process
            assert 0.45 * whole <= process[key] <= 0.55 * whole, (key, process[key], whole)
        assert sum(p[key] for p in fsdp) == pytest.approx(whole, rel=1e-3)


def test_sigkill_then_resume_equals_the_uninterrupted_run(fsdp_run, tmp_path):
    """Killed after update 2 (its last checkpoint: update 1's shards), resumed on two processes.
    Gathered whole here and layer by layer in the uninterrupted run: the same numbers to the bit."""
    out = tmp_path / "killed"
    killed = sharded(out, "trainer.checkpoint_every=1", env={TEST_SIGNAL_AT_UPDATE: "2:KILL"})
    assert killed.returncode != 0
    assert f"Signal {signal.SIGKILL.value} (SIGKILL)" in killed.stderr, killed.stderr[-3000:]
    assert (out / "checkpoints" / "update_000001" / "sharded" / ".metadata").is_file()
    assert not (out / "checkpoints" / "update_000002").exists()

    resumed = sharded(out, "trainer.checkpoint_every=1", "trainer.resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["update"] for r in records] == list(range(1, UPDATES + 1))
    assert comparable(records) == comparable(read_jsonl(fsdp_run / "metrics.jsonl"))


def reward_model_dir(assets, directory: Path) -> tuple[Path, int]:
    """A learned reward model's directory (TinyStories' trunk, a seeded random one-output score
    head) and its parameter count."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        assets / "tinystories-656k", num_labels=1, dtype=torch.float32
    )
    torch.nn.init.normal_(model.score.weight, std=0.5)
    tokenizer = AutoTokenizer.from_pretrained(assets / "tinystories-656k")
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory, sum(p.numel() for p in model.parameters())


def test_lora_bf16_checkpointing_and_a_learned_reward_model_run_sharded(assets, tmp_path):
    from safetensors.torch import load_file

    rm, rm_params = reward_model_dir(assets, tmp_path / "rm")
    out = tmp_path / "lora"
    result = sharded(
        out,
        "policy.lora.r=4",
        "trainer.precision=bf16",
        "policy.gradient_checkpointing=true",
        "reward=learned",
        f"reward.model={rm}",
        "algo.value_init=reward_model",  # read from the reward model before either is sharded
        "trainer.updates=2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["update"] for r in records] == [1, 2]
    assert all(math.isfinite(r["loss/total"]) and r["policy/grad_norm"] > 0 for r in records)
    assert len({r["objective/score"] for r in records}) == 2  # the reward model scores, gathered for each rollout
    adapters = load_file(out / "policy" / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().max() > 0 for k, v in adapters.items())  # trained from B = 0
    stored = json.loads((out / "summary.json").read_text())["stored_bytes"]
    assert all(p["reference"] == 0 for p in stored)  # π_ref is the policy with its adapters off
    assert sum(p["reward_model_0"] for p in stored) == 4 * rm_params  # float32, split between the processes
    assert all(p["reward_model_0"] < 0.6 * 4 * rm_params for p in stored)


def test_one_sharded_process_equals_a_plain_run(assets, tmp_path, cli):
    plain, one = tmp_path / "plain", tmp_path / "sharded"
    assert cli(*run_args(plain, "trainer.updates=2")).returncode == 0
    result = cli(*run_args(one, "trainer.updates=2", "trainer.sharding=fsdp"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert not torch.distributed.is_initialized()  # its one-process group is gone with the run
    assert comparable(read_jsonl(one / "metrics.jsonl")) == comparable(read_jsonl(plain / "metrics.jsonl"))
    stored = json.loads((one / "summary.json").read_text())["stored_bytes"]
    assert stored[0]["policy"] > 0 and stored[0]["optimizer"] > 0
