"""LoRA adapters (Hu et al. 2021) on the policy through peft, and the reference they make free.

With adapters the policy is ``W + (α/r)·B·A`` on the target modules, the base weights ``W``
frozen. The KL reference π_ref is then the same network with the adapters switched off
(``PeftModel.disable_adapter``), so no second copy of the weights is held (TRL and OpenRLHF do
the same).

A policy saved with adapters is a directory holding ``adapter_config.json`` and
``adapter_model.safetensors`` (peft's format), the value head, the tokenizer and
``textrl.json`` naming the base model; :func:`load_adapter_dir` reads it back.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from torch import nn

from textrl.config.schema import LoraSettings
from textrl.errors import TextRLError, first_line
from textrl.policies.logits import LMOutput, lm_forward

ADAPTER_CONFIG = "adapter_config.json"


@contextlib.contextmanager
def quiet_peft():
    """Silence the FutureWarning peft 0.21 triggers by reading transformers 5's deprecated
    ``is_gradient_checkpointing`` when it wraps a model: a library-to-library call the user cannot act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
        yield


def add_lora(lm: nn.Module, settings: LoraSettings):
    """Wrap ``lm`` in a peft ``PeftModel`` with fresh LoRA adapters (B = 0, so the output is
    unchanged until the first update). The base weights are frozen; only adapters train.

    Raises:
        TextRLError: ``r`` < 1, ``alpha`` ≤ 0, ``dropout`` outside [0, 1), or target modules that
            match nothing in the model (the message lists the model's linear layers).
    """
    from peft import LoraConfig, get_peft_model

    if settings.r < 1:
        raise TextRLError(f"policy.lora.r: got {settings.r}; expected a positive rank (0 turns LoRA off)")
    if not settings.alpha > 0:
        raise TextRLError(f"policy.lora.alpha: got {settings.alpha}; expected a positive number")
    if not 0 <= settings.dropout < 1:
        raise TextRLError(f"policy.lora.dropout: got {settings.dropout}; expected a value in [0, 1)")
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules) if settings.target_modules else None,
        task_type="CAUSAL_LM",
    )
    try:
        with quiet_peft():
            return get_peft_model(lm, config)
    except ValueError as e:
        linear = sorted({name.rsplit(".", 1)[-1] for name, m in lm.named_modules() if isinstance(m, nn.Linear)})
        raise TextRLError(
            f"policy.lora.target_modules: got {settings.target_modules}; expected names of the "
            f"model's linear layers, e.g. {linear} ({first_line(e)})"
        ) from None


def is_adapter_dir(path: str) -> bool:
    """True when ``path`` is a directory holding a peft adapter (``adapter_config.json``)."""
    return os.path.isfile(os.path.join(os.path.expanduser(path), ADAPTER_CONFIG))


def base_model_of(path: str) -> tuple[str, str | None]:
    """``(base model, gguf_file)`` of an adapter directory saved by textrl (``textrl.json``),
    else peft's ``base_model_name_or_path``.

    Raises:
        TextRLError: neither names a base model.
    """
    path = os.path.expanduser(path)
    meta_path = os.path.join(path, "textrl.json")
    if os.path.isfile(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get("base_model"):
            return meta["base_model"], meta.get("base_gguf_file")
    with open(os.path.join(path, ADAPTER_CONFIG)) as f:
        base = json.load(f).get("base_model_name_or_path")
    if not base:
        raise TextRLError(
            f"policy.model: adapter directory {path!r} names no base model; expected textrl.json "
            f"or adapter_config.json to hold it"
        )
    return base, None


def load_adapters(lm: nn.Module, path: str, trainable: bool):
    """``PeftModel`` of ``lm`` with the adapters saved in ``path`` (trainable or frozen)."""
    from peft import PeftModel

    with quiet_peft():
        return PeftModel.from_pretrained(lm, os.path.expanduser(path), is_trainable=trainable)


class AdapterDisabledReference(nn.Module):
    """π_ref as the policy's own network with its LoRA adapters switched off.

    Called like a causal LM (``reference(input_ids=, attention_mask=, position_ids=,
    logits_to_keep=)`` → the base model's :class:`~textrl.policies.logits.LMOutput`, logits in
    float32); holds no weights of its own. Gradients are never needed, so callers run it under
    ``torch.no_grad()``.
    """

    def __init__(self, peft_model):
        super().__init__()
        self.__dict__["peft_model"] = peft_model  # not a submodule: its weights belong to the policy

    def forward(self, logits_to_keep: int = 0, **inputs) -> LMOutput:
        """The base model's pass (adapters off) with the LM head in float32."""
        with self.peft_model.disable_adapter():
            return lm_forward(self.peft_model.base_model.model, inputs, logits_to_keep)
