"""The mixed-precision policy (:mod:`textrl.precision`), checked with bf16 autocast on the CPU.

- heads: the LM head's logits and the value head's V(s) are float32 under bf16 autocast, equal to a
  float32 head applied to the trunk's hidden state, and a policy whose weights are all bf16 still runs;
- no stale weights: every loss forward pass of the optimisation loop runs in its own autocast region,
  so each minibatch after the first sees the weights of the optimizer step before it, and the trainer
  runs ``update()`` outside any region (the runs against fp32 are in
  ``tests/integration/test_precision_runs.py``).
"""

from __future__ import annotations

import contextlib

import torch

from textrl.algorithms.base import Algorithm, SetupContext
from textrl.policies.scoring import response_logits
from textrl.policies.logits import float32_head
from textrl.policies.sampling import SamplingConfig

BF16 = torch.autocast("cpu", dtype=torch.bfloat16)


def test_policy_logits_and_values_are_float32_under_bf16_autocast(policy):
    ids = torch.tensor([[2, 5, 6, 7, 8]])
    mask = torch.ones_like(ids)
    with BF16:
        out = policy(ids, mask)
        hidden = policy.lm.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert out.logits.dtype == torch.float32 and out.values.dtype == torch.float32
    head = policy.lm.get_output_embeddings()
    expected_logits = hidden.float() @ head.weight.T
    expected_values = (hidden.float() @ policy.value_head.summary.weight.T).squeeze(-1) + policy.value_head.summary.bias
    torch.testing.assert_close(out.logits, expected_logits, rtol=0, atol=1e-5)  # a bf16 head is off by ~1e-2
    torch.testing.assert_close(out.values, expected_values, rtol=0, atol=1e-5)


def test_reference_logits_are_float32_under_bf16_autocast(policy):
    ids = torch.tensor([[2, 5, 6, 7, 8], [0, 0, 2, 9, 10]])
    mask = (ids != 0).long()
    with BF16:
        ref = response_logits(policy.lm, ids, mask, response_length=2)
        ours = policy.response_outputs(ids, mask, 2)[0]
    assert ref.dtype == torch.float32
    torch.testing.assert_close(ref, ours, rtol=0, atol=0)  # π_ref and the policy share the float32 head path


def test_a_policy_cast_to_bf16_keeps_a_working_value_head(policy):
    policy = policy.to(torch.bfloat16)  # what a user (or a benchmark) casting the whole module does
    out = policy(torch.tensor([[2, 5, 6]]), torch.ones(1, 3, dtype=torch.long))
    assert out.values.dtype == torch.float32 and out.logits.dtype == torch.float32
    assert torch.isfinite(out.values).all()


def test_float32_head_turns_autocast_off():
    head = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with BF16:
        assert head(x).dtype == torch.bfloat16  # what autocast does to a head left inside it
        assert float32_head(head, x).dtype == torch.float32
    torch.testing.assert_close(float32_head(head, x), head(x))


class Probe(Algorithm):
    """An algorithm whose loss records the log-prob of one token under the current weights."""

    def __init__(self):
        super().__init__(lr=0.02, kl={"init": 0.0}, epochs=3, minibatch_size=2, max_grad_norm=None)
        self.seen = []

    def prepare(self, batch):
        return {}

    def loss(self, batch, prepared):
        logits, _ = self.model.response_outputs(batch.input_ids, batch.attention_mask, batch.response_length)
        logp = torch.log_softmax(logits, -1)[..., 3].mean()
        self.seen.append(float(logp.detach()))
        return {"loss/total": -logp}


def probe_batch(tokenizer):
    from textrl.rollout.buffer import RolloutBatch

    ids = torch.tensor([[2, 5, 6, 7], [2, 8, 9, 10]])
    zeros = torch.zeros(2, 2)
    return RolloutBatch(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        action_mask=torch.ones(2, 2),
        rewards=zeros,
        logprobs=zeros,
        ref_logprobs=zeros,
        untruncated_logprobs=zeros,
        values=zeros,
        scores=torch.zeros(2),
        prompts=["a", "b"],
        responses=["c", "d"],
        sampling=SamplingConfig(),
        vocab_size=len(tokenizer),
    )


def probe_update(policy, tokenizer, outer_region: bool) -> list[float]:
    """Three bf16 optimizer steps that train only the trunk's linear layers (the weights autocast
    caches as bf16 copies); the log-prob the loss saw at each step."""
    for name, param in policy.named_parameters():
        param.requires_grad_("layers" in name and "proj" in name)
    algo = Probe()
    algo.setup(policy, None, SetupContext(precision="bf16"))
    with torch.autocast("cpu", dtype=torch.bfloat16) if outer_region else contextlib.nullcontext():
        algo.update(probe_batch(tokenizer))
    return algo.seen


def test_each_minibatch_forward_sees_the_weights_of_the_step_before(tokenizer):
    from conftest import make_policy

    seen = probe_update(make_policy(tokenizer), tokenizer, outer_region=False)  # as the trainer calls update()
    assert seen[1] > seen[0] + 1e-3 and seen[2] > seen[1] + 1e-3, seen
    # the test can fail: one autocast region around the whole update keeps the step-1 casts
    stale = probe_update(make_policy(tokenizer), tokenizer, outer_region=True)
    assert stale[0] == stale[1] == stale[2], stale


def test_the_trainer_runs_the_update_outside_autocast(monkeypatch, tokenizer):
    """``run_update`` opens one autocast region for the rollout and none around ``update()``."""
    from types import SimpleNamespace

    from textrl.stages import rl

    states = {}

    def collect():
        states["collect"] = torch.is_autocast_enabled("cpu")
        return probe_batch(tokenizer)

    def update(batch):
        states["update"] = torch.is_autocast_enabled("cpu")
        return {
            k: 0.0 for k in ("objective/kl", "objective/score", "objective/rlhf_reward", "kl/beta", "episode/length")
        }

    run = SimpleNamespace(
        device=torch.device("cpu"),
        collector=SimpleNamespace(collect=collect),
        algorithm=SimpleNamespace(update=update),
        sharding=None,
    )
    cfg = SimpleNamespace(
        trainer=SimpleNamespace(precision="bf16"),
        algo=SimpleNamespace(name="probe"),
        env=SimpleNamespace(turn_reward="final"),
    )
    rl.run_update(cfg, run, 1, "unused")
    assert states == {"collect": True, "update": False}
