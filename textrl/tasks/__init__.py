"""Tasks generated in code: their datasets (``textrl_datasets``) and their verifiers (reward
models), registered through the same hooks a third party uses.

- ``arithmetic`` (:mod:`textrl.tasks.arithmetic`): word problems for the ``calculator`` tool,
  splits ``arithmetic:train``, ``arithmetic:heldout`` (new numbers) and
  ``arithmetic:heldout_wording`` (new numbers in new scenes and sentences), verified by
  ``reward=arithmetic``.
"""

from textrl.hookspecs import hookimpl
from textrl.tasks import arithmetic


@hookimpl
def textrl_datasets():
    """textrl's generated datasets."""
    return {"arithmetic": arithmetic.rows}


@hookimpl
def textrl_reward_models():
    """The tasks' verifiers."""
    return {"arithmetic": arithmetic.AnswerReward}
