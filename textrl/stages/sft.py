"""Stage ``sft``: supervised fine-tuning on demonstrations (InstructGPT step 1).

The loss is the next-token cross-entropy on response tokens only (prompt labels are -100). The
prompt is formatted with the tokenizer's chat template when it has one (``sft.prompt_format``).
Training runs on ``transformers.Trainer``: cosine LR with warmup, epochs, held-out eval loss.
The result is a Hugging Face model directory (``<run_dir>/model``) that ``policy.model=`` and
``rm.model=`` accept. The Trainer's logs (train loss, learning rate, gradient norm, epoch every
logging step; the held-out loss before and after training) reach the ``textrl_on_metrics``
hooks through a Trainer callback (:func:`hook_callback`), so metrics.jsonl, the console and
wandb get them.
"""

from __future__ import annotations

import math
import os
import random
import tempfile

import torch

from textrl.errors import TextRLError
from textrl.io import atomic_save_dir, atomic_write_json
from textrl.policies.loading import load_causal_lm, load_tokenizer
from textrl.training_examples import format_prompt, read_rows, to_demonstration

IGNORE = -100


def encode_demonstration(tokenizer, prompt: str, response: str, max_length: int, prompt_format: str = "auto"):
    """Token ids and labels of one demonstration.

    Returns:
        ``{"input_ids": list[int], "labels": list[int]}``: labels are -100 on the prompt and equal
        to the ids on the response, which ends with EOS; at most ``max_length`` tokens (the
        prompt is cut from the left first, so the response survives).
    """
    prompt_ids = tokenizer(format_prompt(tokenizer, prompt, prompt_format), add_special_tokens=True)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    response_ids = response_ids[:max_length - 1]
    prompt_ids = prompt_ids[-(max_length - len(response_ids)):]
    return {"input_ids": prompt_ids + response_ids, "labels": [IGNORE] * len(prompt_ids) + response_ids}


def split_rows(rows: list, eval_fraction: float, seed: int) -> tuple[list, list]:
    """Shuffle ``rows`` with ``seed`` and hold out ``eval_fraction`` of them (at least one).

    Raises:
        TextRLError: fewer than 2 rows, or ``eval_fraction`` outside [0, 1).
    """
    if not 0 <= eval_fraction < 1:
        raise TextRLError(f"eval_fraction: got {eval_fraction}; expected a number in [0, 1)")
    if len(rows) < 2:
        raise TextRLError(f"got {len(rows)} training rows; expected at least 2")
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    n_eval = max(1, int(len(rows) * eval_fraction)) if eval_fraction > 0 else 0
    return rows[n_eval:], rows[:n_eval]


class _Collator:
    """Right-pads ``input_ids`` (pad id), ``labels`` (-100) and builds the attention mask."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features):
        width = max(len(f["input_ids"]) for f in features)
        batch = {"input_ids": [], "labels": [], "attention_mask": []}
        for f in features:
            pad = width - len(f["input_ids"])
            batch["input_ids"].append(f["input_ids"] + [self.pad_id] * pad)
            batch["labels"].append(f["labels"] + [IGNORE] * pad)
            batch["attention_mask"].append([1] * len(f["input_ids"]) + [0] * pad)
        return {k: torch.tensor(v) for k, v in batch.items()}


def trainer_metrics(logs: dict) -> dict[str, float]:
    """One ``transformers.Trainer`` log as textrl metric names: ``eval_<x>`` → ``eval/<x>``,
    every other number ``<x>`` → ``train/<x>`` (``loss``, ``learning_rate``, ``grad_norm``,
    ``epoch``); ``total_flos`` and non-numbers are dropped."""
    return {(f"eval/{k[5:]}" if k.startswith("eval_") else f"train/{k}"): float(v) for k, v in logs.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "total_flos"}


def hook_callback(hook):
    """A ``transformers.TrainerCallback`` forwarding the Trainer's logs to ``textrl_on_metrics``
    (``update`` = optimizer steps done, ``metrics`` = :func:`trainer_metrics`), on the main
    process. The end-of-training log (runtime, mean loss of the run) is left to the summary."""
    from transformers import TrainerCallback

    class HookCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs and "train_runtime" not in logs:
                hook.textrl_on_metrics(update=state.global_step, metrics=trainer_metrics(logs), samples=[])

    return HookCallback()


def quiet_progress_bar():
    """Hugging Face's progress bars without the raw log dicts it prints (the hooks report them)."""
    from transformers.trainer_callback import ProgressCallback

    class BarOnly(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            pass

    return BarOnly()


def train(cfg, registry, run_dir: str, device: torch.device) -> dict:
    """Run SFT; returns (and writes ``summary.json``) train/eval loss and the model directory.

    Calls the lifecycle hooks of ``registry`` (see :mod:`textrl.hookspecs`).
    """
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    s = cfg.sft
    hook = registry.manager.hook
    hook.textrl_on_stage_start(cfg=cfg, run_dir=run_dir)
    tokenizer = load_tokenizer(cfg.policy.model, cfg.policy.gguf_file)
    model = load_causal_lm(cfg.policy.model, cfg.policy.gguf_file, cfg.policy.dtype, tokenizer=tokenizer,
                           dropout=s.dropout, device=device)
    demos = [to_demonstration(r) for r in read_rows(s.data, s.split)][:s.max_examples]
    train_rows, eval_rows = split_rows(demos, s.eval_fraction, cfg.seed)
    encode = lambda d: encode_demonstration(tokenizer, d.prompt, d.response, s.max_length, s.prompt_format)  # noqa: E731
    train_set, eval_set = [encode(d) for d in train_rows], [encode(d) for d in eval_rows]
    steps = math.ceil(math.ceil(len(train_set) / s.batch_size) * s.epochs)
    with tempfile.TemporaryDirectory(dir=run_dir) as scratch:
        args = TrainingArguments(
            output_dir=scratch, num_train_epochs=s.epochs, learning_rate=s.lr, lr_scheduler_type="cosine",
            warmup_steps=math.ceil(s.warmup_ratio * steps), logging_steps=max(1, steps // 20),
            per_device_train_batch_size=s.batch_size,
            per_device_eval_batch_size=s.batch_size, weight_decay=s.weight_decay, eval_strategy="no",
            save_strategy="no", report_to=[], seed=cfg.seed, use_cpu=device.type == "cpu",
            disable_tqdm=not cfg.trainer.progress_bar, remove_unused_columns=False)
        trainer = Trainer(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set or None,
                          data_collator=_Collator(tokenizer.pad_token_id), callbacks=[hook_callback(hook)])
        trainer.remove_callback(PrinterCallback)  # prints raw log dicts; the console logger prints them
        if trainer.pop_callback(ProgressCallback) is not None:
            trainer.add_callback(quiet_progress_bar())
        before = trainer.evaluate()["eval_loss"] if eval_set else float("nan")
        result = trainer.train()
        after = trainer.evaluate()["eval_loss"] if eval_set else float("nan")
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    model_dir = os.path.join(run_dir, "model")
    atomic_save_dir(model_dir, lambda d: (model.save_pretrained(d), tokenizer.save_pretrained(d)))
    summary = {"stage": "sft", "model_dir": model_dir, "train_examples": len(train_set), "eval_examples": len(eval_set),
               "train_loss": result.training_loss, "train_loss_curve": losses, "eval_loss_before": before,
               "eval_loss_after": after, "steps": result.global_step}
    atomic_write_json(os.path.join(run_dir, "summary.json"), summary)
    hook.textrl_on_stage_end(summary=summary)
    return summary
