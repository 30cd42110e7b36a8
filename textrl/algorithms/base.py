"""The algorithm contract: an RL update rule applied to one rollout batch."""

from __future__ import annotations

from abc import ABC, abstractmethod

from textrl.rollout.buffer import RolloutBatch


class Algorithm(ABC):
    """An RL update rule (PPO, PPO-ptx, REINFORCE, a plugin's GRPO, ...).

    Lifecycle: a factory builds it from its hyperparameters (the keys under ``algo.`` in the
    config), the trainer calls :meth:`setup` once with the policy and the reference model, then
    :meth:`update` once per rollout batch.

    Attributes:
        uses_value_head: whether the rollout's values (the critic) matter to this algorithm.
        samples_per_prompt: episodes per prompt the algorithm needs in each batch (GRPO and
            leave-one-out baselines need k ≥ 2); ``None`` uses ``rollout.samples_per_prompt``.
    """

    uses_value_head: bool = True
    samples_per_prompt: int | None = None

    @abstractmethod
    def setup(self, policy, reference, reward_model=None) -> None:
        """Build optimizers and anything else that needs the models (called once). An
        implementation may leave out ``reward_model`` from its signature."""

    @abstractmethod
    def update(self, batch: RolloutBatch) -> dict[str, float]:
        """Improve ``policy`` on ``batch``; return scalar metrics named as in DESIGN.md
        (``objective/kl``, ``loss/policy``, ``kl/beta``...)."""

    def state_dict(self) -> dict:
        """Algorithm state for checkpoints (optimizer, KL controller...)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
