"""The policy: a Hugging Face causal LM with a scalar value head on its last hidden state, one
forward pass for both (:class:`PolicyWithValueHead`, the built-in implementation of
:class:`textrl.policies.contract.Policy`), and its teacher-forced pass over a batch's responses
(:func:`response_outputs`). Loading: :mod:`textrl.policies.loading`; ``policy=hf``:
:mod:`textrl.policies.hf`.
"""

from __future__ import annotations

import json
import os

import torch
from torch import nn

from textrl.errors import TextRLError
from textrl.policies.contract import PolicyOutput
from textrl.policies.loading import load_causal_lm, split_model_path
from textrl.policies.logits import has_plain_lm_head, lm_forward
from textrl.policies.lora import LoraSettings, add_lora
from textrl.policies.positions import position_ids as positions_of
from textrl.policies.value_head import ValueHead

VALUE_HEAD_FILE = "value_head.safetensors"


class PolicyWithValueHead(nn.Module):
    """A causal LM (``self.lm``) and a :class:`ValueHead` sharing one forward pass.

    ``forward`` returns next-token logits and V(s) at every position: the value of the state
    "sequence up to and including this position", read off the last hidden state (as in TRL's
    ``AutoModelForCausalLMWithValueHead`` and InstructGPT's policy+value networks).

    Args:
        lm: a ``PreTrainedModel`` causal LM, or a peft ``PeftModel`` wrapping one (LoRA): then
            ``self.lm`` is the wrapped model (its linear layers carry the adapters) and
            ``self.adapters`` the ``PeftModel`` that saves them and switches them off.
        base: ``(model, gguf_file)`` the LM was loaded from, recorded when saving adapters.
    """

    def __init__(self, lm: nn.Module, base: tuple[str, str | None] | None = None):
        super().__init__()
        is_peft = hasattr(lm, "disable_adapter") and hasattr(lm, "peft_config")
        self.__dict__["adapters"] = lm if is_peft else None  # not a submodule: it shares self.lm's weights
        self.lm = lm.base_model.model if is_peft else lm
        self.base = base
        self.value_head = ValueHead(self.lm.config.get_text_config().hidden_size)
        self.plain_head = has_plain_lm_head(self.lm)
        self.checkpointed_layers: list[nn.Module] = []

    def enable_gradient_checkpointing(self) -> None:
        """Turn on the LM's gradient (activation) checkpointing (``policy.gradient_checkpointing``):
        each decoder layer keeps only its input in the forward pass and recomputes its
        activations in the backward pass (Chen et al. 2016), non-reentrant. Memory for
        activations then grows with one layer, not the whole stack, for about one extra forward
        pass of compute. The gradients are the same.

        transformers checkpoints a layer only while it is in training mode; the policy runs in
        eval mode (no dropout), so :meth:`forward` marks the checkpointed layers (not their
        dropout sub-modules) as training for passes that build a graph without a KV cache, i.e.
        the algorithm's loss passes; rollouts (``no_grad``, cached) are unaffected.

        Raises:
            TextRLError: the model does not support gradient checkpointing.
        """
        if not getattr(self.lm, "supports_gradient_checkpointing", False):
            raise TextRLError(
                f"policy.gradient_checkpointing: got true; expected a model that supports it "
                f"({type(self.lm).__name__} does not)"
            )
        enable = getattr(self.lm, "activation_checkpointing_enable", None) or self.lm.gradient_checkpointing_enable
        enable({"use_reentrant": False})
        from transformers import PreTrainedModel

        self.checkpointed_layers = [
            m
            for m in self.lm.modules()
            if getattr(m, "gradient_checkpointing", None) is True and not isinstance(m, PreTrainedModel)
        ]  # the decoder layers, not the trunk

    @property
    def config(self):
        """The wrapped model's ``PretrainedConfig``."""
        return self.lm.config

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.lm.parameters()).device

    @classmethod
    def from_pretrained(
        cls,
        model: str,
        gguf_file: str | None = None,
        dtype: str = "float32",
        tokenizer=None,
        dropout: float | None = 0.0,
        device: str | torch.device = "cpu",
        lora: LoraSettings | None = None,
        gradient_checkpointing: bool = False,
    ):
        """Load the LM with :func:`load_causal_lm`; a ``value_head.safetensors`` saved by
        :meth:`save_pretrained` next to it is loaded too (else the head starts at zero).
        ``gradient_checkpointing`` calls :meth:`enable_gradient_checkpointing`.

        With ``lora.r > 0`` fresh LoRA adapters are added (see :mod:`textrl.policies.lora`). A
        directory of saved adapters loads as its base with those adapters merged in: that is the
        starting policy (and π_ref); new adapters, if any, train on top of it.

        Raises:
            TextRLError: as :func:`load_causal_lm` and :func:`~textrl.policies.lora.add_lora`.
        """
        # A saved adapter directory loads merged into its base (load_causal_lm), so it is the
        # starting point and π_ref; fresh adapters then train on top and record it as their base.
        local = os.path.exists(os.path.expanduser(model))
        base = (os.path.abspath(os.path.expanduser(model)) if local else model, gguf_file)
        lm = load_causal_lm(model, gguf_file, dtype, tokenizer, dropout, device)
        if lora is not None and lora.r != 0:  # add_lora rejects a negative rank
            lm = add_lora(lm, lora)
        policy = cls(lm, base)
        head = os.path.join(os.path.expanduser(split_model_path(model, gguf_file)[0]), VALUE_HEAD_FILE)
        if os.path.isfile(head):
            from safetensors.torch import load_file

            policy.value_head.load_state_dict(load_file(head))
        if gradient_checkpointing:
            policy.enable_gradient_checkpointing()
        return policy.to(device).eval()  # RL runs without dropout: rollout and training log-probs agree

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        past_key_values=None,
        use_cache: bool = False,
        logits_to_keep: int = 0,
    ) -> PolicyOutput:
        """One pass through the LM and the value head.

        Args:
            input_ids: ``(B, L)`` long token ids.
            attention_mask: ``(B, L_past + L)`` mask, 1 for real tokens (any int/bool dtype).
            position_ids: ``(B, L)`` long; default ``cumsum(mask) - 1`` (left-padding safe).
            past_key_values: a transformers cache from an earlier call, or ``None``.
            use_cache: return the updated cache.
            logits_to_keep: compute logits and values only for the last k positions (0 = all).

        Returns:
            :class:`PolicyOutput` with ``logits (B, K, V)``, ``values (B, K)`` float32 where K is
            L or ``logits_to_keep``.
        """
        attention_mask = attention_mask.long()
        if position_ids is None:
            position_ids = positions_of(attention_mask)[:, -input_ids.shape[1] :]
        inputs = dict(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=past_key_values,
            use_cache=use_cache,
        )
        checkpointed = self.checkpointed_layers if torch.is_grad_enabled() and not use_cache else []
        modes = [layer.training for layer in checkpointed]
        for layer in checkpointed:  # see enable_gradient_checkpointing
            layer.training = True
        try:
            out = lm_forward(self.lm, inputs, logits_to_keep, plain=self.plain_head)
        finally:
            for layer, mode in zip(checkpointed, modes):
                layer.training = mode
        return PolicyOutput(out.logits, self.value_head(out.hidden), out.cache)

    def response_outputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_length: int):
        """Teacher-forced ``(logits (B, T, V), values (B, T))`` of the last T tokens; see
        :func:`response_outputs`."""
        return response_outputs(self, input_ids, attention_mask, response_length)

    def save_pretrained(
        self, directory: str, tokenizer=None, state_dict: dict[str, torch.Tensor] | None = None
    ) -> None:
        """Write the LM (``save_pretrained``; with LoRA only the adapters, and ``textrl.json``
        names the base model), the tokenizer and ``value_head.safetensors``.

        ``policy.model=<directory>`` loads the result. Written into ``directory`` as given;
        callers wanting atomicity write to a temporary directory and rename it.

        Args:
            state_dict: the policy's whole state dict (``{name: tensor}`` with this module's
                names, ``lm.…`` and ``value_head.…``) to write instead of the module's own
                tensors: a sharded policy's, consolidated (:meth:`textrl.sharding.Sharding.full_state_dict`).
        """
        from safetensors.torch import save_file

        os.makedirs(directory, exist_ok=True)
        meta = {"value_head": VALUE_HEAD_FILE}
        lm_state = head_state = None
        if state_dict is not None:
            lm_state = {k[len("lm.") :]: v for k, v in state_dict.items() if k.startswith("lm.")}
            head_state = {k[len("value_head.") :]: v for k, v in state_dict.items() if k.startswith("value_head.")}
        if self.adapters is not None:  # the adapters only; the base model is named in textrl.json
            # the PeftModel's names are base_model.model.<lm's name>
            peft_state = {f"base_model.model.{k}": v for k, v in lm_state.items()} if lm_state is not None else None
            self.adapters.save_pretrained(directory, state_dict=peft_state)
            meta.update(
                base_model=self.base[0] if self.base else None, base_gguf_file=self.base[1] if self.base else None
            )
        else:
            self.lm.save_pretrained(directory, state_dict=lm_state)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)
        head_state = head_state if head_state is not None else self.value_head.state_dict()
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in head_state.items()}, os.path.join(directory, VALUE_HEAD_FILE)
        )
        with open(os.path.join(directory, "textrl.json"), "w") as f:
            json.dump(meta, f)


def response_outputs(
    policy: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced logits and values for the last ``response_length`` tokens, in one forward
    pass of ``policy`` (a :class:`PolicyWithValueHead`, or the DDP/DeepSpeed wrapper around one:
    calling the wrapper is what all-reduces its gradients).

    Args:
        input_ids: ``(B, P+T)`` [left-padded prompt | right-padded response].
        attention_mask: ``(B, P+T)``.
        response_length: T.

    Returns:
        ``(logits, values)``: ``(B, T, V)`` logits predicting response token t and ``(B, T)``
        V(s_t), the state before token t, both read at position P−1+t.
    """
    out = policy(input_ids, attention_mask, logits_to_keep=response_length + 1)
    return out.logits[:, :-1], out.values[:, :-1]
