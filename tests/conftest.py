"""Shared fixtures: offline settings, a tiny tokenizer and random policy built in code, the real
assets in ../shared/assets (tests that need them skip with a message when they are absent)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def find_assets() -> Path:
    """``$TEXTRL_ASSETS``, else ``../shared/assets`` beside the repo, else the repo's ignored
    ``.assets/`` folder (a copy for machines without ``../shared``; see tests/benchmarks/gpu_check.sh)."""
    if "TEXTRL_ASSETS" in os.environ:
        return Path(os.environ["TEXTRL_ASSETS"])
    for candidate in (REPO.parent / "shared" / "assets", REPO / ".assets"):
        if (candidate / "tinystories-656k" / "config.json").is_file():
            return candidate
    return REPO.parent / "shared" / "assets"


ASSETS = find_assets()
os.environ.setdefault("TEXTRL_ASSETS", str(ASSETS))  # the textrl command (conf/policy/tinystories.yaml) reads it

WORDS = ("the a movie film story was is and very good bad great awful happy sad love hate "
         "dog cat boy girl park ball played ran saw it this that of to in on with fun day").split()


def make_tokenizer(pad: bool = True):
    """A word-level tokenizer: specials <pad>=0 (if pad) <unk> <bos> <eos>, then WORDS; adds BOS."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, decoders
    from transformers import PreTrainedTokenizerFast

    specials = (["<pad>"] if pad else []) + ["<unk>", "<bos>", "<eos>"]
    vocab = {w: i for i, w in enumerate(specials + list(WORDS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
    kwargs = {"pad_token": "<pad>"} if pad else {}
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<bos>", eos_token="<eos>",
                                   padding_side="left", **kwargs)


def make_policy(tokenizer, seed: int = 0, hidden: int = 32):
    """A random 2-layer Llama policy with value head (random, nonzero value head weights)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from textrl.policies import PolicyWithValueHead

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    policy = PolicyWithValueHead(LlamaForCausalLM(config).eval())
    torch.nn.init.normal_(policy.value_head.summary.weight, std=0.5)
    return policy


def length_reward(prompts, responses):
    """A deterministic reward model: number of words in the response."""
    return torch.tensor([float(len(r.split())) for r in responses])


def compose_config(overrides, registry=None):
    """Compose ``train`` with the plugin configs registered, as the ``textrl`` command does."""
    import hydra
    from hydra.core.global_hydra import GlobalHydra

    from textrl.config import register_configs, register_plugin_configs
    from textrl.plugins import load_plugins

    register_configs()
    register_plugin_configs(registry or load_plugins())
    GlobalHydra.instance().clear()
    with hydra.initialize_config_module("textrl.conf", version_base="1.3"):
        return hydra.compose("train", overrides=list(overrides))


def textrl(*args, cwd=None, timeout=600, env=None):
    """Run ``python -m textrl ARGS`` (what the console script and sweeps run)."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run([sys.executable, "-m", "textrl", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=full_env)


def fast(run_dir, *extra):
    """Overrides for a quick TinyStories run writing to ``run_dir``."""
    return ["experiment=tinystories_sentiment", f"hydra.run.dir={run_dir}", "trainer.progress_bar=false",
            "rollout.batch_size=8", "algo.minibatch_size=4", "algo.epochs=1", "env.max_new_tokens=8", *extra]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def textrl_in_process(args, monkeypatch, capsys=None, site: Path | None = None) -> SimpleNamespace:
    """Run ``textrl ARGS`` through :func:`textrl.cli.main` in this process, with ``site`` (a folder
    of plugins installed for the test) on the import path when given; returns ``returncode``,
    ``stdout`` and ``stderr`` like :func:`subprocess.run`. An exception that escapes ``main`` is a
    test failure (it would be a traceback on the user's screen). Without ``capsys`` (a
    module-scoped fixture has none) the output is not captured and ``stdout``/``stderr`` are empty."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.global_hydra import GlobalHydra

    from textrl.cli import main
    from textrl.config import register_configs, register_plugin_configs
    from textrl.plugins import load_plugins

    # main() registers every installed plugin's configs in Hydra's process-wide store; note what
    # is there without the case's plugins, so the misbehaving plugin's options can be taken out
    register_configs()
    register_plugin_configs(load_plugins())
    store = ConfigStore.instance()
    before = {group: set(node) for group, node in store.repo.items() if isinstance(node, dict)}
    threads = torch.get_num_threads()
    monkeypatch.setattr(sys, "argv", ["textrl", *args])
    if site is not None:
        monkeypatch.syspath_prepend(str(site))
    if capsys is not None:
        capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        torch.set_num_threads(threads)  # run() sets trainer.threads for the process
        for group, known in before.items():
            for name in set(store.repo.get(group, {})) - known:
                if group != "hydra":
                    del store.repo[group][name]
        GlobalHydra.instance().clear()
    out, err = capsys.readouterr() if capsys is not None else ("", "")
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


@pytest.fixture
def tokenizer():
    return make_tokenizer()


@pytest.fixture
def policy(tokenizer):
    return make_policy(tokenizer)


@pytest.fixture(scope="session")
def assets() -> Path:
    if not (ASSETS / "tinystories-656k" / "config.json").is_file():
        pytest.skip(f"real assets not found at {ASSETS} (set TEXTRL_ASSETS or put shared/ beside the repo)")
    return ASSETS
