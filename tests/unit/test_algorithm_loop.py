"""The shared optimisation loop (textrl.algorithms.base): micro-batches accumulate to the same
step as the whole minibatch, per-step terms are added once per step, the contract is checked,
algorithms without a critic leave the value head out, and non-finite values stop before a step."""

from __future__ import annotations

import copy

import pytest
import torch

from textrl import EPISODE_METRICS, SetupContext
from textrl.algorithms import PPO, PPOPtx, Reinforce
from textrl.algorithms.base import check_metrics
from textrl.envs import TokenGenVectorEnv
from textrl.errors import NonFiniteError, TextRLError
from textrl.policies import SamplingConfig
from textrl.rollout.collector import RolloutCollector

from conftest import length_reward, make_policy


def rollout(tokenizer, policy, n=8, k=1):
    env = TokenGenVectorEnv(
        tokenizer,
        ["the dog", "a girl saw", "the movie was", "it"],
        length_reward,
        num_envs=n,
        max_new_tokens=6,
        max_prompt_tokens=8,
        autoreset_mode="disabled",
    )
    return RolloutCollector(
        env, policy, copy.deepcopy(policy.lm), SamplingConfig(), seed=0, samples_per_prompt=k
    ).collect()


def count_passes(algo):
    """Record the episode count of every loss() call of ``algo``."""
    sizes, loss = [], algo.loss

    def counted(batch, prepared):
        sizes.append(batch.batch_size)
        return loss(batch, prepared)

    algo.loss = counted
    return sizes


def max_weight_diff(a, b) -> float:
    return max(float((p.detach() - q.detach()).abs().max()) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize(
    "make",
    [
        lambda micro: PPO(lr=1e-2, epochs=1, minibatch_size=8, micro_batch_size=micro),
        lambda micro: Reinforce(lr=1e-2, epochs=1, minibatch_size=8, baseline="none", micro_batch_size=micro),
    ],
    ids=["ppo", "reinforce"],
)
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_micro_batches_give_the_same_update_as_the_whole_minibatch(tokenizer, make, optimizer):
    policy = make_policy(tokenizer)
    batch = rollout(tokenizer, policy)
    results = {}
    for micro in (None, 3):  # 3 does not divide 8: chunks of 3, 3 and 2 episodes
        trained = copy.deepcopy(policy)
        algo = make(micro)
        algo.setup(trained, None)
        if optimizer == "sgd":  # weights move by lr x gradient: a direct view of the accumulated gradient
            algo.optimizer = torch.optim.SGD(algo.optimizer.param_groups[0]["params"], lr=1.0)
        sizes = count_passes(algo)
        results[micro] = (trained, algo.update(batch), sizes)
    whole, split = results[None], results[3]
    assert whole[2] == [8] and split[2] == [3, 3, 2]  # the split really happened
    assert max_weight_diff(policy, whole[0]) > 1e-3  # the update moved the weights
    # ... and the same way up to float rounding. AdamW's first step is lr·g/(|g|+ε): for the
    # near-zero gradients of a random model, float32 rounding of g moves it by up to ~1e-3·lr.
    assert max_weight_diff(whole[0], split[0]) < (1e-6 if optimizer == "sgd" else 1e-3 * 1e-2)
    for key in ("loss/total", "loss/policy", "policy/grad_norm"):
        assert split[1][key] == pytest.approx(whole[1][key], rel=1e-5, abs=1e-7)


def test_ppo_ptx_draws_its_pretraining_batch_once_per_optimizer_step(tokenizer, tmp_path):
    (tmp_path / "ptx.txt").write_text("the dog ran in the park\na girl saw the cat\n")
    policy = make_policy(tokenizer)
    batch = rollout(tokenizer, policy)
    algo = PPOPtx(
        ptx_coef=0.5,
        ptx_data=str(tmp_path / "ptx.txt"),
        ptx_batch_size=2,
        lr=1e-2,
        epochs=2,
        minibatch_size=4,
        micro_batch_size=2,
    )
    algo.setup(policy, None, SetupContext(tokenizer=tokenizer))
    draws, ptx_loss = [], algo.ptx_loss
    algo.ptx_loss = lambda: draws.append(1) or ptx_loss()
    sizes = count_passes(algo)
    metrics = algo.update(batch)
    assert sizes == [2] * 8 and len(draws) == 4  # 2 epochs x 2 steps, each of two chunks, one ptx draw per step
    assert metrics["loss/ptx"] > 0


def test_minibatches_follow_the_seeded_shuffle_and_cover_the_batch(tokenizer):
    policy = make_policy(tokenizer)
    batch = rollout(tokenizer, policy)
    torch.manual_seed(3)
    algo = PPO(lr=1e-3, epochs=2, minibatch_size=4)
    algo.setup(policy, None)
    seen = []
    loss = algo.loss
    algo.loss = lambda mb, prepared: seen.append(mb.input_ids) or loss(mb, prepared)
    algo.update(batch)
    expected = torch.Generator().manual_seed(3)
    for epoch in range(2):
        order = torch.randperm(8, generator=expected)
        rows = torch.cat(seen[2 * epoch : 2 * epoch + 2])
        assert torch.equal(rows, batch.input_ids[order])


def test_update_returns_the_contract_metrics_as_floats(tokenizer):
    policy = make_policy(tokenizer)
    batch = rollout(tokenizer, policy, k=2)
    for algo in (PPO(lr=1e-3, minibatch_size=4, epochs=1), Reinforce(lr=1e-3, baseline="leave_one_out")):
        algo.setup(copy.deepcopy(policy), None)
        metrics = check_metrics(algo.update(batch))
        assert set(EPISODE_METRICS) <= set(metrics) and {"loss/total", "policy/grad_norm"} <= set(metrics)
        assert all(type(v) is float for v in metrics.values())
        kl = float(((batch.logprobs - batch.ref_logprobs) * batch.action_mask).sum(1).mean())
        assert metrics["objective/kl"] == pytest.approx(kl)


def test_check_metrics_names_what_is_wrong():
    good = {k: 0.0 for k in EPISODE_METRICS}
    assert check_metrics(good, "x") is good
    with pytest.raises(TextRLError, match="algo=x: update\\(\\) metrics lack 'objective/kl'"):
        check_metrics({k: v for k, v in good.items() if k != "objective/kl"}, "x")
    with pytest.raises(TextRLError, match="metric 'loss/policy': got tensor"):
        check_metrics({**good, "loss/policy": torch.tensor(1.0)}, "x")
    with pytest.raises(TextRLError, match="returned list"):
        check_metrics([], "x")


def test_an_algorithm_without_a_critic_freezes_the_value_head(tokenizer):
    policy = make_policy(tokenizer)
    algo = Reinforce(lr=1e-3)
    algo.setup(policy, None)
    trained = {id(p) for group in algo.optimizer.param_groups for p in group["params"]}
    assert not any(p.requires_grad for p in policy.value_head.parameters())
    assert trained == {id(p) for p in policy.lm.parameters()}
    ppo = PPO(lr=1e-3)
    ppo.setup(make_policy(tokenizer), None)
    assert sum(len(g["params"]) for g in ppo.optimizer.param_groups) == len(list(ppo.policy.parameters()))


def test_a_non_finite_loss_stops_before_the_optimizer_step(tokenizer):
    policy = make_policy(tokenizer)
    batch = rollout(tokenizer, policy)
    before = copy.deepcopy(policy)
    algo = PPO(lr=1e-2, epochs=1, minibatch_size=4, micro_batch_size=2)
    algo.setup(policy, None)
    loss = algo.loss
    algo.loss = lambda mb, prepared: {**loss(mb, prepared), "loss/total": torch.tensor(float("nan"))}
    with pytest.raises(NonFiniteError, match="loss/total is nan"):
        algo.update(batch)
    assert max_weight_diff(before, policy) == 0.0


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"micro_batch_size": 0}, "algo.micro_batch_size"),
        ({"minibatch_size": 0}, "algo.minibatch_size"),
        ({"lr": 0}, "algo.lr"),
    ],
)
def test_loop_settings_are_checked_once(kwargs, key):
    for factory in (PPO, Reinforce):
        with pytest.raises(TextRLError, match=f"{key}: got 0"):
            factory(**kwargs)


def test_minibatch_that_does_not_divide_the_batch_is_a_clear_error(tokenizer):
    policy = make_policy(tokenizer)
    algo = PPO(lr=1e-3, minibatch_size=3)
    algo.setup(policy, None)
    with pytest.raises(TextRLError, match="algo.minibatch_size: got 3; expected a divisor of rollout.batch_size=8"):
        algo.update(rollout(tokenizer, policy))


# -- memory control: chunked π_ref pass, gradient checkpointing ----------------------------------
def test_reference_pass_in_chunks_gives_the_same_logprobs(tokenizer):
    policy = make_policy(tokenizer)
    whole = rollout(tokenizer, policy)
    env = TokenGenVectorEnv(
        tokenizer,
        ["the dog", "a girl saw", "the movie was", "it"],
        length_reward,
        num_envs=8,
        max_new_tokens=6,
        max_prompt_tokens=8,
        autoreset_mode="disabled",
    )
    reference = copy.deepcopy(policy.lm)
    calls = []
    reference.base_model.register_forward_hook(  # the trunk: the head runs apart, in float32
        lambda module, args, kwargs, out: calls.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    chunked = RolloutCollector(env, policy, reference, SamplingConfig(), seed=0, chunk_size=3).collect()
    assert calls == [3, 3, 2]
    assert torch.equal(chunked.input_ids, whole.input_ids)
    torch.testing.assert_close(chunked.ref_logprobs, whole.ref_logprobs, rtol=1e-6, atol=1e-6)


def test_gradient_checkpointing_recomputes_layers_and_keeps_the_update(tokenizer):
    policy = make_policy(tokenizer)
    batch = rollout(tokenizer, policy)
    plain, checkpointed = copy.deepcopy(policy), copy.deepcopy(policy)
    checkpointed.enable_gradient_checkpointing()
    layers = checkpointed.checkpointed_layers
    assert len(layers) == 2 and all(layer.gradient_checkpointing for layer in layers)
    recomputed = []
    for layer in layers:
        run = layer._gradient_checkpointing_func
        layer._gradient_checkpointing_func = lambda *a, run=run, **k: recomputed.append(1) or run(*a, **k)
    with torch.no_grad():  # rollouts (no graph, KV cache) are not checkpointed
        rollout(tokenizer, checkpointed)
    assert recomputed == []
    for model in (plain, checkpointed):
        algo = PPO(lr=1e-2, epochs=1, minibatch_size=8)
        algo.setup(model, None)
        algo.update(batch)
    assert len(recomputed) == 2  # one checkpointed pass through each layer
    assert not any(layer.training for layer in layers)  # the policy is back in eval mode
    assert max_weight_diff(policy, plain) > 1e-3
    assert max_weight_diff(plain, checkpointed) < 1e-6


def test_gradient_checkpointing_is_a_policy_setting(assets):
    from textrl.policies import PolicyWithValueHead

    model = str(assets / "tinystories-656k")
    policy = PolicyWithValueHead.from_pretrained(model, gradient_checkpointing=True)
    assert policy.checkpointed_layers and all(layer.gradient_checkpointing for layer in policy.checkpointed_layers)
    assert not PolicyWithValueHead.from_pretrained(model).checkpointed_layers


@pytest.mark.parametrize("algo", ["ppo", "ppo_ptx", "reinforce", "grpo"])
def test_memory_settings_are_config_keys(algo):
    from conftest import compose_config

    cfg = compose_config([f"algo={algo}", "algo.micro_batch_size=4", "policy.gradient_checkpointing=true"])
    assert cfg.algo.micro_batch_size == 4 and cfg.policy.gradient_checkpointing is True
    assert compose_config([f"algo={algo}"]).algo.micro_batch_size is None
