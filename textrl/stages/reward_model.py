"""Stage ``rm``: reward-model training (InstructGPT step 2).

``rm.objective=ranking``: a scalar-output ``AutoModelForSequenceClassification`` (any HF backbone,
including an SFT causal-LM directory, as InstructGPT initialises its RM from the SFT model)
trained with the K-wise ranking loss of :mod:`textrl.algorithms.ranking`: every step takes
``rm.batch_size`` prompts with all their responses, scores each response once and uses all
C(K, 2) pairs. After training the reward is normalised: a bias makes the mean score of the
reference set (the best-ranked responses of the training data) 0, and ``rm.unit_std`` adds a gain
making its std 1. Both are stored in ``textrl_reward.json`` next to the model and applied by
``reward=learned`` on load.

``rm.objective=classification``: a classifier on labelled text (e.g. IMDB sentiment); the saved
directory works as ``reward=sentiment reward.backend=classifier reward.model=<dir>``.

Both report through the ``textrl_on_metrics`` hooks (metrics.jsonl, console, wandb): the mean
train loss and accuracy since the last report, learning rate and epoch about 20 times a run, and
the held-out numbers (``eval/*``) before (step 0) and after training.

SIGTERM/SIGINT stop training after the optimizer step in progress with
:class:`~textrl.errors.Interrupted` (exit status 128 + signum, one line); this stage writes no
checkpoint, so it is run again from the start.
"""

from __future__ import annotations

import math
import os
import time

import torch
from tqdm import tqdm

from textrl.algorithms.base import make_adamw
from textrl.algorithms.ranking import ranking_loss, ranking_pairs
from textrl.data_sources import DataSources
from textrl.errors import Interrupted, TextRLError
from textrl.io import atomic_save_dir, atomic_write_json
from textrl.report import write_training_report_quietly
from textrl.signals import StopSignals, send_test_signal, signal_name
from textrl.rewards.learned import NORMALIZATION_FILE, RewardScorer, load_sequence_classifier
from textrl.stages.sft import split_rows
from textrl.training_examples import read_rows, to_labelled, to_ranking


def _optimizer_and_schedule(model, lr: float, steps: int, warmup_ratio: float, weight_decay: float = 0.0):
    from transformers import get_scheduler

    optimizer = make_adamw([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    schedule = get_scheduler(
        "cosine", optimizer, num_warmup_steps=math.ceil(warmup_ratio * steps), num_training_steps=steps
    )
    return optimizer, schedule


def _batches(items: list, batch_size: int, epochs: float, seed: int):
    """Yield ``(step, batch)`` for ``epochs`` (fractional allowed) shuffled passes over ``items``."""
    generator = torch.Generator().manual_seed(seed)
    total = max(1, math.ceil(len(items) * epochs / batch_size))
    step, order = 0, []
    while step < total:
        if len(order) < batch_size:
            order += torch.randperm(len(items), generator=generator).tolist()
        batch, order = [items[i] for i in order[:batch_size]], order[batch_size:]
        yield step, total, batch
        step += 1


def fit(
    model, items: list, r, seed: int, step, log, progress_bar: bool = False, stop: StopSignals | None = None
) -> int:
    """Train ``model`` on shuffled minibatches of ``items`` for ``r.epochs``: AdamW, cosine LR with
    ``r.warmup_ratio`` warmup, gradient-norm clip 1; ``step(batch) -> (loss, accuracy)``. Leaves
    the model in eval mode and returns the number of optimizer steps.

    Every ``max(1, steps // 20)`` steps and at the last, ``log(steps_done, metrics)`` gets
    ``train/loss`` and ``train/accuracy`` (means over the steps since the previous call, read
    from the device once per call), ``train/learning_rate`` and ``train/epoch`` (passes over
    ``items``). ``progress_bar`` shows a tqdm bar of the steps.

    Raises:
        Interrupted: ``stop`` received SIGTERM/SIGINT; raised after the step in progress.
    """
    optimizer = schedule = bar = None
    loss_sum = accuracy_sum = 0.0
    since = 0
    model.train()
    for i, total, batch in _batches(items, r.batch_size, r.epochs, seed):
        if optimizer is None:
            optimizer, schedule = _optimizer_and_schedule(model, r.lr, total, r.warmup_ratio)
            bar = tqdm(total=total, desc="rm steps", disable=not progress_bar, dynamic_ncols=True)
        loss, accuracy = step(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        loss_sum, accuracy_sum, since = loss_sum + loss.detach(), accuracy_sum + accuracy, since + 1
        bar.update(1)
        if (i + 1) % max(1, total // 20) == 0 or i == total - 1:
            log(
                i + 1,
                {
                    "train/loss": float(loss_sum) / since,
                    "train/accuracy": float(accuracy_sum) / since,
                    "train/learning_rate": schedule.get_last_lr()[0],
                    "train/epoch": (i + 1) * r.batch_size / len(items),
                },
            )
            loss_sum = accuracy_sum = 0.0
            since = 0
        send_test_signal(i + 1)
        if stop is not None and stop.signum and i < total - 1:
            bar.close()
            raise Interrupted(
                stop.signum,
                f"stopped by {signal_name(stop.signum)} after step {i + 1} of {total}; "
                f"stage=rm writes no checkpoint: run it again",
            )
    bar.close()
    model.eval()
    return total


def ranking_step(scorer: RewardScorer, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and pairwise accuracy of one batch of :class:`~textrl.training_examples.Ranking` s: every
    response of every prompt is scored in one forward pass (Σ K rows), then all ordered pairs of
    each prompt enter the loss."""
    scores = scorer.score([x.prompt for x in batch for _ in x.responses], [y for x in batch for y in x.responses])
    return ranking_loss(scores, ranking_pairs([x.ranks for x in batch], device=scores.device))


def evaluate_ranking(scorer: RewardScorer, rankings, batch_size: int) -> dict:
    """Mean ranking loss and pairwise accuracy of ``scorer`` over ``rankings`` (no grad)."""
    losses, correct, pairs_seen = [], 0.0, 0
    with torch.no_grad():
        for i in range(0, len(rankings), batch_size):
            chunk = rankings[i : i + batch_size]
            scores = scorer.score(
                [r.prompt for r in chunk for _ in r.responses], [y for r in chunk for y in r.responses]
            )
            pairs = ranking_pairs([r.ranks for r in chunk], device=scores.device)
            loss, acc = ranking_loss(scores, pairs)
            losses.append(float(loss) * len(chunk))
            correct += float(acc) * len(pairs.winner)
            pairs_seen += len(pairs.winner)
    return {"loss": sum(losses) / max(1, len(rankings)), "pairwise_accuracy": correct / max(1, pairs_seen)}


def train_ranking(
    cfg, run_dir: str, device: torch.device, log, stop: StopSignals | None = None, *, sources: DataSources
) -> dict:
    """K-wise ranking RM; see the module docstring. ``log(step, metrics)`` reports, ``stop`` can
    interrupt (see :func:`fit`), ``sources`` resolves generated ``rm.data``/``rm.eval_data``."""
    r = cfg.rm
    rankings = [to_ranking(row) for row in read_rows(r.data, r.split, "rm.data", sources=sources)]
    rankings = [x for x in rankings if len(set(x.ranks)) > 1][: r.max_examples]
    if r.eval_data:
        eval_rows = read_rows(r.eval_data, r.split, "rm.eval_data", sources=sources)
        train_set, eval_set = rankings, [to_ranking(row) for row in eval_rows]
    else:
        train_set, eval_set = split_rows(rankings, r.eval_fraction, cfg.seed)
    eval_set = eval_set[: r.max_eval_examples]
    model, tokenizer = load_sequence_classifier(r.model, r.gguf_file, num_labels=1, device=device)
    scorer = RewardScorer(model, tokenizer, max_length=r.max_length, prompt_format=r.prompt_format, device=device)
    before = evaluate_ranking(scorer, eval_set, r.batch_size) if eval_set else {}
    if before:
        log(0, {f"eval/{k}": v for k, v in before.items()})
    start = time.perf_counter()
    steps = fit(
        model,
        train_set,
        r,
        cfg.seed,
        lambda batch: ranking_step(scorer, batch),
        log,
        cfg.trainer.progress_bar,
        stop=stop,
    )
    after = evaluate_ranking(scorer, eval_set, r.batch_size) if eval_set else {}
    if after:
        log(steps, {f"eval/{k}": v for k, v in after.items()})
    normalization = {"bias": 0.0, "gain": 1.0}
    if r.normalize:
        with torch.no_grad():
            best = [(x.prompt, x.responses[x.ranks.index(min(x.ranks))]) for x in train_set[:512]]
            ref = torch.cat(
                [
                    scorer.score([p for p, _ in best[i : i + 32]], [y for _, y in best[i : i + 32]])
                    for i in range(0, len(best), 32)
                ]
            )
        gain = 1.0 / float(ref.std().clamp(min=1e-6)) if r.unit_std and len(ref) > 1 else 1.0
        normalization = {
            "bias": -float(ref.mean()),
            "gain": gain,
            "reference": "best-ranked training responses",
            "reference_size": len(best),
        }
    return _save(
        run_dir,
        model,
        tokenizer,
        {
            "objective": "ranking",
            "normalization": normalization,
            "prompt_format": r.prompt_format,
            "max_length": r.max_length,
        },
        {
            "stage": "rm",
            "objective": "ranking",
            "train_examples": len(train_set),
            "eval_examples": len(eval_set),
            "eval_before": before,
            "eval_after": after,
            "train_time_s": time.perf_counter() - start,
            "normalization": normalization,
        },
    )


def train_classification(
    cfg, run_dir: str, device: torch.device, log, stop: StopSignals | None = None, *, sources: DataSources
) -> dict:
    """Classifier on labelled text (``rm.text_field``/``rm.label_field``). ``log(step, metrics)``
    reports, ``stop`` can interrupt (see :func:`fit`), ``sources`` resolves generated
    ``rm.data``/``rm.eval_data``."""
    r = cfg.rm
    texts, labels = to_labelled(read_rows(r.data, r.split, "rm.data", sources=sources), r.text_field, r.label_field)
    rows = list(zip(texts, labels))[: r.max_examples] if r.max_examples else list(zip(texts, labels))
    if r.eval_data:
        held_out = read_rows(r.eval_data, r.split, "rm.eval_data", sources=sources)
        eval_rows = list(zip(*to_labelled(held_out, r.text_field, r.label_field)))
        train_rows = rows
    else:
        train_rows, eval_rows = split_rows(rows, r.eval_fraction, cfg.seed)
    eval_rows = eval_rows[: r.max_eval_examples]
    names = list(r.labels)
    if max(labels) >= len(names):
        raise TextRLError(f"rm.labels: got {names}; expected a name for every label up to {max(labels)}")
    model, tokenizer = load_sequence_classifier(
        r.model, r.gguf_file, num_labels=len(names), device=device, id2label=dict(enumerate(names))
    )
    scorer = RewardScorer(model, tokenizer, max_length=r.max_length, head_tokens=r.head_tokens, device=device)
    start = time.perf_counter()

    def classification_step(batch):
        logits = scorer.logits([t for t, _ in batch])
        target = torch.tensor([y for _, y in batch], device=logits.device)
        return torch.nn.functional.cross_entropy(logits, target), (logits.argmax(-1) == target).float().mean()

    steps = fit(model, train_rows, r, cfg.seed, classification_step, log, cfg.trainer.progress_bar, stop=stop)
    train_time = time.perf_counter() - start
    accuracy = classification_accuracy(scorer, eval_rows, r.batch_size * 2)
    log(steps, {"eval/accuracy": accuracy})
    return _save(
        run_dir,
        model,
        tokenizer,
        {"objective": "classification", "head_tokens": r.head_tokens, "max_length": r.max_length},
        {
            "stage": "rm",
            "objective": "classification",
            "train_examples": len(train_rows),
            "eval_examples": len(eval_rows),
            "eval_accuracy": accuracy,
            "train_time_s": train_time,
        },
    )


def classification_accuracy(scorer: RewardScorer, rows, batch_size: int) -> float:
    """Fraction of ``(text, label)`` rows whose argmax logit is the label."""
    correct = 0
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            chunk = rows[i : i + batch_size]
            predicted = scorer.logits([t for t, _ in chunk]).argmax(-1).cpu()
            correct += int((predicted == torch.tensor([y for _, y in chunk])).sum())
    return correct / max(1, len(rows))


def _save(run_dir, model, tokenizer, settings: dict, summary: dict) -> dict:
    model_dir = os.path.join(run_dir, "model")

    def save(directory):
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        atomic_write_json(os.path.join(directory, NORMALIZATION_FILE), settings)

    atomic_save_dir(model_dir, save)
    summary["model_dir"] = model_dir
    atomic_write_json(os.path.join(run_dir, "summary.json"), summary)
    return summary


def train(cfg, registry, run_dir: str, device: torch.device) -> dict:
    """Dispatch on ``rm.objective`` (``ranking`` | ``classification``, validated by
    :func:`textrl.config.check_config`), calling the lifecycle hooks of ``registry`` (see
    :mod:`textrl.hookspecs`) and reading its generated datasets (``rm.data=<name>:<split>``) through
    one :class:`~textrl.data_sources.DataSources`; returns the summary (also ``summary.json``).

    Raises:
        TextRLError: ``rm.model`` unset (a policy without ``policy.model`` gives it no default).
        Interrupted: SIGTERM/SIGINT during training (see :func:`fit`).
    """
    if cfg.rm.model is None:
        raise TextRLError(
            f"rm.model: got null; expected a model to initialise the reward model from (an SFT directory, "
            f"a hub id or a directory): policy={cfg.policy.name} has no policy.model to default to"
        )
    hook = registry.manager.hook
    hook.textrl_on_stage_start(cfg=cfg, run_dir=run_dir)

    def log(step: int, metrics: dict) -> None:
        hook.textrl_on_metrics(update=step, metrics=metrics, samples=[])

    with StopSignals("after the current step (stage=rm writes no checkpoint)") as stop:
        summary = (train_ranking if cfg.rm.objective == "ranking" else train_classification)(
            cfg, run_dir, device, log, stop=stop, sources=DataSources(registry.datasets)
        )
    write_training_report_quietly(run_dir, "rm")  # report.png, before the loggers' end
    hook.textrl_on_stage_end(summary=summary)
    return summary
