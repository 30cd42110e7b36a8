"""The algorithm contract and the one optimisation loop every RL algorithm shares.

The contract, in one place (the trainer, ``textrl/stages/rl.py``, is its only caller):

1. ``factory(**algo_params)`` builds the algorithm; every key under ``algo.`` except ``name`` is
   a keyword argument (the config schema is generated from the factory's signature).
2. :meth:`Algorithm.setup` ``(policy, reference, context)`` is called once: ``policy`` is a
   :class:`~textrl.policies.PolicyWithValueHead`, ``reference`` the frozen π_ref LM (or ``None``)
   and ``context`` a :class:`SetupContext` (reward model, tokenizer, accelerator).
3. :meth:`Algorithm.update` ``(batch)`` is called once per :class:`~textrl.rollout.buffer.RolloutBatch`
   and returns ``{name: float}`` metrics (checked by :func:`check_metrics`): every algorithm
   reports the :data:`EPISODE_METRICS`, plus the mean over optimizer steps of its loss terms
   (``loss/total`` always, ``loss/policy``... as the algorithm names them) and
   ``policy/grad_norm`` when gradients are clipped.
4. :meth:`Algorithm.state_dict` / :meth:`Algorithm.load_state_dict` for checkpoints.

:meth:`Algorithm.update` runs the loop (Schulman et al. 2017's "K epochs of minibatch SGD"):
prepare the batch once under ``no_grad`` (advantages, returns, baselines: :meth:`prepare`), then
``epochs`` passes over minibatches of ``minibatch_size`` episodes (shuffled unless ``shuffle``
is off); each minibatch is split into chunks of ``micro_batch_size`` episodes whose losses
(:meth:`loss`) are back-propagated one after another (gradient accumulation: the same gradient
as the whole minibatch up to float rounding, for a fraction of its activation memory), then
the gradient norm is clipped and checked, and the optimizer takes one step. Metrics stay on the
device (float64 sums) and are read back once per update. A subclass supplies only what differs:
:meth:`prepare`, :meth:`loss` (whose forward pass is :meth:`Algorithm.response_logprobs`) and, if it has any, per-step terms (:meth:`step_losses`) and
per-batch metrics (:meth:`batch_metrics`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch

from textrl.algorithms.kl import episode_kl, kl_penalty, make_kl_controller
from textrl.config.schema import KLConfig, LoopConfig, field_checks
from textrl.distributed import mean_across_processes, single_process
from textrl.errors import NonFiniteError, TextRLError
from textrl.metrics import EPISODE_METRIC_NAMES, describe
from textrl.policies.policy import response_outputs
from textrl.policies.sampling import token_logprobs
from textrl.precision import autocast
from textrl.rollout.buffer import RolloutBatch

EPISODE_METRICS = {name: describe(name) for name in EPISODE_METRIC_NAMES}
"""Metrics every :meth:`Algorithm.update` returns, with their meaning and unit (from
:data:`textrl.metrics.METRICS`)."""

LOOP = LoopConfig()
"""The loop hyperparameters' defaults (:class:`~textrl.config.schema.LoopConfig`)."""


def make_adamw(params, lr: float, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter 2019) over ``params``, the fused kernel where torch has one.

    The fused implementation updates every tensor in one kernel per step instead of a dozen
    elementwise ops per parameter, each a pass over the parameter's memory. It needs floating-point
    parameters on one CPU or CUDA device; otherwise the default implementation is used.
    """
    params = list(params)
    devices = {p.device.type for p in params}
    fused = len(devices) == 1 and devices <= {"cpu", "cuda"} and all(p.is_floating_point() for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def check_finite(value: torch.Tensor, name: str) -> None:
    """Raise :class:`~textrl.errors.NonFiniteError` naming ``name`` if ``value`` (any shape,
    floating point) has a NaN or inf."""
    if not torch.isfinite(value).all():
        shown = value.item() if value.numel() == 1 else "non-finite"
        raise NonFiniteError(
            name, f"{name} is {shown}; expected a finite value (lower algo.lr or check the reward model)"
        )


def check_metrics(metrics: dict, algorithm: str = "algorithm") -> dict[str, float]:
    """Check what :meth:`Algorithm.update` returned against the contract; returns ``metrics``.

    Raises:
        TextRLError: not a dict of ``str`` → finite ``float``, or one of :data:`EPISODE_METRICS`
            missing (naming the algorithm and the key).
    """
    if not isinstance(metrics, dict):
        raise TextRLError(
            f"algo={algorithm}: update() returned {type(metrics).__name__}; expected a dict of metric name -> float"
        )
    for key, value in metrics.items():
        if not isinstance(key, str) or not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TextRLError(f"algo={algorithm}: update() metric {key!r}: got {value!r}; expected a float")
    missing = [k for k in EPISODE_METRICS if k not in metrics]
    if missing:
        raise TextRLError(
            f"algo={algorithm}: update() metrics lack {missing[0]!r}; expected every one of {list(EPISODE_METRICS)}"
        )
    return metrics


@dataclass(frozen=True)
class SetupContext:
    """What the trainer hands :meth:`Algorithm.setup` besides the two models.

    Attributes:
        reward_model: the run's :class:`~textrl.RewardModel` (``None`` in unit tests); PPO with
            ``value_init=reward_model`` reads its ``score_head()``.
        tokenizer: the policy's tokenizer (PPO-ptx tokenises its pretraining texts with it).
        accelerator: the run's ``accelerate.Accelerator`` with several processes, else ``None``.
        precision: ``trainer.precision`` (``fp32`` | ``bf16``): each loss forward pass runs in
            its own autocast region (:mod:`textrl.precision`).
        sharding: the run's :class:`textrl.sharding.Sharding` under ``trainer.sharding=fsdp``
            (:meth:`Algorithm.distribute` shards the policy and points the optimizer at the
            shards), else ``None``.
    """

    reward_model: Any = None
    tokenizer: Any = None
    accelerator: Any = None
    precision: str = "fp32"
    sharding: Any = None


class ResponseLogprobs:
    """One teacher-forced forward pass of the policy over a batch's responses (what
    :meth:`Algorithm.response_logprobs` returns), with gradients.

    Attributes:
        logits: ``(B, T, V)`` logits predicting response token t, cut to the action space
            (``batch.vocab_size``), the policy's dtype.
        values: ``(B, T)`` V(s_t) from the value head.
        sampled: ``(B, T)`` float32 log π(a_t|s_t) under the rollout's sampling distribution
            (temperature, top-k, top-p: ``batch.sampling``), for the importance ratio.
    """

    def __init__(self, logits: torch.Tensor, values: torch.Tensor, batch: RolloutBatch):
        self.logits, self.values = logits, values
        self._tokens, self._sampling = batch.response_ids, batch.sampling
        self.sampled = token_logprobs(logits, batch.response_ids, batch.sampling)
        self._untruncated: torch.Tensor | None = None

    @property
    def untruncated(self) -> torch.Tensor:
        """``(B, T)`` float32 log π(a_t|s_t) under the temperature-scaled, *untruncated*
        distribution (for a KL term; computed on first use from the same logits, and the same
        tensor as :attr:`sampled` when nothing truncates)."""
        if not self._sampling.truncates:
            return self.sampled
        if self._untruncated is None:
            self._untruncated = token_logprobs(self.logits, self._tokens, self._sampling.untruncated())
        return self._untruncated


class Algorithm(ABC):
    """An RL update rule (PPO, PPO-ptx, REINFORCE, a plugin's GRPO, ...) on the shared loop.

    A subclass calls ``super().__init__(...)`` with the loop's hyperparameters and implements
    :meth:`prepare` and :meth:`loss`; see the module docstring for the contract.

    Args (keyword-only; the loop's hyperparameters, defaults from
    :class:`~textrl.config.schema.LoopConfig`, the one place they are defined; a subclass declares
    only its own parameters and passes ``**loop`` on, restating one of these only where its
    default differs, as GRPO does for ``kl``):
        lr: AdamW learning rate (> 0).
        kl: β settings (a :class:`~textrl.config.schema.KLConfig` or its dict): the KL
            coefficient of the penalty to π_ref, its controller and the per-token estimator.
        epochs: passes over each rollout batch (≥ 1).
        minibatch_size: episodes per optimizer step (≥ 1; must divide the batch).
        micro_batch_size: episodes per forward/backward pass (gradient accumulation inside a
            minibatch); ``None`` = the whole minibatch in one pass.
        max_grad_norm: clip the global gradient norm to this (``None`` = no clipping).
        weight_decay: AdamW weight decay (≥ 0).

    Attributes:
        uses_value_head: whether the algorithm trains the value head (the critic); when False
            :meth:`setup` freezes it and the optimizer leaves it out.
        shuffle: draw each epoch's minibatches in a shuffled order (seeded from torch's
            global seed at construction); off = batch order.
        loss_average: ``"tokens"`` when :meth:`loss` averages over the masked-in tokens of the
            episodes it is given (PPO, GRPO), ``"episodes"`` when over episodes (REINFORCE):
            how micro-batch losses are weighted so their sum is the minibatch's loss.
        samples_per_prompt: episodes per prompt the algorithm needs in each batch (GRPO and
            leave-one-out baselines need k ≥ 2); ``None`` uses ``rollout.samples_per_prompt``.
        branching: a :class:`~textrl.config.schema.BranchConfig` when the algorithm needs Monte
            Carlo estimates from branched continuations at chosen states (the batch's
            ``branches``: VinePPO, same-state baselines); ``None`` for a rollout without branches.
        accelerator: the run's ``accelerate.Accelerator``, or ``None`` in one process.
        sharding: the run's :class:`textrl.sharding.Sharding`, or ``None`` (unsharded).

    Raises:
        TextRLError: a setting outside its range (the schema's check, naming the ``algo.`` key).
    """

    uses_value_head: bool = True
    shuffle: bool = True
    loss_average: str = "tokens"
    samples_per_prompt: int | None = None
    branching = None
    micro_batch_size: int | None = None
    accelerator = None
    sharding = None
    precision: str = "fp32"

    def __init__(
        self,
        *,
        lr: float = LOOP.lr,
        kl: KLConfig | dict = LOOP.kl,
        epochs: int = LOOP.epochs,
        minibatch_size: int = LOOP.minibatch_size,
        micro_batch_size: int | None = LOOP.micro_batch_size,
        max_grad_norm: float | None = LOOP.max_grad_norm,
        weight_decay: float = LOOP.weight_decay,
    ):
        settings = {
            "lr": lr,
            "epochs": epochs,
            "minibatch_size": minibatch_size,
            "micro_batch_size": micro_batch_size,
            "max_grad_norm": max_grad_norm,
            "weight_decay": weight_decay,
        }
        for key, check in field_checks(LoopConfig):
            if key in settings:  # kl.* are checked by the β controller (make_kl_controller)
                check(f"algo.{key}", settings[key])
        self.lr, self.epochs, self.weight_decay = lr, epochs, weight_decay
        self.minibatch_size, self.micro_batch_size, self.max_grad_norm = minibatch_size, micro_batch_size, max_grad_norm
        self.kl_controller = make_kl_controller(kl)
        self.kl_estimator = (KLConfig(**kl) if isinstance(kl, dict) else kl).estimator
        self.generator = torch.Generator().manual_seed(torch.initial_seed()) if self.shuffle else None
        self.policy = self.model = self.optimizer = None

    @property
    def kl_coef(self) -> float:
        """Current KL coefficient β."""
        return self.kl_controller.value

    # ---- what a subclass supplies -------------------------------------------------------------

    def setup(self, policy, reference, context: SetupContext | None = None) -> None:
        """Build the AdamW optimizer over the policy's trainable parameters (called once).

        Without :attr:`uses_value_head` the value head is frozen first. With several processes
        (``context.accelerator``) the policy and optimizer are prepared by the accelerator, or
        with ``context.sharding`` sharded (:meth:`distribute`); call ``self.model`` for forward
        passes that need gradients. A subclass that needs more (the reward model, the tokenizer)
        extends this.

        Args:
            policy: the :class:`~textrl.policies.PolicyWithValueHead` to train.
            reference: the frozen π_ref LM, or ``None``.
            context: a :class:`SetupContext` (``None`` = an empty one).
        """
        context = context or SetupContext()
        self.policy, self.precision = policy, context.precision
        if not self.uses_value_head:
            policy.value_head.requires_grad_(False)
        params = [p for p in policy.parameters() if p.requires_grad]
        optimizer = make_adamw(params, lr=self.lr, weight_decay=self.weight_decay)
        self.model, self.optimizer = self.distribute(policy, optimizer, context.accelerator, context.sharding)

    @abstractmethod
    def prepare(self, batch: RolloutBatch) -> dict[str, torch.Tensor]:
        """Everything the loss needs from the whole batch, computed once under ``no_grad``
        (advantages, returns, baselines...): ``{name: tensor}`` whose first dimension is the
        episode (``(B,)`` or ``(B, T)``), sliced with the minibatch. Each is checked finite
        (named by its key) before the first step."""

    @abstractmethod
    def loss(self, batch: RolloutBatch, prepared: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Named scalar loss terms on a minibatch (or micro-batch) ``batch`` with its rows of
        ``prepared``; ``"loss/total"`` (with grad) is minimised, the others are logged. Average
        as :attr:`loss_average` says."""

    def step_losses(self) -> dict[str, tuple[float, torch.Tensor]]:
        """Extra ``{name: (coefficient, loss)}`` terms added once per optimizer step (PPO-ptx's
        pretraining loss), not split over micro-batches; none by default."""
        return {}

    def batch_metrics(self, batch: RolloutBatch, prepared: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Extra per-batch metrics (scalar tensors or floats) beside :data:`EPISODE_METRICS`."""
        return {}

    def step_sizes(self, batch_size: int) -> tuple[int, int]:
        """``(episodes per optimizer step, episodes per forward/backward pass)``."""
        step = self.minibatch_size
        return step, min(self.micro_batch_size or step, step)

    def response_logprobs(self, batch: RolloutBatch) -> ResponseLogprobs:
        """The policy's teacher-forced log-probs (and logits, values) of ``batch``'s responses, in
        one forward pass through the prepared model (``self.model``: with several processes the
        DDP wrapper, whose call is what all-reduces the gradients; a pass through ``self.policy``
        would silently skip that). Call this in :meth:`loss`.

        Args:
            batch: a minibatch (or micro-batch) of the rollout.

        Returns:
            a :class:`ResponseLogprobs` (``.sampled``, ``.untruncated``, ``.logits``, ``.values``).
        """
        logits, values = response_outputs(self.model, batch.input_ids, batch.attention_mask, batch.response_length)
        return ResponseLogprobs(logits[..., : batch.vocab_size], values, batch)

    # ---- the loop -----------------------------------------------------------------------------

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        """Improve the policy on ``batch`` (see the module docstring); returns its metrics.

        Raises:
            TextRLError: ``minibatch_size`` does not divide the batch.
            NonFiniteError: a prepared tensor, a loss or the gradient norm is NaN/inf (raised
                before the optimizer step that would use it).
        """
        step, chunk = self.step_sizes(batch.batch_size)
        if batch.batch_size % step:
            raise TextRLError(
                f"algo.minibatch_size: got {step}; expected a divisor of rollout.batch_size={batch.batch_size}"
            )
        beta = self.kl_coef
        with torch.no_grad():
            prepared = self.prepare(batch)
        for name, value in prepared.items():
            check_finite(value, name)
        sums: dict[str, torch.Tensor] = {}
        steps = 0
        for _ in range(self.epochs):
            order = self.minibatch_order(batch.batch_size, batch.input_ids.device)
            for start in range(0, batch.batch_size, step):
                terms = self.minibatch_step(batch, prepared, order[start : start + step], chunk)
                for k, v in terms.items():
                    sums[k] = sums[k] + v if k in sums else v
                steps += 1
        mask = batch.action_mask
        penalty = kl_penalty(batch.untruncated_logprobs, batch.ref_logprobs, mask, self.kl_estimator).sum(1)
        metrics = {k: v / steps for k, v in sums.items()}
        metrics.update(
            {
                # k1, whatever the penalty's estimator
                "objective/kl": episode_kl(batch.untruncated_logprobs, batch.ref_logprobs, mask).mean(),
                "objective/score": batch.scores.mean(),
                "objective/rlhf_reward": (batch.scores - beta * penalty).mean(),
                "episode/length": mask.sum(1).mean(),
            }
        )
        metrics.update(self.batch_metrics(batch, prepared))
        metrics = read_back(metrics)
        metrics["kl/beta"] = beta
        # β must agree across processes: it follows the KL of the whole (all-process) batch
        self.kl_controller.update(self.mean_across_processes(metrics["objective/kl"]))
        return metrics

    def minibatch_order(self, n: int, device) -> torch.Tensor:
        """``LongTensor[n]``: the order episodes are drawn into minibatches this epoch."""
        if self.shuffle:
            return torch.randperm(n, generator=self.generator).to(device)
        return torch.arange(n, device=device)

    def minibatch_step(
        self, batch: RolloutBatch, prepared: dict[str, torch.Tensor], index: torch.Tensor, chunk: int
    ) -> dict[str, torch.Tensor]:
        """One optimizer step on episodes ``index``, back-propagated in chunks of ``chunk``
        episodes; returns the step's terms as float64 scalars on the device."""
        self.optimizer.zero_grad(set_to_none=True)
        pieces = [index[i : i + chunk] for i in range(0, len(index), chunk)]
        tokens = batch.action_mask[index].sum() if len(pieces) > 1 and self.loss_average == "tokens" else None
        terms: dict[str, torch.Tensor] = {}
        for i, piece in enumerate(pieces):
            part = batch.select(piece)
            with self.forward_context():  # closed before backward() and the step: no stale bf16 weights
                loss = self.loss(part, {k: v[piece] for k, v in prepared.items()})
            if len(pieces) > 1:  # this chunk's share of the minibatch mean
                share = (part.action_mask.sum(), tokens) if tokens is not None else (len(piece), len(index))
                loss = {k: v * share[0] / share[1] for k, v in loss.items()}
            if i == 0:
                with self.forward_context():
                    extra = self.step_losses()
                for name, (coef, value) in extra.items():
                    loss[name] = value
                    loss["loss/total"] = loss["loss/total"] + coef * value
            check_finite(loss["loss/total"], "loss/total")
            self.backward(loss["loss/total"])
            for k, v in loss.items():
                v = widen(v)
                terms[k] = terms[k] + v if k in terms else v
        if self.max_grad_norm is not None:
            norm = self.clip_grad_norm(self.model.parameters(), self.max_grad_norm)
            check_finite(norm, "gradient norm")  # before the step: the weights stay good
            terms["policy/grad_norm"] = widen(norm)
        self.optimizer.step()
        return terms

    def forward_context(self):
        """The autocast region of one loss forward pass under ``trainer.precision``
        (:func:`textrl.precision.autocast`; a disabled region in fp32). The loop opens one per
        micro-batch and closes it before ``backward()`` and the optimizer step, so autocast's
        cache of bf16 weights never outlives a step."""
        device = self.policy.device if self.policy is not None else "cpu"
        return autocast(device, self.precision)

    # ---- multi-process helpers ----------------------------------------------------------------

    def distribute(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, accelerator=None, sharding=None):
        """``(model, optimizer)`` for the run's processes: with ``sharding`` (a
        :class:`textrl.sharding.Sharding`) the model sharded in place and the optimizer pointed at
        its shards (:meth:`~textrl.sharding.Sharding.shard_trained`; FSDP2 hooks on the module
        gather the weights and reduce-scatter the gradients); else wrapped by
        ``accelerator.prepare`` (DDP) when the run has several processes; else as they are. Call
        the returned model for forward passes whose gradients must be reduced."""
        self.accelerator, self.sharding = accelerator, sharding
        if sharding is not None:
            return model, sharding.shard_trained(model, optimizer)
        if single_process(accelerator):
            return model, optimizer
        return accelerator.prepare(model, optimizer)

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, through the accelerator when there is one (unsharded)."""
        if self.accelerator is None or self.sharding is not None:
            loss.backward()
        else:
            self.accelerator.backward(loss)

    def clip_grad_norm(self, parameters, max_norm: float) -> torch.Tensor:
        """Clip the global gradient norm to ``max_norm``; returns the norm before clipping (a
        scalar tensor; sharded: over every process's shards)."""
        if self.sharding is not None:
            return self.sharding.clip_grad_norm(parameters, max_norm)
        if self.accelerator is None:
            return torch.nn.utils.clip_grad_norm_(parameters, max_norm)
        return self.accelerator.clip_grad_norm_(parameters, max_norm)

    def mean_across_processes(self, value: float) -> float:
        """``value`` averaged over the processes (e.g. the KL that drives β, which every process
        must agree on); ``value`` itself in one process."""
        return mean_across_processes({"v": value}, self.accelerator)["v"]

    # ---- checkpoints --------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Optimizer, KL controller and (with :attr:`shuffle`) the shuffling RNG state. A sharded
        run's optimizer state is not here (``None``): every process writes its shards
        (:meth:`textrl.sharding.Sharding.save`)."""
        state = {
            "optimizer": self.optimizer.state_dict() if self.optimizer and self.sharding is None else None,
            "kl_controller": self.kl_controller.state_dict(),
        }
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (call after :meth:`setup`)."""
        if state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self.kl_controller.load_state_dict(state["kl_controller"])
        if self.generator is not None:
            self.generator.set_state(state["generator"])


def widen(value: torch.Tensor) -> torch.Tensor:
    """``value`` detached as float64 (float32 on MPS, which has no float64): metric sums on the
    device add up exactly as Python floats would."""
    return value.detach().to(torch.float32 if value.device.type == "mps" else torch.float64)


def read_back(values: dict[str, torch.Tensor | float]) -> dict[str, float]:
    """``{name: float}`` from scalar tensors (any device and dtype) and floats, with one
    device-to-host copy for all the tensors. float32 values widen to float64 exactly."""
    names = [k for k, v in values.items() if isinstance(v, torch.Tensor)]
    out = {k: float(v) for k, v in values.items() if not isinstance(v, torch.Tensor)}
    if names:
        device = values[names[0]].device
        dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        stacked = torch.stack([values[k].detach().to(device=device, dtype=dtype).reshape(()) for k in names])
        out.update(zip(names, stacked.tolist()))
    return {k: out[k] for k in values}
