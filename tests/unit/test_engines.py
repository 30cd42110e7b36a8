"""Decode engines (rollout.engine): the compiled static-cache step against the eager one.

CI compiles with the ``aot_eager`` backend: dynamo capture and AOT functionalisation of the
whole token step (the part that could change results), without inductor's code generation,
so a compile takes seconds on a CPU. On CUDA the engine uses inductor with CUDA graphs
(tests/integration/test_gpu.py).
"""

from __future__ import annotations

import pytest
import torch

from textrl.envs import TokenGenVectorEnv
from textrl.errors import TextRLError
from textrl.policies import SamplingConfig, frozen_reference
from textrl.policies.sampling import token_logprobs
from textrl.rollout.collector import RolloutCollector
from textrl.rollout.engines import CompiledEngine, EagerEngine, resolve_engine

from conftest import length_reward

# prompts of 2, 4 and 9 tokens (with BOS): left padding differs per row
PROMPTS = ["happy", "the dog ran", "a girl saw the cat in the park and"]
T = 12


def collector(tokenizer, policy, sampling, engine):
    env = TokenGenVectorEnv(
        tokenizer, PROMPTS, length_reward, num_envs=6, max_new_tokens=T, max_prompt_tokens=12, autoreset_mode="disabled"
    )
    return RolloutCollector(
        env, policy, frozen_reference(policy), sampling, seed=3, engine=engine, compile_backend="aot_eager"
    )


@pytest.mark.parametrize("sampling", [SamplingConfig(), SamplingConfig(temperature=1.5, top_k=30, top_p=0.98)])
def test_compiled_engine_draws_what_the_eager_engine_draws(tokenizer, policy, sampling):
    eager, compiled = (
        collector(tokenizer, policy, sampling, "eager"),
        collector(tokenizer, policy, sampling, "compiled"),
    )
    prompts = PROMPTS + PROMPTS[::-1]
    lengths = []
    for round_ in range(2):  # the second batch reuses the static cache of the first
        a, b = eager.collect(prompts=prompts), compiled.collect(prompts=prompts)
        lengths += b.action_mask.sum(1).tolist()
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.action_mask, b.action_mask)
        for name in ("logprobs", "untruncated_logprobs", "values", "ref_logprobs"):
            assert (getattr(a, name) - getattr(b, name)).abs().max() <= 1e-4, (round_, name)
        assert a.responses == b.responses and torch.equal(a.scores, b.scores)
    assert isinstance(eager.engine, EagerEngine) and isinstance(compiled.engine, CompiledEngine)
    assert min(lengths) < T and max(lengths) == T  # EOS ended some episodes, others ran to the limit
    assert len(set(b.attention_mask[:, : -b.response_length].sum(1).tolist())) == 3  # left padding differs
    # the compiled rollout's log-probs and values are those of a teacher-forced pass
    with torch.no_grad():
        logits, values = policy.response_outputs(b.input_ids, b.attention_mask, b.response_length)
    mask = b.action_mask
    recomputed = token_logprobs(logits[..., : b.vocab_size], b.response_ids, sampling) * mask
    assert (recomputed - b.logprobs).abs().max() <= 1e-4
    assert (values * mask - b.values).abs().max() <= 1e-4 and b.values.abs().max() > 0


def test_engine_names(tokenizer, policy):
    assert resolve_engine("auto", torch.device("cpu")) == "eager"
    assert resolve_engine("auto", torch.device("cuda")) == "compiled"
    with pytest.raises(TextRLError, match="rollout.engine: got 'fast'; expected one of auto, eager, compiled"):
        collector(tokenizer, policy, SamplingConfig(), "fast")
