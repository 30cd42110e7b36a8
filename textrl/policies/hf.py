"""``policy=hf``: the built-in policy loader, a Hugging Face causal LM with a value head.

It is registered through the ``textrl_policies`` hook (:mod:`textrl.policies`), the hook a third
party's policy uses, and satisfies the contract of :mod:`textrl.policies.contract`.
``policy=smollm2`` and ``policy=tinystories`` (``conf/policy/``) are presets of it that set
``model`` (and ``gguf_file``).
"""

from __future__ import annotations

import logging
import torch

from textrl.config.checks import number, one_of
from textrl.config.choices import POLICY_DTYPES
from textrl.config.schema import LoraSettings, field_checks
from textrl.policies.loading import load_tokenizer
from textrl.policies.policy import PolicyWithValueHead

log = logging.getLogger(__name__)


class HFPolicyLoader:
    """``policy=hf``: a Hugging Face causal LM (a hub id, a directory or a GGUF file) with a scalar
    value head, loaded as a :class:`~textrl.policies.policy.PolicyWithValueHead`; its tokenizer gets a
    pad token when it has none (:func:`~textrl.policies.loading.load_tokenizer`).

    What each stage loads (:meth:`load_policy`): stage=rl the policy with LoRA adapters when
    ``lora.r > 0`` and gradient checkpointing when asked for; stage=sft every weight trainable, with
    SFT's dropout; stage=eval the plain policy.

    Args:
        model: a hub id, a directory or a .gguf path; a directory saved by textrl brings its value
            head, and a directory of LoRA adapters loads its base model with the adapters merged in.
        gguf_file: a GGUF file inside ``model`` (``None`` for a Hugging Face directory).
        dtype: the weights' dtype when loaded (``float32``; ``bfloat16`` and ``float16`` store the
            weights in half precision; mixed precision is ``trainer.precision``).
        dropout: overrides every dropout rate in the model config (0 for RL, so rollout and training
            log-probs agree; ``None`` keeps the model's).
        lora: LoRA adapters for RL (:class:`~textrl.config.schema.LoraSettings`, or its dict):
            ``lora.r > 0`` trains adapters instead of every weight, with the adapter-disabled base
            as π_ref.
        gradient_checkpointing: recompute the layers' activations in the backward pass of RL
            updates instead of storing them (less memory, about one more forward pass of compute).
    """

    config_checks = {
        "dtype": one_of(*POLICY_DTYPES),
        "dropout": number(ge=0, lt=1, optional=True),
        **dict(field_checks(LoraSettings, "lora.")),
    }

    def __init__(
        self,
        model: str,
        gguf_file: str | None = None,
        dtype: str = "float32",
        dropout: float | None = 0.0,
        lora: LoraSettings | dict = LoraSettings(),
        gradient_checkpointing: bool = False,
    ):
        self.model, self.gguf_file, self.dtype, self.dropout = model, gguf_file, dtype, dropout
        self.lora = LoraSettings(**lora) if isinstance(lora, dict) else lora
        self.gradient_checkpointing = gradient_checkpointing

    def load_tokenizer(self):
        """The tokenizer of ``model`` (see :func:`~textrl.policies.loading.load_tokenizer`).

        Raises:
            TextRLError: naming ``policy.model`` or ``policy.gguf_file``.
        """
        return load_tokenizer(self.model, self.gguf_file)

    def load_policy(
        self, *, stage: str, tokenizer, device: torch.device, dropout: float | None = None
    ) -> PolicyWithValueHead:
        """The :class:`PolicyWithValueHead` for ``stage`` (see
        :meth:`textrl.policies.contract.PolicyLoader.load_policy`); LoRA and gradient checkpointing
        apply to stage=rl only, ``dropout`` (when given) replaces ``policy.dropout``.

        Raises:
            TextRLError: as :meth:`PolicyWithValueHead.from_pretrained`.
        """
        rl = stage == "rl"
        if rl and self.lora.r and self.lora.dropout:
            log.warning(
                "policy.lora.dropout=%s has no effect in RL: the policy runs in eval mode so rollout and "
                "training log-probs agree",
                self.lora.dropout,
            )
        return PolicyWithValueHead.from_pretrained(
            self.model,
            gguf_file=self.gguf_file,
            dtype=self.dtype,
            tokenizer=tokenizer,
            dropout=self.dropout if dropout is None else dropout,
            device=device,
            lora=self.lora if rl else None,
            gradient_checkpointing=self.gradient_checkpointing and rl,
        )
