"""Stage ``sft``: supervised fine-tuning on demonstrations (InstructGPT step 1).

The loss is the next-token cross-entropy on response tokens only (prompt labels are -100). The
prompt is formatted with the tokenizer's chat template when it has one (``sft.prompt_format``),
after ``data.system_prompt``. A multi-turn demonstration (chat ``messages`` with turns after the
first assistant turn) is laid out token for token as the multi-turn env lays out an episode
(:func:`encode_conversation`): the loss covers the assistant turns only, the user and tool turns
are masked.
The policy comes from the ``policy=<name>`` plugin's loader at stage ``sft`` (with ``sft.dropout``);
training runs on ``transformers.Trainer`` over its LM (``policy.lm``): cosine LR with warmup,
epochs, held-out eval loss. The result is the policy's ``save_pretrained`` directory
(``<run_dir>/model``; for ``policy=hf`` a Hugging Face model directory with the value head) that
``policy.model=`` and ``rm.model=`` accept. The Trainer's logs (train loss, learning rate, gradient
norm, epoch every logging step; the held-out loss before and after training) reach the
``textrl_on_metrics`` hooks through a Trainer callback (:func:`hook_callback`), so metrics.jsonl,
the console and wandb get them.

SIGTERM/SIGINT stop training after the optimizer step in progress through the Trainer's own
checkpointing (:func:`stop_callback`): it writes ``<run_dir>/checkpoints/checkpoint-<step>``
(weights, optimizer, scheduler, RNG states, trainer state) and the stage raises
:class:`~textrl.errors.Interrupted`. ``trainer.resume=auto`` (or a checkpoint path) continues
from it, with ``metrics.jsonl`` cut back to its step; the checkpoints are removed once the model
is saved. A checkpoint that cannot be written is a :class:`~textrl.errors.WriteError`.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil

import torch

from textrl.data_sources import DataSources
from textrl.errors import Interrupted, TextRLError
from textrl.interactions.base import end_of_turn_id, message_ids
from textrl.io import apply_umask_modes, atomic_save_dir, atomic_write_json, write_error
from textrl.report import write_training_report_quietly
from textrl.stages.build import build_interaction, load_policy
from textrl.signals import StopSignals, send_test_signal, signal_name
from textrl.training_examples import format_prompt, read_rows, to_demonstration

IGNORE = -100


def encode_demonstration(
    tokenizer, prompt: str, response: str, max_length: int, prompt_format: str = "auto", system: str | None = None
):
    """Token ids and labels of one demonstration.

    Returns:
        ``{"input_ids": list[int], "labels": list[int]}``: labels are -100 on the prompt and equal
        to the ids on the response, which ends with EOS; at most ``max_length`` tokens (the
        prompt is cut from the left first, so the response survives).
    """
    prompt_ids = tokenizer(format_prompt(tokenizer, prompt, prompt_format, system), add_special_tokens=True)[
        "input_ids"
    ]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    response_ids = response_ids[: max_length - 1]
    prompt_ids = prompt_ids[-(max_length - len(response_ids)) :]
    return {"input_ids": prompt_ids + response_ids, "labels": [IGNORE] * len(prompt_ids) + response_ids}


def encode_conversation(
    tokenizer,
    demonstration,
    *,
    max_length: int,
    prompt_format: str = "auto",
    system: str | None = None,
    stop_strings: tuple[str, ...] = (),
):
    """Token ids and labels of a multi-turn demonstration, laid out as the multi-turn env lays out
    an episode in which the policy sampled exactly the assistant turns' tokens.

    The prompt is :func:`~textrl.training_examples.format_prompt` of ``demonstration.prompt`` (after
    its own system message, else ``system``), encoded as the env encodes prompts. Each assistant
    turn is its text encoded without special tokens, followed by the end-of-turn token
    (:func:`~textrl.interactions.base.end_of_turn_id`, else EOS) unless the text ends with one of
    ``stop_strings`` (the interaction's: a tool call ends the turn there); each user or tool turn
    is :func:`~textrl.interactions.base.message_ids`, exactly the ids an interaction appends.

    Args:
        demonstration: a :class:`~textrl.training_examples.Demonstration` with ``turns``.
        max_length: the most tokens kept (the end of the conversation is cut).
        prompt_format: see :func:`~textrl.training_examples.format_prompt`.
        system: the system message when the demonstration has none (``data.system_prompt``).
        stop_strings: strings that end a policy turn without an end-of-turn token.

    Returns:
        ``{"input_ids": list[int], "labels": list[int]}``: labels equal the ids on assistant turns
        and are -100 on the prompt and on user and tool turns.

    Raises:
        TextRLError: a turn whose role is not assistant, user or tool.
    """
    text = format_prompt(tokenizer, demonstration.prompt, prompt_format, demonstration.system or system)
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    labels = [IGNORE] * len(ids)
    eot = end_of_turn_id(tokenizer)
    eot = tokenizer.eos_token_id if eot is None else eot
    for role, content in demonstration.turns:
        if role == "assistant":
            turn = list(tokenizer(content, add_special_tokens=False)["input_ids"])
            if not (stop_strings and content.endswith(tuple(stop_strings))):
                turn.append(eot)
            ids, labels = ids + turn, labels + turn
        elif role in ("user", "tool"):
            turn = message_ids(tokenizer, content, role)
            ids, labels = ids + turn, labels + [IGNORE] * len(turn)
        else:
            raise TextRLError(f"chat row turn has role {role!r}; expected assistant, user or tool after the prompt")
    return {"input_ids": ids[:max_length], "labels": labels[:max_length]}


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
    return {
        (f"eval/{k[5:]}" if k.startswith("eval_") else f"train/{k}"): float(v)
        for k, v in logs.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "total_flos"
    }


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


def stop_callback(stop: StopSignals):
    """A ``transformers.TrainerCallback`` that, once ``stop`` has received SIGTERM/SIGINT, makes the
    Trainer log the train loss since its last log, save a checkpoint after the optimizer step in
    progress and end training (unless that step was the last). Also sends the test signal of
    :func:`textrl.signals.send_test_signal` (``update`` = optimizer steps done)."""
    from transformers import TrainerCallback

    class StopCallback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            send_test_signal(state.global_step)
            if stop.signum and state.global_step < state.max_steps:
                control.should_log = True  # the loss since the last log would not survive the resume
                control.should_save = True
                control.should_training_stop = True
            return control

    return StopCallback()


def checkpoint_saving_trainer():
    """``transformers.Trainer`` whose checkpoint writes fail as :class:`~textrl.errors.WriteError`
    (full disk, permission; the partial checkpoint directory is removed) instead of a traceback."""
    from transformers import Trainer
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    class CheckpointSavingTrainer(Trainer):
        def _save_checkpoint(self, model, trial):
            folder = os.path.join(self.args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            try:
                super()._save_checkpoint(model, trial)
                apply_umask_modes(folder)  # safetensors writes its weights 0600
            except Exception as e:
                failure = write_error(e, folder)  # before the partial files go: a full disk still reads as full
                shutil.rmtree(folder, ignore_errors=True)
                if failure is None:
                    raise
                raise failure from None

    return CheckpointSavingTrainer


def find_sft_checkpoint(resume: str | None, checkpoints: str) -> str | None:
    """The Trainer checkpoint ``trainer.resume`` names: ``auto`` → the newest complete
    ``checkpoint-<step>`` in ``checkpoints`` (``None`` if there is none), a path → that
    directory, unset → ``None``.

    Raises:
        TextRLError: a path that is not a complete Trainer checkpoint (no ``trainer_state.json``).
    """
    from transformers.trainer_utils import get_last_checkpoint

    if not resume:
        return None
    if resume == "auto":
        return get_last_checkpoint(checkpoints) if os.path.isdir(checkpoints) else None
    path = os.path.expanduser(resume)
    if not os.path.isfile(os.path.join(path, "trainer_state.json")):
        raise TextRLError(
            f"trainer.resume: {resume!r} is not a complete sft checkpoint (no trainer_state.json); "
            f"expected 'auto' or a <run_dir>/checkpoints/checkpoint-<step> directory"
        )
    return path


def resume_sft(checkpoint: str | None, run_dir: str) -> tuple[int, float | None]:
    """``(steps done, held-out loss before training)`` of ``checkpoint`` (``(0, None)`` without
    one; the loss is read from ``metrics.jsonl``'s step-0 record, ``nan`` without a held-out set);
    cuts ``metrics.jsonl`` back to those steps (to nothing without a checkpoint)."""
    from textrl.checkpoint import truncate_jsonl

    metrics = os.path.join(run_dir, "metrics.jsonl")
    if checkpoint is None:
        if os.path.exists(metrics):
            os.remove(metrics)
        return 0, None
    with open(os.path.join(checkpoint, "trainer_state.json"), encoding="utf-8") as f:
        state = json.load(f)
    kept = truncate_jsonl(metrics, state["global_step"])
    before = next((r["eval/loss"] for r in kept if r.get("update") == 0 and "eval/loss" in r), float("nan"))
    return state["global_step"], before


def mean_train_loss(log_history: list[dict]) -> float:
    """The mean train loss per optimizer step over a Trainer's ``log_history``: each logged
    ``loss`` is the mean since the previous log, so it is weighted by its number of steps."""
    total, last = 0.0, 0
    for entry in log_history:
        if "loss" in entry:
            total += entry["loss"] * (entry["step"] - last)
            last = entry["step"]
    return total / last if last else float("nan")


def quiet_progress_bar():
    """Hugging Face's progress bars without the raw log dicts it prints (the hooks report them)."""
    from transformers.trainer_callback import ProgressCallback

    class BarOnly(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            pass

    return BarOnly()


def train(cfg, registry, run_dir: str, device: torch.device) -> dict:
    """Run SFT; returns (and writes ``summary.json``) train/eval loss and the model directory.

    Calls the lifecycle hooks of ``registry`` (see :mod:`textrl.hookspecs`); its generated
    datasets (``sft.data=arithmetic:train``) reach the data reader and the interaction as one
    :class:`~textrl.data_sources.DataSources`.

    Raises:
        Interrupted: SIGTERM/SIGINT before the last step (a checkpoint was written; see the
            module docstring).
        WriteError: a checkpoint, the model or the summary cannot be written.
    """
    from transformers import TrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    s = cfg.sft
    hook = registry.manager.hook
    checkpoints = os.path.join(run_dir, "checkpoints")
    checkpoint = find_sft_checkpoint(cfg.trainer.resume, checkpoints)
    hook.textrl_on_stage_start(cfg=cfg, run_dir=run_dir)
    tokenizer, policy = load_policy(cfg, registry, device, "sft", dropout=s.dropout)
    model = policy.lm  # what the Trainer trains: every weight of the LM (the value head is not trained)
    sources = DataSources(registry.datasets)
    demos = [to_demonstration(r) for r in read_rows(s.data, s.split, "sft.data", sources=sources)][: s.max_examples]
    train_rows, eval_rows = split_rows(demos, s.eval_fraction, cfg.seed)
    system = cfg.data.system_prompt
    interaction = build_interaction(cfg, registry, sources=sources) if any(d.turns for d in demos) else None
    stop_strings = tuple(getattr(interaction, "stop_strings", ()))

    def encode(d):
        if d.turns:
            return encode_conversation(
                tokenizer,
                d,
                max_length=s.max_length,
                prompt_format=s.prompt_format,
                system=system,
                stop_strings=stop_strings,
            )
        return encode_demonstration(tokenizer, d.prompt, d.response, s.max_length, s.prompt_format, d.system or system)

    train_set, eval_set = [encode(d) for d in train_rows], [encode(d) for d in eval_rows]
    steps = math.ceil(math.ceil(len(train_set) / s.batch_size) * s.epochs)
    done, before = resume_sft(checkpoint, run_dir)
    args = TrainingArguments(
        output_dir=checkpoints,
        num_train_epochs=s.epochs,
        learning_rate=s.lr,
        lr_scheduler_type="cosine",
        warmup_steps=math.ceil(s.warmup_ratio * steps),
        logging_steps=max(1, steps // 20),
        per_device_train_batch_size=s.batch_size,
        per_device_eval_batch_size=s.batch_size,
        weight_decay=s.weight_decay,
        eval_strategy="no",
        save_strategy="no",
        report_to=[],
        seed=cfg.seed,
        use_cpu=device.type == "cpu",
        disable_tqdm=not cfg.trainer.progress_bar,
        remove_unused_columns=False,
    )
    with StopSignals("after the current step and writing a checkpoint there") as stop:
        trainer = checkpoint_saving_trainer()(
            model=model,
            args=args,
            train_dataset=train_set,
            eval_dataset=eval_set or None,
            data_collator=_Collator(tokenizer.pad_token_id),
            callbacks=[hook_callback(hook), stop_callback(stop)],
        )
        trainer.remove_callback(PrinterCallback)  # prints raw log dicts; the console logger prints them
        if trainer.pop_callback(ProgressCallback) is not None:
            trainer.add_callback(quiet_progress_bar())
        if before is None:
            before = trainer.evaluate()["eval_loss"] if eval_set else float("nan")
        result = trainer.train(resume_from_checkpoint=checkpoint)
        if stop.signum and trainer.state.global_step < trainer.state.max_steps:
            where = os.path.join(checkpoints, f"checkpoint-{trainer.state.global_step}")
            raise Interrupted(
                stop.signum,
                f"stopped by {signal_name(stop.signum)} after step "
                f"{trainer.state.global_step} of {trainer.state.max_steps}, checkpoint "
                f"written to {where!r}; continue with trainer.resume=auto "
                f"hydra.run.dir={run_dir}",
            )
        after = trainer.evaluate()["eval_loss"] if eval_set else float("nan")
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    model_dir = os.path.join(run_dir, "model")
    atomic_save_dir(model_dir, lambda d: policy.save_pretrained(d, tokenizer))
    shutil.rmtree(checkpoints, ignore_errors=True)  # the model is saved: nothing left to resume
    # a resumed Trainer's training_loss covers only the steps since the resume
    train_loss = mean_train_loss(trainer.state.log_history) if done else result.training_loss
    summary = {
        "stage": "sft",
        "model_dir": model_dir,
        "train_examples": len(train_set),
        "eval_examples": len(eval_set),
        "train_loss": train_loss,
        "train_loss_curve": losses,
        "eval_loss_before": before,
        "eval_loss_after": after,
        "steps": result.global_step,
    }
    if done:
        summary["resumed_at_step"] = done
    atomic_write_json(os.path.join(run_dir, "summary.json"), summary)
    write_training_report_quietly(run_dir, "sft")  # report.png, before the loggers' end
    hook.textrl_on_stage_end(summary=summary)
    return summary
