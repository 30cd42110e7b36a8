"""Compile that never takes a run down (rollout.engine): a failing compile falls back to eager under
``auto`` with one warning line naming the cause, and fails with one ``textrl: error:`` line under
``compiled``; engines of many shapes in one process never meet dynamo's recompile limit; and one
real inductor compile (C++ code generation) on the CPU.

``auto`` means compiled on CUDA only; the tests put ``cpu`` into
``textrl.rollout.engines.AUTO_COMPILED`` to run the same logic here.
"""

from __future__ import annotations

import logging

import pytest
import torch

import textrl.rollout.engines as engines
from textrl.envs import TokenGenVectorEnv
from textrl.errors import TextRLError
from textrl.policies import SamplingConfig, frozen_reference
from textrl.rollout.collector import RolloutCollector
from textrl.rollout.engines import CompiledEngine, EagerEngine

from conftest import length_reward

PROMPTS = ["happy", "the dog ran", "a girl saw the cat in the park and"]


def make_collector(tokenizer, policy, engine, backend, *, num_envs=6, steps=8):
    env = TokenGenVectorEnv(
        tokenizer,
        PROMPTS,
        length_reward,
        num_envs=num_envs,
        max_new_tokens=steps,
        max_prompt_tokens=12,
        autoreset_mode="disabled",
    )
    return RolloutCollector(
        env, policy, frozen_reference(policy), SamplingConfig(), seed=3, engine=engine, compile_backend=backend
    )


def no_compiler(gm, example_inputs):
    raise RuntimeError("no C compiler found\n(details on a second line)")


def assert_same_rollout(a, b, tol=1e-4):
    assert torch.equal(a.input_ids, b.input_ids) and a.responses == b.responses
    for name in ("logprobs", "untruncated_logprobs", "values"):
        assert (getattr(a, name) - getattr(b, name)).abs().max() <= tol, name


@pytest.fixture
def auto_compiles_on_cpu(monkeypatch):
    monkeypatch.setattr(engines, "AUTO_COMPILED", ("cuda", "cpu"))


def test_auto_falls_back_to_eager_with_one_warning(tokenizer, policy, auto_compiles_on_cpu, caplog):
    auto = make_collector(tokenizer, policy, "auto", no_compiler)
    eager = make_collector(tokenizer, policy, "eager", None)
    with caplog.at_level(logging.WARNING):
        first = auto.collect()  # the compile fails at the first token step; the batch goes on uncompiled
        assert isinstance(auto.engine, CompiledEngine) and auto.engine.failure is not None
        second = auto.collect()  # then eager engines
    assert isinstance(auto.engine, EagerEngine)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert "\n" not in message and "rollout.engine=auto" in message and "RuntimeError: no C compiler found" in message
    assert_same_rollout(first, eager.collect())
    assert_same_rollout(second, eager.collect())


def test_explicit_compiled_fails_with_one_error_line(tokenizer, policy):
    collector = make_collector(tokenizer, policy, "compiled", no_compiler)
    with pytest.raises(TextRLError) as raised:
        collector.collect()
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(
        "rollout.engine: got 'compiled' but torch.compile failed (RuntimeError: no C compiler "
        "found); expected rollout.engine=auto"
    )


def test_a_missing_cxx_compiler_falls_back(tokenizer, policy, auto_compiles_on_cpu, monkeypatch, tmp_path, caplog):
    """Inductor itself with no working C++ compiler (a missing ``g++``), not an injected backend."""
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", (str(tmp_path / "no-such-g++"),))
    monkeypatch.setattr(inductor_config, "fx_graph_cache", False)  # a cached graph would need no compiler
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    collector = make_collector(tokenizer, policy, "auto", None, steps=3)
    with caplog.at_level(logging.WARNING):
        collector.collect()
    assert "InvalidCxxCompiler" in collector.engine.failure
    assert any("InvalidCxxCompiler" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def test_engines_of_many_shapes_never_meet_the_recompile_limit(tokenizer, policy, monkeypatch):
    """Dynamo allows ``recompile_limit`` graphs per code object; each engine compiles its own copy
    of the step, so engines of 3 batch sizes in one process compile 3 graphs even with a limit of 1
    (with a shared step function the second engine would hit FailOnRecompileLimitHit). A collector
    reused batch after batch reuses its graph."""
    from torch._dynamo.utils import counters

    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 1)
    graphs = counters["stats"]["unique_graphs"]
    collectors = [make_collector(tokenizer, policy, "compiled", "aot_eager", num_envs=n, steps=3) for n in (3, 4, 5)]
    for collector in collectors + collectors:
        collector.collect()
        assert collector.engine.failure is None
    assert counters["stats"]["unique_graphs"] - graphs == 3


def test_inductor_compiles_the_token_step_on_the_cpu(tokenizer, policy, monkeypatch, tmp_path):
    """The real inductor backend, C++ code generation included (fresh cache: nothing is reused),
    draws what the eager engine draws."""
    import torch._inductor.config as inductor_config

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    monkeypatch.setattr(inductor_config, "fx_graph_cache", False)
    monkeypatch.setattr(inductor_config, "compile_threads", 1)  # no worker pool to start on a small machine
    compiled = make_collector(tokenizer, policy, "compiled", None, steps=6)
    eager = make_collector(tokenizer, policy, "eager", None, steps=6)
    for _ in range(2):
        assert_same_rollout(eager.collect(), compiled.collect())
    assert compiled.engine.failure is None and compiled.engine.backend == "inductor"
    assert any(tmp_path.joinpath("inductor").rglob("*.so"))  # inductor wrote and built C++ kernels
