"""The compiled engine on multi-turn episodes: its ragged extend into the static cache (and the
cache compaction behind it) draws what the eager engine draws, and its rollouts equal a
teacher-forced recompute over the whole multi-turn sequence.

As in tests/test_engines.py, CI compiles with the ``aot_eager`` backend (dynamo capture and AOT
functionalisation of the token step, without inductor's code generation).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

import textrl
from textrl.envs import TokenGenVectorEnv
from textrl.policies import SamplingConfig, frozen_reference
from textrl.policies.kv_cache import compact_left
from textrl.policies.sampling import token_logprobs
from textrl.rollout.collector import RolloutCollector
from textrl.rollout.engines import CompiledEngine, EagerEngine

from conftest import length_reward

# prompts of 2, 4, 8 and 3 tokens (with BOS): left padding differs per row
PROMPTS = ["happy", "the dog ran", "a girl saw the cat in the park", "this movie"]


class Replies(textrl.Interaction):
    """Turns end at common words; replies of 1-4 words that depend on the prompt and the turn (so
    slots receive insertions of different lengths on the same step); ends after 3 turns."""

    stop_strings = ("dog", "cat", "ball", "park")

    def respond(self, episode):
        k = episode.policy_turns
        if k >= 3:
            return textrl.Reply.end(reward=0.5)
        words = ["fun", "day", "the", "ball"][: (len(episode.prompt) + k) % 4 + 1]
        return textrl.Reply.append(
            self.tokenizer(" ".join(words), add_special_tokens=False)["input_ids"], reward=0.25 * k
        )


def make_collector(tokenizer, policy, sampling, engine, *, seed=3):
    env = TokenGenVectorEnv(
        tokenizer,
        PROMPTS,
        length_reward,
        num_envs=8,
        max_new_tokens=6,
        max_prompt_tokens=10,
        autoreset_mode=AutoresetMode.DISABLED,
        interaction=Replies(),
        max_turns=4,
        max_episode_tokens=40,
    )
    infos = []
    step = env.step

    def recorded(actions):
        out = step(actions)
        infos.append(out[4])
        return out

    env.step = recorded
    collector = RolloutCollector(
        env, policy, frozen_reference(policy), sampling, seed=seed, engine=engine, compile_backend="aot_eager"
    )
    return collector, infos


@pytest.mark.parametrize("sampling", [SamplingConfig(), SamplingConfig(temperature=1.5, top_k=30, top_p=0.98)])
def test_compiled_multiturn_rollouts_equal_eager_ones(tokenizer, policy, sampling):
    eager, _ = make_collector(tokenizer, policy, sampling, "eager")
    compiled, infos = make_collector(tokenizer, policy, sampling, "compiled")
    prompts = PROMPTS + PROMPTS[::-1]
    for round_ in range(2):  # the second batch reuses the first one's static cache and graph
        a, b = eager.collect(prompts=prompts), compiled.collect(prompts=prompts)
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.attention_mask, b.attention_mask)
        assert torch.equal(a.action_mask, b.action_mask)
        for name in ("logprobs", "untruncated_logprobs", "values", "ref_logprobs", "rewards"):
            assert (getattr(a, name) - getattr(b, name)).abs().max() <= 1e-4, (round_, name)
        assert a.responses == b.responses and torch.equal(a.scores, b.scores)
    assert isinstance(eager.engine, EagerEngine) and isinstance(compiled.engine, CompiledEngine)
    assert compiled.engine.failure is None  # the compiled step ran, not its uncompiled fallback
    # not vacuous: left padding differs, env tokens inside rows, insertions of different lengths on
    # one step, episodes ending after different numbers of turns
    assert len(set(b.attention_mask[:, : -b.response_length].sum(1).tolist())) >= 3
    assert ((b.attention_mask[:, -b.response_length :] > 0) & (b.action_mask == 0)).any()
    sizes = [{len(e) for e in i["env_tokens"] if e is not None} for i in infos if "env_tokens" in i]
    assert any(len(s) >= 2 for s in sizes)
    turns = np.concatenate([i["turns"][i["_turns"]] for i in infos if "_turns" in i])
    assert len(set(turns.tolist())) >= 2


def test_compiled_multiturn_rollout_equals_teacher_forced_recompute(tokenizer, policy):
    collector, _ = make_collector(tokenizer, policy, SamplingConfig(), "compiled", seed=11)
    batch = collector.collect()
    with torch.no_grad():
        logits, values = policy.response_outputs(batch.input_ids, batch.attention_mask, batch.response_length)
    mask = batch.action_mask
    recomputed = token_logprobs(logits[..., : batch.vocab_size], batch.response_ids, batch.sampling) * mask
    assert (recomputed - batch.logprobs).abs().max() <= 1e-4
    assert (values * mask - batch.values).abs().max() <= 1e-4 and batch.values.abs().max() > 0
    assert ((batch.attention_mask[:, -batch.response_length :] > 0) & (mask == 0)).any()  # env tokens inside


def test_compiled_extend_compacts_a_full_cache_and_still_draws_what_eager_draws(tokenizer, policy):
    """Engine level, with a static cache too small for the wasted columns of the ragged blocks: the
    compiled engine compacts it (in place, under its compiled step) and every draw stays eager's."""
    enc = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    width = compact_left(ids, mask)[0].shape[1]
    n, vocab = ids.shape[0], len(tokenizer)
    # per step: None = a plain token step, else the env tokens each slot receives (slot 3 ends at step 4)
    script = [
        None,
        [[5, 6, 7], [], [8], []],
        None,
        [[], [9, 10], [], [11, 12, 13, 14]],
        None,
        None,
        [[15], [16, 17, 18, 19, 20], [], []],
        None,
    ]
    real = width + len(script) + max(sum(len(s[i]) for s in script if s) for i in range(n))  # most a row holds
    columns = width + sum(1 + (max(len(e) for e in s) if s else 0) for s in script)  # without compacting
    assert columns > real + 2  # the cache below overflows without compaction
    engines = [
        EagerEngine(policy, SamplingConfig(), vocab, torch.Generator().manual_seed(0)),
        CompiledEngine(
            policy, SamplingConfig(), vocab, torch.Generator().manual_seed(0), n, real + 2, backend="aot_eager"
        ),
    ]
    compiled = engines[1]
    compactions = []
    compact = compiled.compact
    compiled.compact = lambda: (compactions.append(compiled.filled), compact())[1]
    with torch.no_grad():
        draws = [engine.start(ids, mask) for engine in engines]
        active = torch.ones(n, 1, dtype=torch.bool)
        for step, inserts in enumerate(script):
            if step == 4:
                active[3] = False
            if inserts is None:
                new = [engine.advance(d.tokens, active) for engine, d in zip(engines, draws)]
            else:
                k = max(len(e) for e in inserts)
                block = torch.zeros(n, 1 + k, dtype=torch.long)
                block_mask = torch.zeros(n, 1 + k, dtype=torch.long)
                block[:, :1], block_mask[:, :1] = draws[0].tokens, active.long()
                for i, e in enumerate(inserts):
                    block[i, 1 : 1 + len(e)] = torch.tensor(e, dtype=torch.long)
                    block_mask[i, 1 : 1 + len(e)] = int(active[i])
                new = [engine.extend(block, block_mask) for engine in engines]
            draws = new
            a, b = draws
            assert torch.equal(a.tokens, b.tokens), step
            for name in ("logprobs", "untruncated_logprobs", "values"):
                assert (getattr(a, name) - getattr(b, name)).abs().max() <= 1e-4, (step, name)
    assert compactions and compiled.failure is None  # the cache was compacted, the compiled step ran
    assert int(compiled.column) == compiled.filled <= real + 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_compiled_multiturn_on_cuda_with_inductor_and_cuda_graphs_equals_eager(tokenizer):
    from conftest import make_policy

    policy = make_policy(tokenizer).to("cuda")
    collectors = []
    for engine in ("eager", "compiled"):
        env = TokenGenVectorEnv(
            tokenizer,
            PROMPTS,
            length_reward,
            num_envs=8,
            max_new_tokens=6,
            max_prompt_tokens=10,
            autoreset_mode=AutoresetMode.DISABLED,
            interaction=Replies(),
            max_turns=4,
            max_episode_tokens=40,
            device="cuda",
        )
        collectors.append(RolloutCollector(env, policy, None, SamplingConfig(), seed=3, engine=engine))
    for _ in range(2):
        a, b = (c.collect(prompts=PROMPTS + PROMPTS[::-1]) for c in collectors)
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.action_mask, b.action_mask)
        for name in ("logprobs", "untruncated_logprobs", "values"):
            assert (getattr(a, name) - getattr(b, name)).abs().max() <= 1e-4, name
    assert isinstance(collectors[1].engine, CompiledEngine) and collectors[1].engine.failure is None
