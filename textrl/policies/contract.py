"""The policy contract, in one place: what a ``textrl_policies`` plugin returns, and every member of a
policy that textrl's stages, decode engines, rollout collector, algorithms and checkpoints use.

``policy=<name>`` selects a factory from the ``textrl_policies`` hook; it is called with the keys
under ``policy.`` (except ``name``) as keyword arguments, as reward, algorithm and interaction
factories are, and returns a :class:`PolicyLoader`. A stage then asks the loader for the tokenizer
and for the policy, saying what it needs the policy for::

    loader = factory(**policy_params)                  # policy.* without name
    tokenizer = loader.load_tokenizer()
    policy = loader.load_policy(stage="rl", tokenizer=tokenizer, device=device, dropout=None)

The built-in ``policy=hf`` (:class:`textrl.policies.hf.HFPolicyLoader`) loads a Hugging Face causal
LM and returns a :class:`~textrl.policies.policy.PolicyWithValueHead`. A plugin may return a
``PolicyWithValueHead`` around a causal LM it built another way (a config, another loader, a
quantised model) or any ``torch.nn.Module`` with the members of :class:`Policy`.
:func:`check_loader` and :func:`check_policy` check what a plugin returned before a stage uses it.

The reference model π_ref of the KL penalty is :func:`textrl.policies.reference.make_reference` of
the policy: with LoRA adapters (``policy.adapters`` a peft ``PeftModel``) the policy's own network
with the adapters switched off, else a frozen deep copy of ``policy.lm``. π_ref is called as a
causal LM, ``reference(input_ids=, attention_mask=, position_ids=, logits_to_keep=)`` returning an
object with ``.logits`` ``(B, K, V)`` (:func:`textrl.policies.scoring.teacher_forced_logprobs`).

Stages chaining saved policies (``stage=instructgpt`` and ``stage=rlhf``) hand each stage's output
directory to the next as ``policy.model``: they need a factory with a ``model`` parameter that loads
what :meth:`Policy.save_pretrained` wrote.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
from torch import nn

from textrl.errors import TextRLError

POLICY_STAGES = ("sft", "rl", "eval")
"""The ``stage`` values :meth:`PolicyLoader.load_policy` is called with."""


class PolicyOutput(NamedTuple):
    """One forward pass of a policy.

    Attributes:
        logits: ``(B, K, V)`` float32 next-token logits at the last K positions (V ≥ the
            tokenizer's length; logits past it are never sampled).
        values: ``(B, K)`` float32 V(s) of the state "sequence up to and including this position",
            in the reward model's units.
        past_key_values: the transformers cache after this pass (the one given, updated in place,
            or a new ``DynamicCache``) when ``use_cache``, else ``None``.
    """

    logits: torch.Tensor
    values: torch.Tensor
    past_key_values: object


@runtime_checkable
class Policy(Protocol):
    """What textrl uses of a policy: a ``torch.nn.Module`` (parameters, ``to``, ``eval``,
    deep-copyable, wrappable by ``accelerate``'s ``prepare``) with these members. Shapes: B
    episodes, L new tokens, L_past cached tokens, K kept positions, V logits, H hidden size.

    Attributes:
        lm: the causal LM, with the transformers ``PreTrainedModel`` interface textrl calls:
            ``config``, ``get_input_embeddings()``, ``get_output_embeddings()``, ``base_model``,
            ``forward(input_ids=, attention_mask=, position_ids=, labels=)`` returning ``.logits``
            and, with labels, ``.loss``, and ``save_pretrained``. Used by SFT (transformers'
            ``Trainer`` trains it), π_ref (a frozen deep copy), PPO-ptx (the pretraining loss), the
            bf16 rollout copy of its matmul weights and the compiled engine (its weights' dtype).
        value_head: ``nn.Module`` mapping the last hidden state ``(..., H)`` to ``(...)`` float32
            values; ``value_head.summary`` is its ``nn.Linear(H, 1)``, which
            ``algo.value_init=reward_model`` initialises from the reward model's head. An algorithm
            without a critic freezes it (``requires_grad_(False)``).
        adapters: the peft ``PeftModel`` holding LoRA adapters on ``lm`` (it shares ``lm``'s
            weights and switches the adapters off for π_ref), or ``None``.
    """

    lm: nn.Module
    value_head: nn.Module
    adapters: Any

    @property
    def config(self) -> Any:
        """The LM's transformers ``PretrainedConfig`` (the compiled engine sizes its
        ``StaticCache`` from it; ``vocab_size`` ≥ the tokenizer's length)."""

    @property
    def device(self) -> torch.device:
        """The device of the parameters (rollouts and losses run there)."""

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        past_key_values=None,
        use_cache: bool = False,
        logits_to_keep: int = 0,
    ) -> PolicyOutput:
        """One pass of the LM and the value head, called as ``policy(...)``.

        The decode engines call it for the prefill (``use_cache=True, logits_to_keep=1``), every
        token step (one new token per slot, with the cache it returned, or the compiled engine's
        transformers ``StaticCache``, updated in place) and ragged multi-turn blocks; the algorithms'
        teacher-forced pass (:func:`textrl.policies.policy.response_outputs`) calls it without a
        cache, with gradients, ``logits_to_keep = T + 1``.

        Args:
            input_ids: ``(B, L)`` long token ids.
            attention_mask: ``(B, L_past + L)``, 1 on real tokens (padding anywhere), int or bool.
            position_ids: ``(B, L)`` long; ``None``: ``cumsum(attention_mask) - 1`` of the last L
                columns (left-padding safe).
            past_key_values: a transformers cache from an earlier call, or ``None``.
            use_cache: return the updated cache.
            logits_to_keep: logits and values for the last k positions only (0: all L).

        Returns:
            :class:`PolicyOutput`: ``logits (B, K, V)`` and ``values (B, K)``, both float32
            whatever the autocast state (heads run in float32), K = L or ``logits_to_keep``.
        """

    def save_pretrained(self, directory: str, tokenizer=None) -> None:
        """Write the policy (and ``tokenizer``, when given) into ``directory``, so that the
        policy's loader loads it back from there (``policy.model=<directory>`` for ``policy=hf``).
        Called by stage=rl (``<run_dir>/policy``) and stage=sft (``<run_dir>/model``), into a
        temporary directory that is renamed when complete. A run with ``trainer.sharding=fsdp``
        also passes ``state_dict=`` (the consolidated ``{name: tensor}`` of the whole policy, with
        the module's own names), to be written instead of the module's tensors, which are then
        shards (:class:`~textrl.policies.policy.PolicyWithValueHead` does so).

        Raises:
            OSError: the files cannot be written (the stage reports a ``WriteError``).
        """


@runtime_checkable
class PolicyLoader(Protocol):
    """What a ``textrl_policies`` factory returns: how to load the tokenizer and the policy.

    A stage builds one loader (``factory(**policy_params)``), calls :meth:`load_tokenizer` once and
    passes the tokenizer to :meth:`load_policy`.
    """

    def load_tokenizer(self) -> Any:
        """The policy's tokenizer: a transformers ``PreTrainedTokenizerBase`` with a pad token (it
        may equal EOS: textrl tracks padding with attention masks), ``eos_token_id`` ending a
        response, and a chat template when ``data.prompt_format`` needs one. The env's action space
        has ``len(tokenizer)`` tokens.

        Raises:
            TextRLError: the tokenizer cannot be loaded (naming the ``policy.`` key at fault).
        """

    def load_policy(self, *, stage: str, tokenizer: Any, device: torch.device, dropout: float | None = None) -> Policy:
        """The policy on ``device``, in eval mode (``Trainer`` switches SFT's LM to training).

        Args:
            stage: what the policy is for, one of :data:`POLICY_STAGES`: ``rl`` the policy RL
                trains (where supported, with LoRA adapters and gradient checkpointing); ``sft`` the
                policy whose ``lm`` SFT trains, every weight; ``eval`` a policy only sampled from.
            tokenizer: what :meth:`load_tokenizer` returned (an LM whose vocabulary is shorter,
                e.g. by an added pad token, must grow its embeddings to ``len(tokenizer)``).
            device: where the weights go.
            dropout: the dropout rate the stage trains with (stage=sft passes ``sft.dropout``);
                ``None``: the loader's own setting.

        Raises:
            TextRLError: the policy cannot be loaded (naming the ``policy.`` key at fault).
        """


def _members(protocol: type) -> list[str]:
    """The member names a protocol class declares (annotations, methods and properties)."""
    names = set(getattr(protocol, "__annotations__", {}))
    names |= {name for name in vars(protocol) if not name.startswith("_")}
    return sorted(names)


POLICY_MEMBERS = tuple(_members(Policy))
"""The members of :class:`Policy`, besides ``nn.Module``'s, that :func:`check_policy` checks."""
LOADER_MEMBERS = tuple(_members(PolicyLoader))
"""The methods of :class:`PolicyLoader` that :func:`check_loader` checks."""


def check_loader(loader: Any, option: str) -> PolicyLoader:
    """``loader`` when it has :class:`PolicyLoader`'s methods.

    Args:
        loader: what the factory of ``option`` returned.
        option: ``policy=<name>``, for the error line.

    Raises:
        TextRLError: ``policy=<name>: got <type> from its factory, without [...]; expected a
            textrl.PolicyLoader ...``.
    """
    missing = [name for name in LOADER_MEMBERS if not callable(getattr(loader, name, None))]
    if missing:
        raise TextRLError(
            f"{option}: got a {type(loader).__name__} from its factory, without {missing}; expected a "
            f"textrl.PolicyLoader (load_tokenizer() and load_policy(stage=, tokenizer=, device=, dropout=))"
        )
    return loader


def check_policy(policy: Any, option: str, tokenizer: Any = None) -> Policy:
    """``policy`` when it is an ``nn.Module`` with :class:`Policy`'s members and, given the
    ``tokenizer``, logits for each of its tokens (``config.vocab_size`` ≥ ``len(tokenizer)``).

    Args:
        policy: what ``load_policy`` of ``option``'s loader returned.
        option: ``policy=<name>``, for the error line.
        tokenizer: what the loader's ``load_tokenizer`` returned.

    Raises:
        TextRLError: one line naming ``option`` and what is missing or too small.
    """
    if not isinstance(policy, nn.Module):
        raise TextRLError(
            f"{option}: got a {type(policy).__name__} from load_policy(); expected a textrl.Policy "
            f"(a torch.nn.Module with {list(POLICY_MEMBERS)})"
        )
    missing = [name for name in POLICY_MEMBERS if not hasattr(policy, name)]
    if missing:
        raise TextRLError(
            f"{option}: got a {type(policy).__name__} from load_policy(), without {missing}; expected a "
            f"textrl.Policy (a torch.nn.Module with {list(POLICY_MEMBERS)}, e.g. textrl.PolicyWithValueHead)"
        )
    config = policy.config
    vocab = getattr(config.get_text_config() if hasattr(config, "get_text_config") else config, "vocab_size", None)
    if tokenizer is not None and isinstance(vocab, int) and vocab < len(tokenizer):
        raise TextRLError(
            f"{option}: got a policy with {vocab} logits for a tokenizer of {len(tokenizer)} tokens; expected "
            f"config.vocab_size >= len(tokenizer) (grow the embeddings with lm.resize_token_embeddings)"
        )
    return policy
