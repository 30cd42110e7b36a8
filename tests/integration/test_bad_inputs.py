"""The bad-input suite: every mistake below costs one line on stderr that names the bad value and
what was expected, exits non-zero, prints no traceback, and leaves no half-written output
(no metrics, samples, summary, checkpoints or policy in the run directory).

Each case runs the ``textrl`` command's own entry function (``textrl.cli.main`` through
``conftest.run_main``, with ``sys.argv`` set as the console script sets it) on the real TinyStories
experiment (``fast()``), so what is tested is what a researcher sees. They run in this process: a ``python -m textrl`` subprocess spends ~5 s
of a 2-core CI machine importing torch and transformers before it reads its first argument, which
for 50 cases is most of this file's time. ``THROUGH_THE_COMMAND`` repeats one case from each
place an error can be raised (composition, the range checks, loading, the first update, a
third-party plugin) as a real subprocess, so the exit status and stderr of the installed command
are checked too.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from conftest import fast, install_plugin, run_main, textrl

OUTPUTS = ("metrics.jsonl", "samples.jsonl", "summary.json", "policy", "checkpoints")

MISBEHAVING_PLUGIN = '''
import torch

from textrl.hookspecs import hookimpl


class Misbehave:
    """A reward model that goes wrong in the way `mode` says."""

    def __init__(self, mode: str = "shape"):
        self.mode = mode

    def __call__(self, prompts, responses):
        n = len(responses)
        if self.mode == "shape":
            return torch.zeros(n, 2)
        if self.mode == "dtype":
            return ["good"] * n
        if self.mode == "nan":
            return torch.full((n,), float("nan"))
        if self.mode == "inf":
            return torch.full((n,), float("inf"))
        raise RuntimeError("sentiment server unreachable")


@hookimpl
def textrl_reward_models():
    return {"misbehave": Misbehave}
'''


def write_files(tmp: Path) -> None:
    """The broken inputs some cases point at."""
    (tmp / "empty.txt").write_text("\n \n")
    (tmp / "corrupt.json").write_text('["an opening", "another"')
    (tmp / "corrupt.jsonl").write_text('{"text": "fine"}\n{text: broken}\n')
    (tmp / "no_text.jsonl").write_text('{"title": "a"}\n{"title": "b"}\n')
    (tmp / "long.txt").write_text("Once upon a time there was a little girl named Lily who loved to play\n")
    (tmp / "fake.gguf").write_text("this is not a GGUF file\n")
    with gzip.open(tmp / "truncated.jsonl.gz", "wb") as f:
        f.write(b'{"text": "a"}\n')
    (tmp / "truncated.jsonl.gz").write_bytes((tmp / "truncated.jsonl.gz").read_bytes()[:12])
    (tmp / "a_file").write_text("not a directory")
    (tmp / "bad_rubric.yaml").write_text("prompt_categories: []\n")
    (tmp / "site").mkdir()
    install_plugin(tmp / "site", "misbehave_plugin", MISBEHAVING_PLUGIN)


# (id, overrides with {tmp} for the case's folder, substrings the one error line must contain)
CASES = [
    # config typos, wrong types, unknown options
    ("typo_in_algo_key", ["algo.lrr=1"], ["algo.lrr: not a parameter of algo=ppo", "'lr'"]),
    ("typo_in_nested_key", ["algo.kl.inti=3"], ["algo.kl.inti: no such key", "'init'"]),
    ("typo_in_trainer_key", ["trainer.udpates=3"], ["trainer.udpates: no such key", "'updates'"]),
    ("string_for_int", ["rollout.batch_size=many"], ["rollout.batch_size: got 'many'", "Integer"]),
    ("float_for_int", ["env.max_new_tokens=1.5"], ["env.max_new_tokens: got '1.5'", "Integer"]),
    ("override_without_value", ["trainer.updates"], ["'trainer.updates': cannot parse", "expected key=value"]),
    ("unknown_algo", ["algo=sarsa"], ["algo=sarsa: no such algo option", "'ppo'"]),
    ("unknown_policy", ["policy=gpt5"], ["policy=gpt5: no such policy option", "'tinystories'"]),
    ("unknown_reward_plugin", ["reward=telepathy"], ["reward=telepathy: no such reward option", "'sentiment'"]),
    (
        "unknown_plugin_parameter",
        ["reward=rbrm", "reward.rubrik=x"],
        ["reward.rubrik: not a parameter of reward=rbrm", "'rubric'"],
    ),
    ("unknown_reward_backend", ["reward.backend=telepathy"], ["reward.backend: got 'telepathy'", "vader"]),
    ("unknown_stage", ["stage=distill"], ["stage: got 'distill'", "rl"]),
    ("unknown_precision", ["trainer.precision=fp8"], ["trainer.precision: got 'fp8'", "'bf16'"]),
    ("unknown_nonfinite_policy", ["trainer.on_nonfinite=ignore"], ["trainer.on_nonfinite: got 'ignore'", "'skip'"]),
    (
        "sharded_compiled_engine",
        ["trainer.sharding=fsdp", "rollout.engine=compiled"],
        ["rollout.engine: got 'compiled' with trainer.sharding=fsdp", "eager or auto"],
    ),
    (
        "sharded_skip_nonfinite",
        ["trainer.sharding=fsdp", "trainer.on_nonfinite=skip"],
        ["trainer.on_nonfinite: got 'skip' with trainer.sharding=fsdp", "'error'"],
    ),
    ("zero_updates", ["trainer.updates=0"], ["trainer.updates: got 0", "positive"]),
    ("negative_lora_rank", ["policy.lora.r=-1"], ["policy.lora.r: got -1", "positive rank"]),
    # devices and output
    ("cuda_without_cuda", ["device=cuda"], ["device: got 'cuda' but CUDA is not available", "device=cpu"]),
    ("unknown_device", ["device=tpu"], ["device: got 'tpu'", "auto, cpu, cuda"]),
    (
        "output_dir_under_a_file",
        ["hydra.run.dir={tmp}/a_file/run"],
        ["hydra.run.dir: cannot write to", "a_file", "writable directory"],
    ),
    (
        "output_dir_not_writable",
        ["hydra.run.dir=/proc/textrl-run"],
        ["hydra.run.dir: cannot write to '/proc/textrl-run'", "writable directory"],
    ),
    # data files
    (
        "missing_prompt_file",
        ["data.prompts={tmp}/missing.jsonl"],
        ["data.prompts: file", "missing.jsonl' does not exist"],
    ),
    (
        "empty_prompt_file",
        ["data.prompts={tmp}/empty.txt", "data.prefix_tokens=null"],
        ["empty.txt' holds no prompts", "at least one"],
    ),
    ("corrupt_json", ["data.prompts={tmp}/corrupt.json"], ["corrupt.json' is not valid JSON", "a JSON list"]),
    (
        "corrupt_jsonl",
        ["data.prompts={tmp}/corrupt.jsonl"],
        ["corrupt.jsonl' is not valid JSON", "one JSON object per line"],
    ),
    ("truncated_gzip", ["data.prompts={tmp}/truncated.jsonl.gz"], ["data.prompts: cannot read", "UTF-8 text file"]),
    ("rows_without_text", ["data.prompts={tmp}/no_text.jsonl"], ["have keys ['title']", "data.text_field"]),
    (
        "prompt_longer_than_context",
        [
            "data.prompts={tmp}/long.txt",
            "data.prefix_tokens=null",
            "env.max_prompt_tokens=4",
            "env.prompt_truncation=error",
        ],
        ["env.max_prompt_tokens=4"],
    ),
    ("max_prompts_zero", ["data.max_prompts=0"], ["data.max_prompts: got 0", "positive integer"]),
    ("unknown_rm_objective", ["stage=rm", "rm.objective=regression"], ["rm.objective: got 'regression'"]),
    ("missing_sft_data", ["stage=sft", "sft.data={tmp}/missing.json"], ["missing.json' does not exist"]),
    # models
    ("model_path_missing", ["policy.model={tmp}/no_model"], ["policy.model: directory", "no_model' does not exist"]),
    (
        "gguf_that_is_not_gguf",
        ["policy.model={tmp}/fake.gguf"],
        ["policy.gguf_file:", "fake.gguf' is not a GGUF file", "expected a .gguf model file"],
    ),
    ("learned_reward_without_model", ["reward=learned"], ["reward.model: not set"]),
    ("bad_rubric", ["reward=rbrm", "reward.rubric={tmp}/bad_rubric.yaml"], ["reward.rubric:", "bad_rubric.yaml"]),
    (
        "unknown_composite_component",
        ["reward=composite", "reward.components={{x: {{name: oracle}}}}"],
        ["reward.components.x.name: got 'oracle'", "'sentiment'"],
    ),
    # reward models that misbehave (a third-party plugin)
    ("reward_wrong_shape", ["reward=misbehave", "reward.mode=shape"], ["returned shape (", ", 2)", "expected ("]),
    ("reward_wrong_dtype", ["reward=misbehave", "reward.mode=dtype"], ["returned", "expected a float tensor"]),
    ("reward_nan", ["reward=misbehave", "reward.mode=nan"], ["update 1: reward is not finite", "nan"]),
    ("reward_inf", ["reward=misbehave", "reward.mode=inf"], ["update 1: reward is not finite", "inf"]),
    (
        "reward_raises",
        ["reward=misbehave", "reward.mode=raise"],
        ["raised RuntimeError: sentiment server unreachable", "expected a float tensor"],
    ),
    # lengths and batch shapes
    ("zero_new_tokens", ["env.max_new_tokens=0"], ["env.max_new_tokens: got 0", "positive integer"]),
    (
        "minibatch_not_dividing_batch",
        ["algo.minibatch_size=3"],
        ["algo.minibatch_size: got 3", "divisor of rollout.batch_size=8"],
    ),
    (
        "samples_per_prompt_not_dividing_batch",
        ["rollout.samples_per_prompt=3"],
        ["rollout.samples_per_prompt: got 3", "divisor"],
    ),
    ("resume_path_without_checkpoint", ["trainer.resume={tmp}/nothing"], ["trainer.resume:", "holds no checkpoint"]),
    # settings out of range, caught before anything loads (the bulk is in test_config_checks.py)
    ("zero_batch_size", ["rollout.batch_size=0"], ["rollout.batch_size: got 0", "positive integer"]),
    ("top_p_above_one", ["rollout.top_p=1.5"], ["rollout.top_p: got 1.5", "(0, 1]"]),
    ("gamma_above_one", ["algo.gamma=1.5"], ["algo.gamma: got 1.5", "[0, 1]"]),
    ("grpo_group_of_one", ["algo=grpo", "algo.group_size=1"], ["algo.group_size: got 1", ">= 2"]),
    (
        "grpo_group_not_dividing_batch",
        ["algo=grpo", "algo.group_size=3"],
        ["algo=grpo: got 3 episodes per prompt", "divisor of the 8 episodes per process"],
    ),
    ("sft_zero_lr", ["stage=sft", "sft.lr=0"], ["sft.lr: got 0.0", "> 0"]),
    ("eval_zero_prompts", ["stage=eval", "eval.num_prompts=0"], ["eval.num_prompts: got 0", "positive integer"]),
    (
        "missing_ptx_data",
        ["algo=ppo_ptx", "algo.ptx_data={tmp}/missing_ptx.jsonl"],
        ["algo.ptx_data: file", "missing_ptx.jsonl' does not exist"],
    ),
    (
        "learned_reward_without_score_head",
        ["reward=learned", "reward.model=${{oc.env:TEXTRL_ASSETS}}/tinystories-656k"],
        ["reward.model:", "tinystories-656k' has no trained weights", "score.weight", "written by stage=rm"],
    ),
]


def check_one_line_error(result, args: list[str], expected: list[str], tmp_path: Path) -> None:
    """Exit status 1, no traceback, exactly one ``textrl: error:`` line holding every ``expected``
    text, and none of :data:`OUTPUTS` in the run directory."""
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("textrl: error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    for text in expected:
        assert text.format(tmp=tmp_path) in errors[0], errors[0]
    run_dir = Path(next(a.split("=", 1)[1] for a in args[::-1] if a.startswith("hydra.run.dir=")))
    leftovers = [name for name in OUTPUTS if (run_dir / name).exists()]
    assert not leftovers, f"half-written output after an error: {leftovers}"


def case_args(tmp_path: Path, overrides: list[str]) -> list[str]:
    """The case's command line: the quick TinyStories run plus its overrides, ``{tmp}`` filled in."""
    write_files(tmp_path)
    return fast(tmp_path / "run", "trainer.updates=2", *[o.format(tmp=tmp_path) for o in overrides])


def skip_cuda_case(overrides: list[str]) -> None:
    if any(o == "device=cuda" for o in overrides) and torch.cuda.is_available():
        pytest.skip("CUDA is available here")


@pytest.mark.parametrize("overrides, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_costs_one_line(assets, tmp_path, monkeypatch, capsys, overrides, expected):
    skip_cuda_case(overrides)
    args = case_args(tmp_path, overrides)
    result = run_main(args, monkeypatch, capsys, env={"PYTHONPATH": str(tmp_path / "site")})
    check_one_line_error(result, args, expected, tmp_path)


# One case per place an error is raised, run as the installed command (a subprocess).
THROUGH_THE_COMMAND = [
    "typo_in_algo_key",
    "unknown_policy",
    "top_p_above_one",
    "corrupt_jsonl",
    "learned_reward_without_score_head",
    "reward_nan",
    "reward_raises",
]


@pytest.mark.parametrize("name", THROUGH_THE_COMMAND)
def test_bad_input_through_the_command(assets, tmp_path, name):
    overrides, expected = next(c[1:] for c in CASES if c[0] == name)
    args = case_args(tmp_path, overrides)
    result = textrl(*args, env={"PYTHONPATH": str(tmp_path / "site")})
    check_one_line_error(result, args, expected, tmp_path)


def test_tokenizer_without_pad_token_is_given_one(assets, tmp_path, cli):
    """Not an error: a tokenizer with no pad token gets one (and the embeddings a row), then trains."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from conftest import ASSETS

    source = ASSETS / "tinystories-656k"
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.pad_token = None
    model_dir = tmp_path / "no_pad"
    tokenizer.save_pretrained(model_dir)
    AutoModelForCausalLM.from_pretrained(source).save_pretrained(model_dir)
    assert AutoTokenizer.from_pretrained(model_dir).pad_token is None
    result = cli(*fast(tmp_path / "run", f"policy.model={model_dir}", "trainer.updates=1"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["updates"] == 1


def test_tokenizer_without_eos_cannot_stop_on_eos(tokenizer):
    from textrl.envs.token_vector_env import TokenGenVectorEnv
    from textrl.errors import TextRLError

    tokenizer.eos_token = None
    with pytest.raises(TextRLError, match="env.stop_on_eos: got true, but tokenizer .* has no EOS token") as e:
        TokenGenVectorEnv(
            tokenizer, ["a dog"], lambda p, r: torch.zeros(len(r)), num_envs=2, max_new_tokens=3, max_prompt_tokens=4
        )
    assert "\n" not in str(e.value)
    TokenGenVectorEnv(
        tokenizer,
        ["a dog"],
        lambda p, r: torch.zeros(len(r)),
        num_envs=2,
        max_new_tokens=3,
        max_prompt_tokens=4,
        stop_on_eos=False,
    )  # fine without EOS stopping
