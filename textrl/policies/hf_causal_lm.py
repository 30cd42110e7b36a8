"""The policy: a Hugging Face causal LM with a scalar value head on its last hidden state.

Loading accepts a hub id, a local directory, or a GGUF file (``gguf_file=``, or a path ending in
``.gguf``). A tokenizer without a pad token gets one distinct from EOS (and the embedding matrix
grows by one row). GGUF checkpoints are dequantized to float32 by transformers; the quantizer
markers it leaves behind are cleared so the policy can ``save_pretrained``.
"""

from __future__ import annotations

import json
import logging
import os
from typing import NamedTuple

import torch
from torch import nn

from textrl.errors import TextRLError
from textrl.policies.lora import LoraSettings, add_lora, base_model_of, is_adapter_dir, load_adapters
from textrl.policies.positions import position_ids as positions_of
from textrl.policies.sampling import token_logprobs
from textrl.policies.value_head import ValueHead

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
PAD_TOKEN = "<|pad|>"
VALUE_HEAD_FILE = "value_head.safetensors"


class PolicyOutput(NamedTuple):
    """One forward pass: ``logits`` ``(B, L, V)``, ``values`` ``(B, L)`` float32, ``past_key_values``."""

    logits: torch.Tensor
    values: torch.Tensor
    past_key_values: object


def split_model_path(model: str, gguf_file: str | None) -> tuple[str, str | None]:
    """``"dir/x.gguf"`` → ``("dir", "x.gguf")``; anything else is returned unchanged."""
    if gguf_file is None and model.endswith(".gguf"):
        return os.path.dirname(model) or ".", os.path.basename(model)
    return model, gguf_file


def _check_location(model: str, gguf_file: str | None) -> None:
    looks_local = model.startswith((".", "/", "~")) or model.count("/") > 1 or os.path.exists(model)
    if looks_local and not os.path.isdir(os.path.expanduser(model)):
        raise TextRLError(f"policy.model: directory {model!r} does not exist; expected a hub id, a local "
                          f"model directory or a .gguf file")
    if gguf_file and looks_local:
        path = os.path.join(os.path.expanduser(model), gguf_file)
        if not os.path.isfile(path):
            raise TextRLError(f"policy.gguf_file: {path!r} does not exist; expected a .gguf file")
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise TextRLError(f"policy.gguf_file: {path!r} is not a GGUF file (no GGUF magic bytes); expected a .gguf model file")


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def load_tokenizer(model: str, gguf_file: str | None = None):
    """Load the tokenizer of ``model`` and make sure it has a pad token.

    A tokenizer with no pad token gets :data:`PAD_TOKEN` added (distinct from EOS; the caller
    must resize the model's embeddings, which :func:`load_causal_lm` does). A tokenizer whose
    pad equals EOS (SmolLM2) is kept as is: textrl tracks padding with attention masks, never
    by comparing ids with the pad id.

    Raises:
        TextRLError: the model location does not exist or cannot be loaded.
    """
    from transformers import AutoTokenizer

    model, gguf_file = split_model_path(model, gguf_file)
    _check_location(model, gguf_file)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        tok = AutoTokenizer.from_pretrained(os.path.expanduser(model), **kwargs)
    except (OSError, ValueError, RuntimeError) as e:
        raise TextRLError(f"policy.model: cannot load a tokenizer from {model!r} ({_one_line(e)})") from None
    if tok.pad_token_id is None:
        tok.add_special_tokens({"pad_token": PAD_TOKEN})
        log.info("tokenizer of %s had no pad token; added %s (id %d)", model, PAD_TOKEN, tok.pad_token_id)
    return tok


def load_causal_lm(model: str, gguf_file: str | None = None, dtype: str = "float32",
                   tokenizer=None, dropout: float | None = 0.0, device: str | torch.device = "cpu"):
    """Load ``AutoModelForCausalLM`` from a hub id, a directory or a GGUF file.

    Args:
        model: hub id, local directory, or path to a ``.gguf`` file.
        gguf_file: GGUF file name inside ``model`` (a directory or hub repo).
        dtype: ``float32`` | ``bfloat16`` | ``float16`` (aliases ``fp32``, ``bf16``, ``fp16``).
        tokenizer: if it is longer than the model's vocabulary (an added pad token), the input
            and output embeddings are resized to match.
        dropout: set every ``*dropout*``/``*pdrop*`` float in the model config to this value
            (RL wants 0 so rollout and training logprobs agree); ``None`` leaves them.
        device: where to put the model.

    A directory of LoRA adapters saved by textrl (or peft) loads its base model and returns it
    with the adapters merged in.

    Raises:
        TextRLError: unknown dtype, missing path, not a GGUF file, or a load failure.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    if dtype not in DTYPES:
        raise TextRLError(f"policy.dtype: got {dtype!r}; expected one of {sorted(DTYPES)}")
    if gguf_file is None and is_adapter_dir(model):
        base = load_causal_lm(*base_model_of(model), dtype, tokenizer, dropout, device)
        return load_adapters(base, model, trainable=False).merge_and_unload()
    model, gguf_file = split_model_path(model, gguf_file)
    _check_location(model, gguf_file)
    path = os.path.expanduser(model)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        config = AutoConfig.from_pretrained(path, **kwargs)
        if dropout is not None:
            for key, value in config.to_dict().items():
                if ("dropout" in key or "pdrop" in key) and isinstance(value, float):
                    setattr(config, key, dropout)
        lm = AutoModelForCausalLM.from_pretrained(path, config=config, dtype=DTYPES[dtype], **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise TextRLError(f"policy.model: cannot load a causal LM from {model!r} ({_one_line(e)})") from None
    if gguf_file:
        clear_gguf_quantizer(lm)
    if tokenizer is not None and len(tokenizer) > lm.get_input_embeddings().weight.shape[0]:
        lm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    if tokenizer is not None and lm.config.pad_token_id is None:
        lm.config.pad_token_id = tokenizer.pad_token_id
    return lm.to(device)


def clear_gguf_quantizer(lm) -> None:
    """Forget that ``lm`` came from a GGUF file (its weights are already dequantized).

    transformers marks GGUF-loaded models as quantized and then refuses ``save_pretrained``;
    the weights are plain float tensors, so clearing the markers is safe and a reload gives
    identical logits (tested).
    """
    for obj in (lm, getattr(lm, "config", None)):
        if obj is not None and hasattr(obj, "quantization_config"):
            try:
                delattr(obj, "quantization_config")
            except AttributeError:
                obj.quantization_config = None
    if getattr(lm, "hf_quantizer", None) is not None:
        lm.hf_quantizer = None
    for attr in ("is_quantized", "_is_quantized"):
        if getattr(lm, attr, False) is True:
            try:
                setattr(lm, attr, False)
            except AttributeError:
                pass


LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def has_plain_lm_head(lm: nn.Module) -> bool:
    """True when ``logits = lm_head(base_model(x).last_hidden_state)`` (Llama, GPT-2, Qwen...),
    i.e. the CausalLM applies no soft-capping or scaling that calling the trunk directly would skip."""
    config = lm.config.get_text_config()
    if any(getattr(config, name, None) not in (None, 1.0) for name in LOGIT_TRANSFORMS):
        return False
    return lm.get_output_embeddings() is not None and lm.base_model is not lm


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
            raise TextRLError(f"policy.gradient_checkpointing: got true; expected a model that supports it "
                              f"({type(self.lm).__name__} does not)")
        enable = getattr(self.lm, "activation_checkpointing_enable", None) or self.lm.gradient_checkpointing_enable
        enable({"use_reentrant": False})
        from transformers import PreTrainedModel

        self.checkpointed_layers = [m for m in self.lm.modules() if getattr(m, "gradient_checkpointing", None) is True
                                    and not isinstance(m, PreTrainedModel)]  # the decoder layers, not the trunk

    @property
    def config(self):
        """The wrapped model's ``PretrainedConfig``."""
        return self.lm.config

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.lm.parameters()).device

    @classmethod
    def from_pretrained(cls, model: str, gguf_file: str | None = None, dtype: str = "float32",
                        tokenizer=None, dropout: float | None = 0.0, device: str | torch.device = "cpu",
                        lora: LoraSettings | None = None, gradient_checkpointing: bool = False):
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

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None = None,
                past_key_values=None, use_cache: bool = False, logits_to_keep: int = 0) -> PolicyOutput:
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
            position_ids = positions_of(attention_mask)[:, -input_ids.shape[1]:]
        inputs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      past_key_values=past_key_values, use_cache=use_cache)
        checkpointed = self.checkpointed_layers if torch.is_grad_enabled() and not use_cache else []
        modes = [layer.training for layer in checkpointed]
        for layer in checkpointed:  # see enable_gradient_checkpointing
            layer.training = True
        try:
            return self._forward(inputs, logits_to_keep)
        finally:
            for layer, mode in zip(checkpointed, modes):
                layer.training = mode

    def _forward(self, inputs: dict, logits_to_keep: int) -> PolicyOutput:
        if self.plain_head:  # trunk, then lm_head on the kept positions: no hidden-state capture
            out = self.lm.base_model(**inputs)
            hidden = out.last_hidden_state
            hidden = hidden[:, -logits_to_keep:] if logits_to_keep and hidden.shape[1] > logits_to_keep else hidden
            logits = self.lm.get_output_embeddings()(hidden)
        else:
            out = self.lm(**inputs, output_hidden_states=True, logits_to_keep=logits_to_keep)
            hidden = out.hidden_states[-1]
            hidden = hidden[:, -logits_to_keep:] if logits_to_keep else hidden
            logits = out.logits
        return PolicyOutput(logits, self.value_head(hidden), out.past_key_values)

    def response_outputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_length: int):
        """Teacher-forced ``(logits (B, T, V), values (B, T))`` of the last T tokens; see
        :func:`response_outputs`."""
        return response_outputs(self, input_ids, attention_mask, response_length)

    def save_pretrained(self, directory: str, tokenizer=None) -> None:
        """Write the LM (``save_pretrained``; with LoRA only the adapters, and ``textrl.json``
        names the base model), the tokenizer and ``value_head.safetensors``.

        ``policy.model=<directory>`` loads the result. Written into ``directory`` as given;
        callers wanting atomicity write to a temporary directory and rename it.
        """
        from safetensors.torch import save_file

        os.makedirs(directory, exist_ok=True)
        meta = {"value_head": VALUE_HEAD_FILE}
        if self.adapters is not None:  # the adapters only; the base model is named in textrl.json
            self.adapters.save_pretrained(directory)
            meta.update(base_model=self.base[0] if self.base else None, base_gguf_file=self.base[1] if self.base else None)
        else:
            self.lm.save_pretrained(directory)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.value_head.state_dict().items()},
                  os.path.join(directory, VALUE_HEAD_FILE))
        with open(os.path.join(directory, "textrl.json"), "w") as f:
            json.dump(meta, f)



def response_outputs(policy: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     response_length: int) -> tuple[torch.Tensor, torch.Tensor]:
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


def teacher_forced_logprobs(lm: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                            response_length: int, vocab_size: int, sampling=None,
                            chunk_size: int | None = None) -> torch.Tensor:
    """``(B, T)`` float32 log-probabilities of the last ``response_length`` tokens under a plain
    causal LM (π_ref), teacher-forced in chunks of ``chunk_size`` rows (``None`` = one pass), so
    at most ``chunk_size × T × V`` logits exist at once.

    Args:
        lm: the causal LM.
        input_ids: ``(B, P+T)`` long [left-padded prompt | right-padded response].
        attention_mask: ``(B, P+T)``.
        response_length: T.
        vocab_size: logits beyond the action space are dropped.
        sampling: a :class:`~textrl.policies.sampling.SamplingConfig` (temperature...) applied
            to the logits first, as :func:`~textrl.policies.sampling.token_logprobs`.
        chunk_size: rows per forward pass.
    """
    step = chunk_size or input_ids.shape[0]
    parts = []
    for start in range(0, input_ids.shape[0], step):
        ids, mask = input_ids[start:start + step], attention_mask[start:start + step]
        logits = response_logits(lm, ids, mask, response_length)[..., :vocab_size]
        parts.append(token_logprobs(logits, ids[:, -response_length:], sampling))
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def response_logits(lm: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_length: int):
    """Teacher-forced ``(B, T, V)`` logits of a plain causal LM (e.g. π_ref) for the last T tokens,
    with the same position ids as :meth:`PolicyWithValueHead.response_outputs`."""
    mask = attention_mask.long()
    positions = positions_of(mask)
    out = lm(input_ids=input_ids, attention_mask=mask, position_ids=positions, logits_to_keep=response_length + 1)
    return out.logits[:, :-1]
