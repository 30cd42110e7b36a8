"""Loading a Hugging Face causal LM and its tokenizer: from a hub id, a local directory, or a
GGUF file (``gguf_file=``, or a path ending in ``.gguf``).

A tokenizer without a pad token gets one distinct from EOS (and the embedding matrix grows by one
row). GGUF checkpoints are dequantized to float32 by transformers; the quantizer markers it leaves
behind are cleared so the model can ``save_pretrained``.
"""

from __future__ import annotations

import logging
import os

import torch

from textrl.config.choices import POLICY_DTYPES
from textrl.errors import TextRLError
from textrl.policies.lora import base_model_of, is_adapter_dir, load_adapters

log = logging.getLogger(__name__)

DTYPES = {
    name: getattr(torch, {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(name, name))
    for name in POLICY_DTYPES
}
"""``policy.dtype`` name → torch dtype."""
PAD_TOKEN = "<|pad|>"


def split_model_path(model: str, gguf_file: str | None) -> tuple[str, str | None]:
    """``"dir/x.gguf"`` → ``("dir", "x.gguf")``; anything else is returned unchanged."""
    if gguf_file is None and model.endswith(".gguf"):
        return os.path.dirname(model) or ".", os.path.basename(model)
    return model, gguf_file


def check_model_location(model: str, gguf_file: str | None) -> None:
    """Fail early, in one line, on a local model path that is not a directory, or a GGUF file
    inside it that is missing or lacks the GGUF magic bytes (a hub id passes untouched).

    Raises:
        TextRLError: naming ``policy.model`` or ``policy.gguf_file``.
    """
    looks_local = model.startswith((".", "/", "~")) or model.count("/") > 1 or os.path.exists(model)
    if looks_local and not os.path.isdir(os.path.expanduser(model)):
        raise TextRLError(
            f"policy.model: directory {model!r} does not exist; expected a hub id, a local "
            f"model directory or a .gguf file"
        )
    if gguf_file and looks_local:
        path = os.path.join(os.path.expanduser(model), gguf_file)
        if not os.path.isfile(path):
            raise TextRLError(f"policy.gguf_file: {path!r} does not exist; expected a .gguf file")
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise TextRLError(
                    f"policy.gguf_file: {path!r} is not a GGUF file (no GGUF magic bytes); expected a .gguf model file"
                )


def one_line(e: Exception) -> str:
    """The first line of ``e``'s message (its type's name when the message is empty)."""
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
    check_model_location(model, gguf_file)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        tok = AutoTokenizer.from_pretrained(os.path.expanduser(model), **kwargs)
    except (OSError, ValueError, RuntimeError) as e:
        raise TextRLError(f"policy.model: cannot load a tokenizer from {model!r} ({one_line(e)})") from None
    if tok.pad_token_id is None:
        tok.add_special_tokens({"pad_token": PAD_TOKEN})
        log.info("tokenizer of %s had no pad token; added %s (id %d)", model, PAD_TOKEN, tok.pad_token_id)
    return tok


def load_causal_lm(
    model: str,
    gguf_file: str | None = None,
    dtype: str = "float32",
    tokenizer=None,
    dropout: float | None = 0.0,
    device: str | torch.device = "cpu",
):
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
    check_model_location(model, gguf_file)
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
        raise TextRLError(f"policy.model: cannot load a causal LM from {model!r} ({one_line(e)})") from None
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
