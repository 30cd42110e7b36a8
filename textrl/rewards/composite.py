"""Composite reward: a weighted sum of named reward models, each logged on its own.

    r(x, y) = Σ_i w_i · r_i(x, y)

GPT-4's RLHF combined its learned reward model with rule-based reward models (RBRMs) this way
(OpenAI, GPT-4 System Card, 2023). Each component is any reward model a plugin provides, built
from the same config node ``reward=<name>`` would take, plus a ``weight``::

    reward=composite reward.components='{rm: {name: learned, model: runs/rm, weight: 1.0},
                                         rules: {name: rbrm, weight: 0.5}}'

The unweighted component scores are logged as ``reward/<label>`` and written to the samples
file; the weighted sum is the score the policy is trained on.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch

from textrl.config import accepted_parameters, build_plugin
from textrl.errors import TextRLError
from textrl.rewards.base import RewardOutput, score_responses

DEFAULT_COMPONENTS = {
    "sentiment": {"name": "sentiment", "weight": 1.0},
    "rbrm": {"name": "rbrm", "weight": 0.5},
}


class CompositeReward:
    """Σ_i w_i · r_i over already-built reward models.

    Args:
        components: ``{label: (weight, reward_model)}``; labels name the ``reward/<label>`` metrics.

    ``__call__(prompts, responses)`` → ``FloatTensor[B]``, the weighted sum;
    ``score_with_details`` → :class:`~textrl.rewards.base.RewardOutput` with the unweighted
    component scores (``{label: FloatTensor[B]}``) and, when any component explains itself, one
    dict per response ``{label: that component's details}``.

    Raises:
        TextRLError: no components, a non-finite weight, or a component returning bad scores
            (the message names the component).
    """

    def __init__(self, components: dict[str, tuple[float, Any]]):
        if not components:
            raise TextRLError(
                "reward.components: got no components; expected {label: {name: <reward>, weight: w}, ...}"
            )
        for label, (weight, _) in components.items():
            if not torch.isfinite(torch.tensor(float(weight))):
                raise TextRLError(f"reward.components.{label}.weight: got {weight}; expected a finite number")
        self.components = components

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        return self.score_with_details(prompts, responses).scores

    def score_with_details(self, prompts: Sequence[str], responses: Sequence[str]) -> RewardOutput:
        """The weighted sum ``(B,)`` float32, each component's unweighted scores, and the components' details."""
        total = torch.zeros(len(responses), dtype=torch.float32)
        parts, details = {}, [{} for _ in responses]
        for label, (weight, model) in self.components.items():
            out = score_responses(model, prompts, responses, name=f"reward component {label!r}")
            parts[label] = out.scores.cpu()
            total += float(weight) * parts[label]
            if out.details is not None:
                for row, detail in zip(details, out.details):
                    row[label] = detail
        return RewardOutput(total, parts, details if any(details) else None)


def build_composite(
    components: dict[str, dict] | None = None, device: str = "auto", *, rewards: Mapping[str, Callable[..., Any]]
) -> CompositeReward:
    """The ``reward=composite`` factory: build each component from the reward-model table.

    Args:
        components: ``{label: {"name": <reward plugin>, "weight": w, **its parameters}}``;
            default: VADER sentiment (weight 1.0) + the default RBRM rubric (weight 0.5).
        device: passed to components that take a ``device`` and do not set one.
        rewards: the reward-model table (name → factory: built-ins and third-party rewards, as
            ``reward=<name>`` sees them); supplied by :func:`textrl.config.build_plugin`, not a
            config key (see :data:`textrl.config.plugin_options.INJECTED_KEYS`).

    Raises:
        TextRLError: a component that is not a mapping, has no ``name``, names an unknown
            reward (the valid ones listed), or has a bad parameter.
    """
    table = rewards
    built = {}
    for label, node in (DEFAULT_COMPONENTS if components is None else components).items():
        if not isinstance(node, dict) or "name" not in node:
            raise TextRLError(
                f"reward.components.{label}: got {node!r}; expected a mapping with a reward "
                f"'name' and a 'weight', e.g. {{name: sentiment, weight: 1.0}}"
            )
        node = dict(node)
        weight = node.pop("weight", 1.0)
        if not isinstance(weight, (int, float)) or isinstance(weight, bool):
            raise TextRLError(f"reward.components.{label}.weight: got {weight!r}; expected a number")
        if node["name"] not in table:
            raise TextRLError(f"reward.components.{label}.name: got {node['name']!r}; expected one of {sorted(table)}")
        if "device" in accepted_parameters(table[node["name"]]) and "device" not in node:
            node["device"] = device
        built[label] = (float(weight), build_plugin(f"reward.components.{label}", node, table))
    return CompositeReward(built)
