"""Multi-process training through accelerate: data parallel (DDP), or sharded with FSDP2.

``accelerate launch --num_processes N -m textrl ...`` starts N copies of the run. Each collects
``rollout.batch_size / N`` episodes with its own seed; the algorithm hands its model and
optimizer to ``Accelerator.prepare`` (DDP) so gradients are all-reduced, or, with
``trainer.sharding=fsdp``, shards them (:mod:`textrl.sharding`, on the process group accelerate
set up); metrics are averaged across processes; only the main process writes files and logs. A
plain ``textrl`` run (one process) never builds an ``Accelerator`` and runs exactly as before.
"""

from __future__ import annotations

import os

import torch

from textrl.errors import TextRLError


def launched_processes() -> int:
    """How many processes the launcher started (``WORLD_SIZE``, set by accelerate launch and
    torchrun; 1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def launched_rank() -> int:
    """This process's index among the launched ones (``RANK``; 0 when run directly). Rank 0 is
    the main process, the one that writes files and logs."""
    return int(os.environ.get("RANK", "0") or 0)


def make_accelerator(device: torch.device, sharding: str = "none"):
    """An ``accelerate.Accelerator`` when launched with several processes, else ``None``.

    On CPU the processes talk over gloo; on CUDA each process takes GPU ``LOCAL_RANK`` (NCCL).
    DDP expects every trainable parameter in every loss: an algorithm that leaves one out (the
    value head in REINFORCE) freezes it. With ``sharding="fsdp"`` (``trainer.sharding``) the
    accelerator only provides the processes, their group and device: textrl shards the models
    itself (:mod:`textrl.sharding`).

    Raises:
        TextRLError: launched with accelerate's FSDP (``distributed_type: FSDP``, e.g.
            ``textrl/data/accelerate/fsdp.yaml``) but ``sharding`` is not ``fsdp``.
    """
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and sharding != "fsdp":
        raise TextRLError(
            f"trainer.sharding: got {sharding!r} under an accelerate FSDP launch (distributed_type: FSDP); "
            f"expected trainer.sharding=fsdp"
        )
    if launched_processes() <= 1:
        return None
    from accelerate import Accelerator

    return Accelerator(cpu=device.type == "cpu")


def single_process(accelerator) -> bool:
    """True without an accelerator or with one process: nothing to all-reduce or gather."""
    return accelerator is None or accelerator.num_processes == 1


def rank_and_size(accelerator) -> tuple[int, int]:
    """``(process index, number of processes)``; ``(0, 1)`` without an accelerator."""
    return (0, 1) if accelerator is None else (accelerator.process_index, accelerator.num_processes)


def mean_across_processes(values: dict[str, float], accelerator) -> dict[str, float]:
    """Average every scalar in ``values`` over the processes (one all-reduce); unchanged when
    there is one process. All processes must pass the same keys."""
    if single_process(accelerator):
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=accelerator.device)
    t = accelerator.reduce(t, reduction="mean")
    return dict(zip(keys, t.tolist()))


def max_across_processes(value: float, accelerator) -> float:
    """The largest of every process's ``value`` (one gather); ``value`` itself for one process."""
    if single_process(accelerator):
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=accelerator.device)
    return float(accelerator.gather(t).max())


def replica_max_abs_diff(module: torch.nn.Module, accelerator) -> float:
    """Largest ``|θ_rank − θ_0|`` over every parameter and process: 0.0 when all replicas of
    ``module`` are identical (as data-parallel training must keep them). 0.0 for one process."""
    if single_process(accelerator):
        return 0.0
    from accelerate.utils import broadcast

    worst = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    for p in module.parameters():
        theirs = broadcast(p.detach().clone(), from_process=0)
        worst = torch.maximum(worst, (p.detach() - theirs).abs().max().double())
    return float(accelerator.gather(worst[None]).max())


def gather_states(state: dict, accelerator) -> list[dict]:
    """Every process's ``state`` (picklable), in process order; ``[state]`` for one process."""
    if single_process(accelerator):
        return [state]
    from accelerate.utils import gather_object

    return gather_object([state])


def broadcast_object(obj, accelerator):
    """The main process's ``obj`` (picklable) on every process; ``obj`` itself for one process."""
    if single_process(accelerator):
        return obj
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([obj], from_process=0)[0]
