"""Shared fixtures: offline settings, a tiny tokenizer and random policy built in code, the real
assets in ../shared/assets (tests that need them skip with a message when they are absent)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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
