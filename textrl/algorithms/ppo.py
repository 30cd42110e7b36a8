"""PPO for RLHF (Ziegler et al. 2019; Stiennon et al. 2020; Ouyang et al. 2022).

One :meth:`PPO.update` on a rollout batch:
1. shape rewards with the per-token KL penalty to π_ref (β from the KL controller);
2. GAE(γ, λ) advantages and returns from the rollout's values; whiten the advantages;
3. ``epochs`` passes of shuffled minibatches: teacher-forced forward of the policy, clipped
   surrogate + ``vf_coef`` × clipped value loss − ``ent_coef`` × entropy, gradient clipping;
4. update β with the batch's KL (adaptive controller only).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from textrl.algorithms.advantages import gae, masked_mean, masked_whiten
from textrl.algorithms.base import Algorithm, make_adamw
from textrl.algorithms.kl import (AdaptiveKLController, FixedKLController, check_estimator, episode_kl,
                                  kl_shaped_rewards)
from textrl.algorithms.losses import explained_variance, ppo_policy_loss, value_loss
from textrl.errors import NonFiniteError, TextRLError
from textrl.policies.hf_causal_lm import response_outputs
from textrl.policies.sampling import entropy_from_logits, token_logprobs, warp_logits
from textrl.rollout.buffer import RolloutBatch


@dataclass
class KLConfig:
    """``algo.kl.*``, the KL penalty to π_ref: ``init`` β ≥ 0; ``adaptive`` β (Ziegler et al. 2019)
    steering ``objective/kl`` toward ``target`` (nats per episode, > 0) with gain 1/``horizon``
    (``horizon`` in updates, > 0; see :class:`~textrl.algorithms.kl.AdaptiveKLController`), or a
    fixed β with ``adaptive=false``; ``estimator`` of the per-token penalty: ``k1`` (log π − log π_ref,
    InstructGPT), ``k2`` or ``k3`` (Schulman 2020; see :func:`~textrl.algorithms.kl.kl_penalty`)."""

    init: float = 0.05
    adaptive: bool = True
    target: float = 6.0
    horizon: float = 5.0
    estimator: str = "k1"


def make_kl_controller(kl: KLConfig | dict) -> FixedKLController:
    """A :class:`FixedKLController` or :class:`AdaptiveKLController` from ``kl``.

    Raises:
        TextRLError: a value out of range (``init`` < 0, ``target`` or ``horizon`` ≤ 0, an unknown
            ``estimator``), named by its ``algo.kl.*`` key.
    """
    kl = KLConfig(**kl) if isinstance(kl, dict) else kl
    check_estimator(kl.estimator)
    if kl.adaptive:
        return AdaptiveKLController(kl.init, kl.target, kl.horizon)
    return FixedKLController(kl.init)


class PPO(Algorithm):
    """Proximal policy optimisation with a KL-penalised reward, a value head and GAE.

    Args:
        lr: AdamW learning rate.
        kl: :class:`KLConfig` (β init, adaptive, target, horizon, estimator).
        gamma: discount γ.
        lam: GAE λ.
        clip_range: policy ratio clip ε.
        clip_range_value: value clip ε_v (``None`` = unclipped).
        vf_coef: value-loss weight.
        ent_coef: entropy-bonus weight.
        epochs: passes over each rollout batch.
        minibatch_size: episodes per gradient step; must divide ``rollout.batch_size``.
        max_grad_norm: gradient-norm clip (``None`` = off).
        whiten_advantages: normalise advantages over the batch.
        weight_decay: AdamW weight decay.
        value_init: ``zeros`` (value head starts at 0) or ``reward_model``: copy the (normalised)
            score head of a ``reward=learned`` model into the value head (InstructGPT initialises
            the value function from the RM; here the head, since the trunk is the policy's).

    Minibatch shuffling draws from a generator seeded from torch's global seed (``seed``).

    Raises:
        TextRLError: a non-positive lr/epochs/minibatch size, or a minibatch size that does not
            divide the batch; :class:`~textrl.errors.NonFiniteError` for a NaN/inf advantage,
            loss or gradient norm (raised before the optimizer step that would use it).
    """

    def __init__(self, lr: float = 1e-5, kl: KLConfig = KLConfig(), gamma: float = 1.0, lam: float = 0.95,
                 clip_range: float = 0.2, clip_range_value: float | None = 0.2, vf_coef: float = 0.1,
                 ent_coef: float = 0.0, epochs: int = 4, minibatch_size: int = 8, max_grad_norm: float | None = 1.0,
                 whiten_advantages: bool = True, weight_decay: float = 0.0, value_init: str = "zeros"):
        for name, value in (("algo.lr", lr), ("algo.epochs", epochs), ("algo.minibatch_size", minibatch_size),
                            ("algo.clip_range", clip_range)):
            if not value > 0:
                raise TextRLError(f"{name}: got {value}; expected a positive number")
        self.lr, self.gamma, self.lam = lr, gamma, lam
        self.clip_range, self.clip_range_value = clip_range, clip_range_value
        self.vf_coef, self.ent_coef, self.epochs = vf_coef, ent_coef, epochs
        self.minibatch_size, self.max_grad_norm = minibatch_size, max_grad_norm
        self.whiten_advantages, self.weight_decay = whiten_advantages, weight_decay
        if value_init not in ("zeros", "reward_model"):
            raise TextRLError(f"algo.value_init: got {value_init!r}; expected zeros or reward_model")
        self.value_init = value_init
        self.kl_controller = make_kl_controller(kl)
        self.kl_estimator = (KLConfig(**kl) if isinstance(kl, dict) else kl).estimator
        self.generator = torch.Generator().manual_seed(torch.initial_seed())
        self.policy = self.model = self.optimizer = None

    @property
    def kl_coef(self) -> float:
        """Current β."""
        return self.kl_controller.value

    def setup(self, policy, reference, reward_model=None, accelerator=None) -> None:
        """Create the AdamW optimizer over the policy (LM + value head); with
        ``value_init=reward_model`` first copy ``reward_model.score_head()`` into the value head.
        With an ``accelerator`` (several processes) the policy and optimizer are prepared by it.

        Raises:
            TextRLError: ``value_init=reward_model`` without a learned reward model of the
                policy's hidden size.
        """
        self.policy = policy
        if self.value_init == "reward_model":
            head = getattr(reward_model, "score_head", None)
            if head is None:
                raise TextRLError("algo.value_init=reward_model needs reward=learned; got a reward model without "
                                  "a score head")
            weight, bias = head()
            target = policy.value_head.summary
            if weight.shape != target.weight.shape:
                raise TextRLError(f"algo.value_init=reward_model: reward model hidden size {weight.shape[1]} != "
                                  f"policy hidden size {target.weight.shape[1]}; expected an RM initialised "
                                  f"from the policy (InstructGPT)")
            with torch.no_grad():
                target.weight.copy_(weight)
                target.bias.copy_(bias)
        params = [p for p in policy.parameters() if p.requires_grad]
        optimizer = make_adamw(params, lr=self.lr, weight_decay=self.weight_decay)
        self.model, self.optimizer = self.distribute(policy, optimizer, accelerator)

    def advantages(self, batch: RolloutBatch):
        """KL-shaped rewards → GAE. Returns ``(advantages, returns, penalty)``, each ``(B, T)``; the
        penalty (``algo.kl.estimator``) compares the untruncated ``kl_logprobs`` with ``ref_logprobs``."""
        mask = batch.response_mask
        rewards, kl = kl_shaped_rewards(batch.scores, batch.kl_logprobs, batch.ref_logprobs, mask, self.kl_coef,
                                        self.kl_estimator)
        advantages, returns = gae(rewards, batch.values, mask, self.gamma, self.lam)
        if self.whiten_advantages:
            advantages = masked_whiten(advantages, mask)
        return advantages, returns, kl

    def loss(self, batch: RolloutBatch, advantages: torch.Tensor, returns: torch.Tensor) -> dict[str, torch.Tensor]:
        """PPO loss terms on a minibatch (one teacher-forced forward pass of the policy)."""
        mask = batch.response_mask
        logits, values = response_outputs(self.model, batch.input_ids, batch.attention_mask, batch.response_length)
        logits = logits[..., :batch.vocab_size]
        logprobs = token_logprobs(logits, batch.response_ids, batch.sampling)
        pg = ppo_policy_loss(logprobs, batch.logprobs, advantages, mask, self.clip_range)
        vf = value_loss(values, batch.values, returns, mask, self.clip_range_value)
        entropy = masked_mean(entropy_from_logits(warp_logits(logits.detach() if self.ent_coef == 0 else logits,
                                                              batch.sampling)), mask)
        total = pg.loss + self.vf_coef * vf.loss - self.ent_coef * entropy
        return {"loss/total": total, "loss/policy": pg.loss, "loss/value": vf.loss, "policy/clipfrac": pg.clipfrac,
                "policy/approxkl": pg.approxkl, "policy/entropy": entropy.detach(), "val/clipfrac": vf.clipfrac,
                "val/values": values.detach()}

    def auxiliary_losses(self) -> dict[str, tuple[float, torch.Tensor]]:
        """Extra ``{name: (coefficient, loss)}`` terms added to every minibatch's loss (PPO-ptx's
        pretraining loss); none for plain PPO."""
        return {}

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        """One PPO update (see the module docstring); returns mean metrics over minibatches."""
        if batch.batch_size % self.minibatch_size:
            raise TextRLError(f"algo.minibatch_size: got {self.minibatch_size}; expected a divisor of "
                              f"rollout.batch_size={batch.batch_size}")
        beta = self.kl_coef
        with torch.no_grad():
            advantages, returns, kl = self.advantages(batch)
        check_finite(advantages, "advantages")
        sums: dict[str, float] = {}
        steps = 0
        for _ in range(self.epochs):
            order = torch.randperm(batch.batch_size, generator=self.generator).to(batch.input_ids.device)
            for start in range(0, batch.batch_size, self.minibatch_size):
                idx = order[start:start + self.minibatch_size]
                terms = self.loss(batch.select(idx), advantages[idx], returns[idx])
                terms.pop("val/values")
                for name, (coef, value) in self.auxiliary_losses().items():
                    terms[name] = value
                    terms["loss/total"] = terms["loss/total"] + coef * value
                self.optimizer.zero_grad(set_to_none=True)
                check_finite(terms["loss/total"], "loss/total")
                self.backward(terms["loss/total"])
                if self.max_grad_norm is not None:
                    norm = self.clip_grad_norm(self.model.parameters(), self.max_grad_norm)
                    if norm is not None:  # DeepSpeed clips inside its engine and returns None
                        check_finite(norm, "gradient norm")  # before the step: the weights stay good
                        terms["policy/grad_norm"] = norm
                self.optimizer.step()
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                steps += 1
        mask = batch.response_mask
        kl_k1 = episode_kl(batch.kl_logprobs, batch.ref_logprobs, mask)  # objective/kl: the k1 sum, whatever the penalty
        # β must agree across processes: it follows the KL of the whole (all-process) batch
        self.kl_controller.update(self.mean_across_processes(float(kl_k1.mean())))
        metrics = {k: v / steps for k, v in sums.items()}
        metrics.update({
            "objective/kl": float(kl_k1.mean()),
            "objective/score": float(batch.scores.mean()),
            "objective/rlhf_reward": float((batch.scores - beta * kl.sum(1)).mean()),
            "objective/entropy": float(-torch.where(mask.bool(), batch.logprobs, 0.0).sum(1).mean()),
            "val/explained_variance": float(explained_variance(batch.values, returns, mask)),
            "val/mean": float(masked_mean(batch.values, mask)),
            "kl/beta": beta,
            "episode/length": float(mask.sum(1).mean()),
        })
        return metrics

    def state_dict(self) -> dict:
        """Optimizer, KL controller and shuffling RNG state."""
        return {"optimizer": self.optimizer.state_dict() if self.optimizer else None,
                "kl_controller": self.kl_controller.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (call after :meth:`setup`)."""
        if state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self.kl_controller.load_state_dict(state["kl_controller"])
        self.generator.set_state(state["generator"])


def check_finite(value: torch.Tensor, name: str) -> None:
    """Raise :class:`~textrl.errors.NonFiniteError` naming ``name`` if ``value`` has a NaN or inf."""
    if not torch.isfinite(value).all():
        shown = value.item() if value.numel() == 1 else "non-finite"
        raise NonFiniteError(name, f"{name} is {shown}; expected a finite value (lower algo.lr or check the reward model)")
