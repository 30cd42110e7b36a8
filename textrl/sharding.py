"""Sharded training with PyTorch FSDP2 (``trainer.sharding=fsdp``): each process stores about 1/N
of the RL stage's weights, gradients and AdamW state, and gathers full weights only while it uses
them.

What is sharded (``torch.distributed.fsdp.fully_shard``; a *unit* is the set of weights gathered
and freed together, split along dimension 0 across the N processes):

==========================  ======================================================================
policy + value head         a unit per decoder layer (the LM's ``_no_split_modules`` classes), one
                            for the trunk's other weights with the LM head (embeddings, final
                            norm, head: tied embeddings must share a unit), and the root, the
                            value head (:meth:`Sharding.shard_trained`); AdamW holds the shards
                            (``DTensor``), so its two moments are sharded with them
π_ref                       without LoRA, the frozen copy of the LM in a :class:`ShardedReference`:
                            a unit per decoder layer and the root (embeddings, norm, head); with
                            LoRA π_ref is the policy with its adapters off, nothing more to shard
reward model                every transformers model the reward model holds
                            (:func:`reward_modules`): a unit per decoder layer and the root
==========================  ======================================================================

A unit is gathered (all-gather) in its forward pass and freed after it (and again in the backward
pass of the policy's units; gradients are reduce-scattered, averaged over the processes as DDP's
all-reduce averages them).

Precision. FSDP2's ``MixedPrecisionPolicy`` keeps the stored dtype (``param_dtype=None``) with
``reduce_dtype=float32``: the shards are the float32 master weights, a gathered unit is those same
float32 weights, gradients are reduce-scattered in float32, and ``trainer.precision=bf16`` works as
without sharding, by autocast over each forward pass (:mod:`textrl.precision`). A bf16
``param_dtype`` would halve the all-gather traffic, but every op of the forward pass would then run
in bf16, the LM head and the value head included, which textrl's precision rule keeps in float32.
Under bf16 a sharded policy's rollout runs under autocast without the bf16 rollout copy of
:mod:`textrl.rollout.rollout_weights` (which copies a module, and a sharded one cannot be copied):
autocast casts the trainable weights once per rollout and frozen ones (LoRA's base) at every token.

Rollouts (``trainer.rollout_gather``; :meth:`Sharding.rollout`). The decode engines need every
weight at every token step:

- ``whole`` (default): before the rollout every unit of the policy is gathered and kept gathered
  until the rollout ends, then freed before the update: 4 bytes per policy parameter held for the
  rollout, one all-gather of the policy per rollout, and no communication while decoding, so each
  process decodes at its own pace.
- ``per_layer``: each unit is gathered for each forward pass and freed after it: one unit's
  weights held at a time, and the whole policy all-gathered at every token step. Every process
  must then run the same number of forward passes: the collector decodes in lockstep
  (:class:`Lockstep`; one all-reduce of a flag per token step), a process whose episodes have
  ended feeding a dummy token until every process's have.

The reward model is gathered whole for the rollout in both modes (its calls come as each
process's episodes end, which differs between processes), 4 bytes per parameter for the rollout.
π_ref's teacher-forced pass after the decoding gathers unit by unit (every process makes the same
number of passes). ``perf/gather_s`` is the time spent gathering before each rollout.

Checkpoints (:meth:`Sharding.save`, :meth:`Sharding.load`): the policy's trainable weights and the
optimizer state are written by every process, each its own shards, with
``torch.distributed.checkpoint`` (:mod:`textrl.checkpoint` puts them in the checkpoint's
``sharded/`` directory, :data:`textrl.checkpoint.SHARDED_DIR`); a run resumes from them on the same number of processes. At the end the
policy is consolidated (:meth:`Sharding.full_state_dict`, gathered to the main process's CPU one
tensor at a time) and saved as a Hugging Face directory, loadable by ``transformers`` alone.

Why textrl calls ``fully_shard`` itself instead of accelerate's FSDP plugin: the plugin applies
only to GPU-type backends (a CPU run's ``distributed_type`` is ``MULTI_CPU``, which ignores it) and
with FSDP2 prepares one model with its optimizer, not a frozen π_ref or reward model. Sharding
directly keeps one code path on CPU (gloo, what the tests run) and CUDA (NCCL); accelerate still
launches the processes, sets up the process group and the device, and averages the metrics. With
one process (``textrl trainer.sharding=fsdp`` without a launcher) :class:`Sharding` makes a
one-process group of its own.

Loading: every process loads each model whole before sharding it (the policy and π_ref on the
CPU, then ``fully_shard`` moves each unit's shard to the device), so host memory must hold the
full models once per process.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from textrl.errors import TextRLError
from textrl.policies.logits import LMOutput, lm_forward


def is_sharded(module) -> bool:
    """True when ``module`` (an ``nn.Module``, or anything else: False) holds FSDP2-sharded units."""
    if not isinstance(module, nn.Module) or not torch.distributed.is_available():
        return False
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in module.modules())


def local_bytes(tensors) -> int:
    """Bytes this process stores for ``tensors`` (an iterable of tensors; a ``DTensor`` counts its
    local shard; a tensor met twice, e.g. tied weights, counts once)."""
    from torch.distributed.tensor import DTensor

    seen, total = set(), 0
    for t in tensors:
        local = t.to_local() if isinstance(t, DTensor) else t
        if not isinstance(local, torch.Tensor) or id(t) in seen:
            continue
        seen.add(id(t))
        total += local.numel() * local.element_size()
    return total


def stored_bytes(models: dict[str, nn.Module | None], optimizer=None) -> dict[str, int]:
    """``{name: bytes}`` this process stores for each model's parameters and, as ``"optimizer"``,
    for the optimizer's state tensors (AdamW's moments and step counts): the local shards when
    sharded, the whole tensors otherwise. A model that is ``None`` counts 0."""
    out = {name: local_bytes(m.parameters()) if m is not None else 0 for name, m in models.items()}
    if optimizer is not None:
        out["optimizer"] = local_bytes(t for state in optimizer.state.values() for t in state.values())
    return out


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` whose class the model names in ``_no_split_modules`` (transformers'
    decoder layers), innermost first; ``[]`` when it names none."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    return [m for m in reversed(list(model.modules())) if type(m).__name__ in names]


def reward_modules(reward, depth: int = 4) -> list[nn.Module]:
    """The transformers models a reward model holds: ``reward`` itself when it is one, else those
    found in its attributes, lists, tuples and dicts, ``depth`` levels down (a composite reward's
    components, a classifier's ``scorer.model``). Tokenizers and other objects from libraries are
    not searched. Each model is listed once."""
    from transformers import PreTrainedModel

    found: list[nn.Module] = []
    seen: set[int] = set()

    def walk(obj, level: int) -> None:
        if id(obj) in seen or level < 0:
            return
        seen.add(id(obj))
        if isinstance(obj, PreTrainedModel):
            found.append(obj)
        elif isinstance(obj, (list, tuple)):
            for item in obj:
                walk(item, level - 1)
        elif isinstance(obj, dict):
            for item in obj.values():
                walk(item, level - 1)
        elif hasattr(obj, "__dict__") and not isinstance(obj, nn.Module) and not _library_object(obj):
            for item in vars(obj).values():
                walk(item, level - 1)

    walk(reward, depth)
    return found


def _library_object(obj) -> bool:
    return type(obj).__module__.split(".")[0] in ("torch", "transformers", "tokenizers", "numpy", "vaderSentiment")


class ShardedReference(nn.Module):
    """π_ref without LoRA, a frozen causal LM, as the root of its FSDP units: called like a causal
    LM (``reference(input_ids=, attention_mask=, position_ids=, logits_to_keep=)`` → the LM's
    :class:`~textrl.policies.logits.LMOutput`, logits ``(B, K, V)`` float32, the head in float32),
    so that one forward call gathers the weights outside the decoder layers (embeddings, norm,
    head) for the whole pass. Run it under ``torch.no_grad()``.

    Args:
        lm: the frozen transformers causal LM (:func:`textrl.policies.reference.frozen_reference`).
    """

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, logits_to_keep: int = 0, **inputs) -> LMOutput:
        """The LM's pass with the head in float32 (:func:`~textrl.policies.logits.lm_forward`)."""
        return lm_forward(self.lm, inputs, logits_to_keep)


@dataclass
class Gathered:
    """What :meth:`Sharding.rollout` gathered: ``seconds`` of wall time spent gathering."""

    seconds: float = 0.0


class Sharding:
    """The FSDP2 sharding of one RL run (see the module docstring): the device mesh over the
    processes and what is sharded on it.

    Use it as a context manager: a one-process group it made is destroyed at the exit.

    Args:
        device: the run's device (``cpu`` or this process's CUDA device).
        rollout_gather: ``trainer.rollout_gather`` (``whole`` or ``per_layer``).

    Attributes:
        rank, size: this process's index and the number of processes.
        gathered_for_rollout: the models :meth:`rollout` gathers whole (the reward models, and in
            ``whole`` mode the policy).
    """

    def __init__(self, device: torch.device, rollout_gather: str = "whole"):
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh

        self.device = torch.device(device)
        self.rollout_gather = rollout_gather
        # FSDP2 warns that an in-place op on a view the policy returns would skip its pre-backward
        # hook; textrl's losses build new tensors from the policy's outputs and never modify them
        warnings.filterwarnings(
            "ignore", message="FSDP2-wrapped module .* returned a view tensor", category=UserWarning
        )
        self.owns_group = not dist.is_initialized()
        if self.owns_group:  # one process, not launched: a group of one, in memory
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        self.mesh = init_device_mesh(self.device.type, (self.size,))
        self.reward_models: list[nn.Module] = []
        self.policy: nn.Module | None = None

    def __enter__(self) -> "Sharding":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Destroy the process group :class:`Sharding` made (none when a launcher made it)."""
        import torch.distributed as dist

        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
        self.owns_group = False

    def barrier(self) -> None:
        """Wait for every process."""
        if self.size > 1:
            torch.distributed.barrier()

    # ---- sharding the models ------------------------------------------------------------------

    def _shard(self, modules) -> None:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = MixedPrecisionPolicy(param_dtype=None, reduce_dtype=torch.float32)
        fully_shard(modules, mesh=self.mesh, mp_policy=policy, reshard_after_forward=True)

    def shard_trained(self, policy: nn.Module, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """Shard ``policy`` (a :class:`~textrl.policies.PolicyWithValueHead`) in place, its units as
        the module docstring lists them, and point ``optimizer`` (built over the unsharded
        parameters, no state yet) at the shards; returns ``optimizer``.

        Raises:
            TextRLError: the optimizer already has state (it must be sharded before its first step).
        """
        if optimizer.state:
            raise TextRLError("trainer.sharding: got an optimizer that has taken a step; expected a fresh one")
        names = {id(p): n for n, p in policy.named_parameters()}
        lm = policy.lm
        for layer in decoder_layers(lm):
            self._shard(layer)
        trunk = lm.base_model if getattr(lm, "base_model", lm) is not lm else None
        head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
        if trunk is not None and head is not None:
            self._shard([trunk, head])
        self._shard(policy)
        sharded = dict(policy.named_parameters())
        for group in optimizer.param_groups:
            group["params"] = [sharded[names[id(p)]] for p in group["params"]]
        self.policy = policy
        return optimizer

    def shard_reference(self, reference: nn.Module | None) -> nn.Module | None:
        """π_ref sharded: a frozen LM becomes a :class:`ShardedReference` over its units; a reference
        without weights of its own (LoRA's adapter-disabled policy) or ``None`` is returned as is."""
        if reference is None or not any(True for _ in reference.parameters()) or is_sharded(reference):
            return reference  # LoRA's reference holds no parameters: they are the policy's
        wrapped = ShardedReference(reference).eval()
        for layer in decoder_layers(reference):
            self._shard(layer)
        self._shard(wrapped)
        return wrapped

    def shard_reward(self, reward) -> list[nn.Module]:
        """Shard every transformers model ``reward`` holds (:func:`reward_modules`) in place: a unit
        per decoder layer and the root; returns them (gathered whole by :meth:`rollout`)."""
        models = [m for m in reward_modules(reward) if not is_sharded(m) and any(True for _ in m.parameters())]
        for model in models:
            for layer in decoder_layers(model):
                self._shard(layer)
            self._shard(model)
        self.reward_models.extend(models)
        return models

    # ---- rollouts ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def rollout(self, policy: nn.Module):
        """Gather the weights a rollout needs, as ``trainer.rollout_gather`` says (module
        docstring), for the body of the ``with``; free them at its end (also on an error).
        Yields a :class:`Gathered` with the time the gathering took."""
        from torch.distributed.fsdp import FSDPModule

        models = ([policy] if self.rollout_gather == "whole" else []) + self.reward_models
        units = [m for model in models for m in model.modules() if isinstance(m, FSDPModule)]
        start = time.perf_counter()
        try:
            for unit in units:
                unit.set_reshard_after_forward(False, recurse=False)
                unit.unshard()
            yield Gathered(time.perf_counter() - start)
        finally:
            for unit in units:
                unit.reshard()
                unit.set_reshard_after_forward(True, recurse=False)

    def lockstep(self, policy: nn.Module) -> "Lockstep | None":
        """The :class:`Lockstep` the collector decodes with under ``rollout_gather=per_layer``
        (``None`` under ``whole``: the processes decode independently)."""
        return Lockstep(policy, self.device) if self.rollout_gather == "per_layer" else None

    # ---- the update -------------------------------------------------------------------------------

    @staticmethod
    def clip_grad_norm(parameters, max_norm: float) -> torch.Tensor:
        """Clip the global gradient norm of sharded ``parameters`` to ``max_norm``; returns the norm
        before clipping, a float32 scalar tensor (the squares summed over every process's shards)."""
        from torch.distributed.tensor import DTensor

        params = [p for p in parameters if p.grad is not None]
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
        return norm

    # ---- checkpoints ----------------------------------------------------------------------------

    @staticmethod
    def _state_dict_options():
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(ignore_frozen_params=True)

    def save(self, directory: str, policy: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Write the policy's trainable shards and the optimizer's state into ``directory`` with
        ``torch.distributed.checkpoint`` (every process its own file, the main process the
        metadata). Call on every process."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_state, optim_state = get_state_dict(policy, optimizer, options=self._state_dict_options())
        dcp.save({"policy": model_state, "optimizer": optim_state}, checkpoint_id=directory)
        self.barrier()

    def load(self, directory: str, policy: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Load what :meth:`save` wrote into the sharded ``policy`` and ``optimizer``. Call on every
        process.

        Raises:
            TextRLError: the shards cannot be read or do not match the policy (another
                ``policy.model`` or ``policy.lora``).
        """
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        options = self._state_dict_options()
        model_state, optim_state = get_state_dict(policy, optimizer, options=options)
        state = {"policy": model_state, "optimizer": optim_state}
        try:
            dcp.load(state, checkpoint_id=directory)
        except Exception as e:  # noqa: BLE001 - DCP raises CheckpointException, RuntimeError, ...
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise TextRLError(
                f"trainer.resume: cannot load the sharded state in {directory!r} ({reason}); expected shards "
                f"written by this experiment (same policy.model and policy.lora)"
            ) from None
        set_state_dict(
            policy, optimizer, model_state_dict=state["policy"], optim_state_dict=state["optimizer"], options=options
        )

    def full_state_dict(self, policy: nn.Module) -> dict[str, torch.Tensor] | None:
        """The policy's whole state dict (every weight, unsharded, on the CPU), on the main process
        (``None`` on the others): gathered one tensor at a time, so no device holds the whole
        policy at once. Call on every process."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(policy, options=options)
        if self.rank != 0:
            return None
        aliases: dict[int, list[str]] = {}  # tied weights (embeddings and LM head): one tensor, as unsharded
        for name, param in policy.named_parameters(remove_duplicate=False):
            aliases.setdefault(id(param), []).append(name)
        for names in aliases.values():
            for name in names[1:]:
                if names[0] in state and name in state:
                    state[name] = state[names[0]]
        return state


class Lockstep:
    """Keeps every process's decoding in step under ``trainer.rollout_gather=per_layer``, where
    each forward pass of the policy all-gathers its units and so must be made by every process.

    The collector wraps its decode engines (:meth:`wrap`): after every token step
    (``advance``/``extend``, one forward pass each) the processes all-reduce "still decoding", and
    after its own loop a process calls :meth:`finish`, which runs the policy on a dummy token (the
    same all-gathers as a token step, the result unused, no random draw) until no process is
    decoding. So every process makes the same forward passes, and the token draws, hence the
    episodes, are the ones ``rollout_gather=whole`` gives.

    Args:
        policy: the sharded policy.
        device: where the flag lives (the collective's device: the CPU for gloo, CUDA for NCCL).
    """

    def __init__(self, policy: nn.Module, device: torch.device):
        self.policy, self.device = policy, torch.device(device)

    def any_decoding(self, decoding: bool) -> bool:
        """Whether any process is still decoding (one all-reduce of a flag)."""
        flag = torch.tensor([1 if decoding else 0], dtype=torch.int32, device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def wrap(self, engine) -> "LockstepEngine":
        """``engine`` whose token steps are followed by the all-reduce of :meth:`any_decoding`."""
        return LockstepEngine(engine, self)

    @torch.no_grad()
    def finish(self, tokens: torch.Tensor) -> None:
        """Run dummy forward passes of the policy on ``tokens`` (``(N, 1)`` long, the last draw)
        until no process is decoding; call once after the decoding loop."""
        mask = torch.ones_like(tokens)
        while True:
            self.policy(tokens, mask)
            if not self.any_decoding(False):
                return


class LockstepEngine:
    """A decode engine (:mod:`textrl.rollout.engines`) whose ``advance`` and ``extend`` are each
    followed by :meth:`Lockstep.any_decoding` ``(True)``; every other member is the engine's."""

    def __init__(self, engine, lockstep: Lockstep):
        self.engine, self.lockstep = engine, lockstep

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """The engine's ``start`` (every process prefills once)."""
        return self.engine.start(input_ids, attention_mask)

    def advance(self, tokens: torch.Tensor, active: torch.Tensor):
        """The engine's ``advance``, then the all-reduce."""
        draw = self.engine.advance(tokens, active)
        self.lockstep.any_decoding(True)
        return draw

    def extend(self, tokens: torch.Tensor, new_mask: torch.Tensor):
        """The engine's ``extend``, then the all-reduce."""
        draw = self.engine.extend(tokens, new_mask)
        self.lockstep.any_decoding(True)
        return draw

    def __getattr__(self, name: str):
        return getattr(self.engine, name)
