"""PPO-ptx (InstructGPT, Ouyang et al. 2022, eq. 2): PPO plus γ_ptx × the language-modelling loss
on pretraining text, so RL does not erase what the model already knew.

Every PPO optimizer step (minibatch) also draws ``ptx_batch_size`` texts from ``ptx_data`` (a .txt/.json/.jsonl
path or a ``datasets`` id, read like prompts) and adds ``ptx_coef · CE(π; text)``; the term is
logged as ``loss/ptx``. With ``ptx_coef = 0`` the parameters follow PPO exactly (tested).
"""

from __future__ import annotations

import torch

from textrl.algorithms.base import SetupContext
from textrl.algorithms.ppo import PPO
from textrl.config import integer, number
from textrl.data_sources import DataSources
from textrl.prompts import load_prompts
from textrl.errors import TextRLError
from textrl.policies.logits import lm_forward


class PPOPtx(PPO):
    """PPO with a pretraining-mix term.

    Args (keyword-only):
        ptx_coef: γ_ptx ≥ 0 (InstructGPT used 27.8 with its own loss scaling).
        ptx_data: pretraining text source (required): a text/json/jsonl path, a ``datasets`` id or a
            generated dataset ``"<name>:<split>"`` read through ``sources``.
        ptx_batch_size: texts per minibatch.
        ptx_max_length: tokens kept per text.
        sources: the run's :class:`~textrl.data_sources.DataSources` (injected by the trainer, not a
            setting).
        (PPO's parameters and the loop's, passed on as ``**ppo``)

    Raises:
        TextRLError: ``ptx_data`` unset, or no tokenizer passed to ``setup`` (``ptx_coef`` and
            the sizes are checked at startup through :attr:`config_checks`).
    """

    config_checks = {
        **PPO.config_checks,
        "ptx_coef": number(ge=0, expected="γ_ptx >= 0"),
        "ptx_batch_size": integer(ge=1),
        "ptx_max_length": integer(ge=2),
    }

    def __init__(
        self,
        *,
        ptx_coef: float = 1.0,
        ptx_data: str = "???",
        ptx_batch_size: int = 8,
        ptx_max_length: int = 128,
        sources: DataSources | None = None,
        **ppo,
    ):
        super().__init__(**ppo)
        self.sources = sources
        if not ptx_data or ptx_data == "???":
            raise TextRLError("algo.ptx_data: not set; expected a text/json/jsonl path or a datasets id")
        self.ptx_coef, self.ptx_data = ptx_coef, ptx_data
        self.ptx_batch_size, self.ptx_max_length = ptx_batch_size, ptx_max_length
        self.ptx_generator = torch.Generator().manual_seed(torch.initial_seed() + 1)

    def setup(self, policy, reference, context: SetupContext | None = None) -> None:
        """PPO's setup, then tokenise the pretraining texts once with ``context.tokenizer``.

        Raises:
            TextRLError: no tokenizer in ``context``.
        """
        context = context or SetupContext()
        super().setup(policy, reference, context)
        if context.tokenizer is None:
            raise TextRLError("algo=ppo_ptx needs the policy's tokenizer in setup(); got None")
        try:
            texts = load_prompts(self.ptx_data, sources=self.sources)
        except TextRLError as e:  # the loader names data.prompts; the user typed algo.ptx_data
            raise TextRLError(str(e).replace("data.prompts", "algo.ptx_data", 1)) from None
        self.ptx_ids = [
            ids
            for ids in context.tokenizer(texts, truncation=True, max_length=self.ptx_max_length)["input_ids"]
            if len(ids) > 1
        ]
        self.pad_id = context.tokenizer.pad_token_id

    def ptx_loss(self) -> torch.Tensor:
        """Mean next-token cross-entropy of the policy on ``ptx_batch_size`` random texts."""
        pick = torch.randint(len(self.ptx_ids), (self.ptx_batch_size,), generator=self.ptx_generator).tolist()
        rows = [self.ptx_ids[i] for i in pick]
        width = max(len(r) for r in rows)
        device = self.policy.device
        ids = torch.tensor([r + [self.pad_id] * (width - len(r)) for r in rows], device=device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
        logits = lm_forward(self.policy.lm, {"input_ids": ids, "attention_mask": mask}).logits  # float32 head
        targets = torch.nn.functional.pad(ids.masked_fill(mask == 0, -100), (0, 1), value=-100)[:, 1:]
        return torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100
        )

    def step_losses(self):
        """``{"loss/ptx": (γ_ptx, CE)}``, once per optimizer step (not split into micro-batches)."""
        return {"loss/ptx": (self.ptx_coef, self.ptx_loss())}

    def state_dict(self) -> dict:
        """PPO's state and the pretraining-sampler RNG."""
        return {**super().state_dict(), "ptx_generator": self.ptx_generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        super().load_state_dict(state)
        self.ptx_generator.set_state(state["ptx_generator"])
