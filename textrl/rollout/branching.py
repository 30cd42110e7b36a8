"""Branching rollouts: Monte Carlo estimates from exact copies of a state.

In a token-level env the state *is* the token prefix, its turn bookkeeping and the slot's KV cache.
At a chosen state of a rollout (``algo.branch.at``: the prompt, the start of every policy turn, the
prompt and every state after a newline as VinePPO's reasoning steps, or every ``algo.branch.every``
actions) the :class:`Brancher` copies each slot in that state K times
(:meth:`~textrl.envs.TokenGenVectorEnv.branch`, the engines' ``branch``: tensors copied, the prefix
never recomputed), lets every copy draw its own next action from the state's distribution with the
brancher's own sampling stream and plays the copies to the end with the one rollout loop
(:func:`~textrl.rollout.loop.play`). The mean of the K returns (the env's rewards from that state
on: the reward model's score and turn rewards) estimates V(s) without bias; their standard deviation
is the state's spread. The main rollout is untouched: its tokens, log-probs and values are those of
a rollout without branching (the main sampling stream never serves a branch). Branch tokens are
sampled and counted (:attr:`BranchEstimates.sampled_tokens`), never trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from textrl.config.schema import BranchConfig
from textrl.rollout.loop import Episodes, play


@dataclass
class BranchEstimates:
    """What the branches of one batch estimated, laid out like the batch's action columns.

    Attributes:
        mask: ``FloatTensor[B, T]`` 1.0 at the action taken in a chosen state (the state branched from).
        mean: ``FloatTensor[B, T]`` the mean return of the K continuations of that state: V̂(s_t).
        std: ``FloatTensor[B, T]`` their standard deviation (unbiased, K − 1 in the denominator).
        sampled_tokens: tokens the branches sampled (the batch's own actions not included).
    """

    mask: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    sampled_tokens: int = 0

    def select(self, index: torch.Tensor) -> "BranchEstimates":
        """The rows ``index`` (``LongTensor[b]``), for a minibatch."""
        return BranchEstimates(self.mask[index], self.mean[index], self.std[index], self.sampled_tokens)


class Brancher:
    """The ``on_step`` hook of :func:`~textrl.rollout.loop.play` that branches a rollout (see the
    module docstring).

    Args:
        spec: ``algo.branch`` (K, where, how often).
        tokenizer: the env's tokenizer (``at=newlines``: which ids hold a newline).
        seed: seeds the branches' own sampling stream.
        engine_name: ``compiled`` pads every branch to ``N·K`` slots (one static cache, one compiled
            step); ``eager`` branches only the chosen slots.
    """

    def __init__(self, spec: BranchConfig, *, tokenizer, seed: int, engine_name: str):
        self.spec, self.pad, self.seed = spec, engine_name == "compiled", seed
        self.generator: torch.Generator | None = None
        self.newline_ids, self.last_tokens = None, None
        if spec.at == "newlines":
            self.newline_ids = torch.tensor([i for i in range(len(tokenizer)) if "\n" in tokenizer.decode([i])])

    def start(self, n: int, steps: int) -> dict:
        """Fresh ``(N, steps)`` buffers for a batch of ``n`` slots; :meth:`estimates` lays them out."""
        self.buffers = {name: torch.zeros(n, steps) for name in ("mask", "mean", "std")}
        self.sampled_tokens = 0
        return self.buffers

    def __call__(self, step: int, env, engine, draw, info: dict) -> None:
        """Branch the slots whose state at ``step`` is a chosen one and record their estimates."""
        if self.generator is None:
            self.generator = torch.Generator(device=env.device).manual_seed(self.seed)
        chosen = self._chosen(step, env, info)
        self.last_tokens = draw.tokens[:, 0]
        slots = chosen.nonzero().flatten().tolist()
        if not slots:
            return
        k = self.spec.k
        sources = list(range(env.num_envs)) if self.pad else slots
        rows = [i for i in sources for _ in range(k)]
        branch_env = env.branch(rows, [i in slots for i in rows])
        branch_engine = engine.branch(torch.tensor(rows, device=env.device), self.generator)
        before = branch_env.action_counts
        episodes = Episodes(list(branch_env.episode_prompts), running=len(slots) * k)
        obs, _, rewards = play(branch_env, branch_engine, branch_engine.redraw(), episodes)
        returns = sum(rewards.values(), torch.zeros(len(rows), device=env.device)).view(-1, k)
        if self.pad:
            returns = returns[slots]
        self.sampled_tokens += int((branch_env.action_counts - before).sum())
        self.buffers["mask"][slots, step] = 1.0
        self.buffers["mean"][slots, step] = returns.mean(1).float().cpu()
        self.buffers["std"][slots, step] = returns.std(1).float().cpu()

    def estimates(self, columns: torch.Tensor, action_mask: torch.Tensor) -> BranchEstimates:
        """The buffers placed on the batch's action columns (``columns``: each slot's k-th action's
        column, as the collector places its draws)."""
        steps = columns.shape[1]
        placed = [
            torch.zeros_like(action_mask).scatter_(1, columns, self.buffers[name][:, :steps].to(action_mask.device))
            * action_mask
            for name in ("mask", "mean", "std")
        ]
        return BranchEstimates(*placed, sampled_tokens=self.sampled_tokens)

    def state_dict(self) -> dict:
        """The branches' sampling stream (for checkpoints)."""
        return {"generator": None if self.generator is None else self.generator.get_state()}

    def load_state_dict(self, state: dict, device) -> None:
        """Restore :meth:`state_dict`."""
        if state.get("generator") is not None:
            self.generator = torch.Generator(device=device)
            self.generator.set_state(state["generator"])

    def _chosen(self, step: int, env, info: dict) -> torch.Tensor:
        """``BoolTensor[N]``: the running slots whose state at ``step`` is a chosen one."""
        running, at = ~env.done, self.spec.at
        if step == 0:
            return running  # every episode's first state: the prompt
        if at == "tokens" and step % self.spec.every == 0:
            return running
        if at == "turns" and "_env_tokens" in info:  # the env appended tokens: a new policy turn starts
            return running & torch.as_tensor(info["_env_tokens"], device=running.device)
        if at == "newlines":
            return running & torch.isin(self.last_tokens, self.newline_ids.to(running.device))
        return torch.zeros_like(running)
