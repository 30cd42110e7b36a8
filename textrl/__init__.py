"""textrl: RLHF (SFT, reward models, PPO) as reinforcement learning on a Gymnasium environment.

Public API for plugin authors (a plugin imports only these names):

- policies: :class:`Policy` (the contract every stage, engine and algorithm relies on),
  :class:`PolicyLoader` (what a ``textrl_policies`` factory returns), :class:`PolicyOutput`, the
  built-in :class:`PolicyWithValueHead` (a causal LM with a value head) and its ``policy=hf`` loader
  :class:`HFPolicyLoader` (see :mod:`textrl.policies.contract`);
- multi-turn episodes: :class:`Interaction`, :class:`Reply`, :class:`EpisodeView`, :class:`Turn`,
  :func:`message_ids` (see :mod:`textrl.interactions.base`);
- contract: :data:`hookimpl`, :class:`RewardModel`, :class:`Algorithm` and its
  :class:`SetupContext`, :data:`EPISODE_METRICS`, :class:`RolloutBatch`, :class:`TextRLError`,
  :class:`NonFiniteError`;
- data: :class:`DataSources`, the generated datasets (``"<name>:<split>"``) textrl passes to a
  factory that declares a ``sources`` parameter;
- setting checks a plugin factory lists in its ``config_checks``: :func:`number`,
  :func:`integer`, :func:`one_of`, :class:`Check` (see :mod:`textrl.config`);
- KL: :class:`KLConfig`, :func:`make_kl_controller`, :func:`kl_penalty` (k1/k2/k3),
  :func:`kl_shaped_rewards`, :func:`episode_kl`;
- advantages and losses: :func:`masked_mean`, :func:`masked_var`, :func:`masked_whiten`,
  :func:`gae`, :func:`rewards_before` (turn-level credit), :func:`ppo_policy_loss`, :func:`value_loss`,
  :func:`check_finite`;
- branching rollouts: :class:`BranchConfig` (``algo.branch``), the batch's :class:`BranchEstimates`,
  :func:`state_values` and :func:`segment_advantages`;
- the policy's teacher-forced pass: :meth:`Algorithm.response_logprobs` (through the prepared
  model) and its :class:`ResponseLogprobs`, :func:`token_logprobs`, :func:`entropy_from_logits`;
  the optimizer: :func:`make_adamw`.
"""

import textrl.envs  # noqa: F401  (registers textrl/TokenGen-v0)
from textrl.algorithms.advantages import (
    gae,
    masked_mean,
    masked_var,
    masked_whiten,
    rewards_before,
    segment_advantages,
    state_values,
)
from textrl.algorithms.base import EPISODE_METRICS, Algorithm, ResponseLogprobs, SetupContext, check_finite, make_adamw
from textrl.algorithms.kl import KLConfig, episode_kl, kl_penalty, kl_shaped_rewards, make_kl_controller
from textrl.algorithms.losses import ppo_policy_loss, value_loss
from textrl.config import Check, integer, number, one_of
from textrl.config.schema import BranchConfig
from textrl.data_sources import DataSources
from textrl.errors import NonFiniteError, TextRLError
from textrl.hookspecs import hookimpl
from textrl.interactions.base import EpisodeView, Interaction, Reply, Turn, message_ids
from textrl.policies.contract import Policy, PolicyLoader, PolicyOutput
from textrl.policies.hf import HFPolicyLoader
from textrl.policies.policy import PolicyWithValueHead
from textrl.policies.sampling import entropy_from_logits, token_logprobs
from textrl.rewards.base import RewardModel
from textrl.rollout.branching import BranchEstimates
from textrl.rollout.buffer import RolloutBatch

__version__ = "0.1.0"
__all__ = [
    "EPISODE_METRICS",
    "Algorithm",
    "BranchConfig",
    "BranchEstimates",
    "Check",
    "DataSources",
    "EpisodeView",
    "HFPolicyLoader",
    "Interaction",
    "KLConfig",
    "NonFiniteError",
    "Policy",
    "PolicyLoader",
    "PolicyOutput",
    "PolicyWithValueHead",
    "Reply",
    "ResponseLogprobs",
    "RewardModel",
    "RolloutBatch",
    "Turn",
    "message_ids",
    "SetupContext",
    "TextRLError",
    "__version__",
    "check_finite",
    "entropy_from_logits",
    "episode_kl",
    "gae",
    "hookimpl",
    "integer",
    "kl_penalty",
    "kl_shaped_rewards",
    "make_adamw",
    "make_kl_controller",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "number",
    "one_of",
    "ppo_policy_loss",
    "rewards_before",
    "segment_advantages",
    "state_values",
    "token_logprobs",
    "value_loss",
]
