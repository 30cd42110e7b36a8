"""Checkpoints of the RL stage and exact resume.

A checkpoint is a directory ``<run_dir>/checkpoints/update_<NNNNNN>/`` holding ``state.pt`` and
``meta.json``, written to a temporary directory and renamed into place, so a crash or SIGKILL
leaves either the whole checkpoint or none of it; only the newest ``trainer.keep_checkpoints``
are kept. ``state.pt`` holds everything the next update depends on:

- the policy's trainable tensors (all weights and the value head; with LoRA the adapters and
  the value head, since the frozen base is reloaded from ``policy.model``);
- the algorithm's ``state_dict()`` (optimizer, KL controller, shuffling RNG, baselines);

except that a sharded run (``trainer.sharding=fsdp``) keeps the policy's trainable tensors and the
optimizer state in ``sharded/`` instead: ``torch.distributed.checkpoint`` files, one per process
and a ``.metadata`` (:mod:`textrl.sharding`). Every process writes its file into a staging
directory (:func:`staging_dir`, a ``.tmp`` name that a resumed run removes), which the main
process moves into the temporary checkpoint directory before it writes ``state.pt``; a checkpoint
without ``state.pt`` is never resumed from. ``state.pt`` also holds:
- the RNG states of python, numpy and torch (CPU and CUDA) and of the collector and env (token
  sampling, prompt draws);
- the update counter and the run's config fingerprint.

``trainer.resume=auto`` restarts from the newest readable checkpoint in the run directory (from
scratch if there is none; a damaged newer one, e.g. a truncated ``state.pt``, is skipped with a
warning); a path restarts from that checkpoint (a damaged one is an error). ``metrics.jsonl`` and ``samples.jsonl`` are
cut back to the checkpoint's update, so a killed and resumed run ends with exactly one record
per update. ``state.pt`` is a pickle: resume only from checkpoints you wrote.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil

import numpy as np
import torch
from omegaconf import OmegaConf

from textrl.errors import TextRLError, first_line
from textrl.io import atomic_save_dir, atomic_write_text, read_jsonl, save_torch, write_jsonl

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STATE_FILE = "state.pt"
SHARDED_DIR = "sharded"  # a sharded run's torch.distributed.checkpoint files (textrl.sharding)
STATE_KEYS = ("update", "policy", "algorithm", "processes", "config")
# keys that may change between a run and its resumption without changing the experiment
RESUMABLE_KEYS = (
    "trainer.updates",
    "trainer.resume",
    "trainer.checkpoint_every",
    "trainer.keep_checkpoints",
    "trainer.progress_bar",
    "trainer.threads",
    "trainer.sample_every",
    "trainer.samples_per_update",
    "trainer.save_policy",
    "trainer.rollout_gather",  # how a sharded rollout gathers the weights; the same numbers either way
    "logger",
)


def config_fingerprint(cfg) -> dict:
    """The resolved config as flat ``{dotted.key: value}``, without :data:`RESUMABLE_KEYS`."""
    flat = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            flat[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return {k: v for k, v in flat.items() if not any(k == r or k.startswith(r + ".") for r in RESUMABLE_KEYS)}


def checkpoint_dir(run_dir: str, update: int) -> str:
    """``<run_dir>/checkpoints/update_<update:06d>``."""
    return os.path.join(run_dir, CHECKPOINTS, f"update_{update:06d}")


def list_checkpoints(run_dir: str) -> list[str]:
    """Complete checkpoint directories in ``run_dir``, oldest first (temporary ones skipped)."""
    root = os.path.join(run_dir, CHECKPOINTS)
    if not os.path.isdir(root):
        return []
    names = sorted(n for n in os.listdir(root) if n.startswith("update_") and not n.endswith(".old"))
    return [os.path.join(root, n) for n in names if os.path.isfile(os.path.join(root, n, STATE_FILE))]


def rng_state() -> dict:
    """Python, numpy and torch (CPU, and every CUDA device) global RNG states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def staging_dir(run_dir: str, update: int) -> str:
    """``<run_dir>/checkpoints/.tmp-shards-update_<update:06d>``: where a sharded run's processes
    write their shards of ``update``'s checkpoint before it is put together (see the module docstring)."""
    return os.path.join(run_dir, CHECKPOINTS, f".tmp-shards-update_{update:06d}")


def trainable_state(policy: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The policy's trainable tensors by name (CPU copies)."""
    return {n: p.detach().cpu().clone() for n, p in policy.named_parameters() if p.requires_grad}


def save_checkpoint(
    run_dir: str, update: int, cfg, policy, algorithm, processes: list[dict], keep: int, shards: str | None = None
) -> str:
    """Write the checkpoint for ``update`` atomically and prune to the newest ``keep``.

    Args:
        processes: per process (one entry in a single-process run) ``{"collector":
            collector.state_dict(), "rng": rng_state()}``.
        shards: a sharded run's staging directory of ``torch.distributed.checkpoint`` shards
            (:func:`staging_dir`), moved into the checkpoint as ``sharded/``; the policy's tensors
            are then not in ``state.pt``.

    Returns:
        str: the checkpoint directory.

    Raises:
        WriteError: the checkpoint cannot be written (full disk, permission); its temporary
            directory is removed and the earlier checkpoints are untouched.
    """
    state = {
        "update": update,
        "policy": trainable_state(policy) if shards is None else {},
        "algorithm": algorithm.state_dict(),
        "processes": processes,
        "config": config_fingerprint(cfg),
    }
    path = checkpoint_dir(run_dir, update)

    def write(tmp: str) -> None:
        if shards is not None:
            os.replace(shards, os.path.join(tmp, SHARDED_DIR))
        save_torch(state, os.path.join(tmp, STATE_FILE))
        meta = {"update": update, "keys": len(state["policy"]), "sharded": shards is not None}
        atomic_write_text(os.path.join(tmp, "meta.json"), json.dumps(meta))

    atomic_save_dir(path, write)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return path


def remove_checkpoints_after(run_dir: str, update: int) -> None:
    """Delete checkpoints (and temporary checkpoint folders left by a kill) newer than ``update``:
    they belong to a run this one replaces."""
    root = os.path.join(run_dir, CHECKPOINTS)
    if not os.path.isdir(root):
        return
    for name in os.listdir(root):
        digits = "".join(c for c in name if c.isdigit())
        if name.startswith(".tmp") or (name.startswith("update_") and digits and int(digits) > update):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def find_resume_checkpoint(resume: str | None, run_dir: str) -> str | None:
    """The checkpoint directory ``trainer.resume`` points at: ``auto`` → the newest in ``run_dir``
    (``None`` if there is none), a path → that directory (or its newest checkpoint when it is a
    run directory), ``None``/``""`` → ``None``.

    Raises:
        TextRLError: a path that holds no checkpoint.
    """
    if not resume:
        return None
    if resume == "auto":
        found = list_checkpoints(run_dir)
        return found[-1] if found else None
    path = os.path.expanduser(resume)
    if os.path.isfile(os.path.join(path, STATE_FILE)):
        return path
    found = list_checkpoints(path) if os.path.isdir(path) else []
    if found:
        return found[-1]
    raise TextRLError(
        f"trainer.resume: {resume!r} holds no checkpoint ({STATE_FILE}); expected 'auto', a "
        f"checkpoint directory or a run directory with {CHECKPOINTS}/"
    )


class UnreadableCheckpoint(TextRLError):
    """A checkpoint's ``state.pt`` cannot be read (truncated, corrupt, not written by textrl).

    Attributes:
        reason: what went wrong, in a few words (``"RuntimeError: PytorchStreamReader failed ..."``).
    """

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason


def read_state(path: str) -> dict:
    """The state dict of the checkpoint directory ``path``.

    Raises:
        UnreadableCheckpoint: ``state.pt`` cannot be loaded or lacks one of :data:`STATE_KEYS`.
    """
    file = os.path.join(path, STATE_FILE)
    try:
        state = torch.load(file, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many types for a damaged file
        reason = f"{type(e).__name__}: {first_line(e)[:120]}"
        raise UnreadableCheckpoint(
            f"trainer.resume: cannot read {file!r} ({reason}); expected a checkpoint written by textrl", reason
        ) from None
    if not isinstance(state, dict) or not set(STATE_KEYS) <= set(state):
        reason = f"not a textrl checkpoint: no {', '.join(STATE_KEYS)}"
        raise UnreadableCheckpoint(
            f"trainer.resume: cannot read {file!r} ({reason}); expected a checkpoint written by textrl", reason
        )
    return state


def load_checkpoint(path: str, cfg) -> dict:
    """Read a checkpoint and check it was written by the same experiment config.

    Raises:
        UnreadableCheckpoint: a damaged or foreign ``state.pt``.
        TextRLError: a config that differs in a key that changes the experiment (the message
            names the first such keys and both values).
    """
    state = read_state(path)
    now, then = config_fingerprint(cfg), state["config"]
    changed = sorted(k for k in set(now) | set(then) if now.get(k, "<unset>") != then.get(k, "<unset>"))
    if changed:
        shown = ", ".join(
            f"{k}={now.get(k, '<unset>')!r} (checkpoint: {then.get(k, '<unset>')!r})" for k in changed[:3]
        )
        raise TextRLError(
            f"trainer.resume: checkpoint {path!r} is from a different config: {shown}; expected the "
            f"same experiment (only {', '.join(RESUMABLE_KEYS[:2])}... may change)"
        )
    return state


def load_resume_checkpoint(resume: str | None, run_dir: str, cfg) -> tuple[str | None, dict | None]:
    """``(checkpoint directory, its state)`` that ``trainer.resume`` restarts from, or
    ``(None, None)`` to start afresh.

    ``auto`` takes the newest checkpoint in ``run_dir`` that can be read: each damaged newer one
    is skipped with one warning naming it. A path (:func:`find_resume_checkpoint`) must be readable.

    Raises:
        UnreadableCheckpoint: the checkpoint a path names is damaged, or ``auto`` found
            checkpoints but none of them readable.
        TextRLError: a path without a checkpoint, or a checkpoint of another config.
    """
    if resume != "auto":
        path = find_resume_checkpoint(resume, run_dir)
        return (path, load_checkpoint(path, cfg)) if path is not None else (None, None)
    found = list_checkpoints(run_dir)
    for path in reversed(found):
        try:
            return path, load_checkpoint(path, cfg)
        except UnreadableCheckpoint as e:
            log.warning("trainer.resume=auto: skipping checkpoint %s: it cannot be read (%s)", path, e.reason)
    if found:
        raise UnreadableCheckpoint(
            f"trainer.resume: got 'auto' but none of the {len(found)} checkpoints in "
            f"{os.path.join(run_dir, CHECKPOINTS)!r} can be read; expected at least one intact "
            f"checkpoint (remove {CHECKPOINTS}/ to start afresh)"
        )
    return None, None


def restore_checkpoint(
    state: dict, policy, algorithm, collector, rank: int = 0, *, shards: str | None = None, sharding=None
) -> int:
    """Load ``state`` into the policy, algorithm, this process's collector and global RNGs;
    returns its update. A sharded run (``sharding``, a :class:`textrl.sharding.Sharding`) loads
    the policy's and the optimizer's shards from ``shards`` (the checkpoint's ``sharded/``) on
    every process instead of the tensors of ``state``.

    Raises:
        TextRLError: the checkpoint's tensors do not match the policy's trainable parameters, or
            it was written by a different number of processes.
    """
    if rank >= len(state["processes"]):
        raise TextRLError(
            f"trainer.resume: checkpoint was written by {len(state['processes'])} process(es); "
            f"expected this run to use the same number"
        )
    if sharding is not None:
        if len(state["processes"]) != sharding.size:
            raise TextRLError(
                f"trainer.resume: checkpoint was written by {len(state['processes'])} process(es); "
                f"expected this run to use the same number (it uses {sharding.size})"
            )
        algorithm.load_state_dict(state["algorithm"])
        sharding.load(shards, policy, algorithm.optimizer)
        collector.load_state_dict(state["processes"][rank]["collector"])
        set_rng_state(state["processes"][rank]["rng"])
        return int(state["update"])
    params = dict(policy.named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    if set(state["policy"]) != expected:
        missing = sorted(expected - set(state["policy"]))[:2] or sorted(set(state["policy"]) - expected)[:2]
        raise TextRLError(
            f"trainer.resume: checkpoint tensors do not match the policy (e.g. {missing}); expected "
            f"the same policy.model and policy.lora settings"
        )
    with torch.no_grad():
        for name, tensor in state["policy"].items():
            params[name].copy_(tensor)
    algorithm.load_state_dict(state["algorithm"])
    collector.load_state_dict(state["processes"][rank]["collector"])
    set_rng_state(state["processes"][rank]["rng"])
    return int(state["update"])


def truncate_jsonl(path: str, last_update: int) -> list[dict]:
    """Keep the records of ``path`` with ``update <= last_update`` (:func:`textrl.io.read_jsonl`,
    which drops a torn last line); rewritten atomically. Returns the kept records.

    Raises:
        TextRLError: a broken line before the last one (``trainer.resume``).
    """
    if not os.path.isfile(path):
        return []
    kept = [record for record in read_jsonl(path, key="trainer.resume") if record.get("update", 0) <= last_update]
    write_jsonl(path, kept)
    return kept
