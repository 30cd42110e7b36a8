"""The logged-metrics glossary page, generated from :data:`textrl.metrics.METRICS` when the site is built.

Each metric gets a heading (its name, so other pages can link ``reference/metrics.md#<slug>``), its
unit and stages, its meaning, what a healthy run shows and what to do when it shows something else:
the ``unit``, ``stages``, ``meaning``, ``healthy`` and ``when_off`` of its
:class:`textrl.metrics.Metric`, written once in ``textrl/metrics.py``. Metrics are grouped by the
stages that report them, in the table's order.

:func:`markdown` returns the page; ``docs/_hooks/textrl_docs.py`` serves it as
``reference/metrics.md``. ``tests/integration/test_docs.py`` checks that every metric has a
section and that the settings it names exist.
"""

from __future__ import annotations

import re

SECTIONS = (
    (("rl",), "RL updates (`stage=rl`)"),
    (("sft", "rm"), "SFT and reward-model training (`stage=sft`, `stage=rm`)"),
    (("eval",), "Evaluation (`stage=eval`)"),
)
"""``(stages, title)``: a metric goes in the first section sharing a stage with it."""

INTRO = """\
# Logged metrics

Every metric textrl logs, generated from `textrl/metrics.py` (the one table the algorithms, the
loggers and the hooks use) when this site was built. Each run writes them to `metrics.jsonl` (one
JSON object per update or logging step), prints the main ones on the console (`logger=console`)
and sends them to wandb (`logger=wandb`). A name with `<...>` stands for a family of names;
plugins may log names of their own beside these (GRPO's `loss/kl`).

**Healthy** gives the bounds and the relations to the settings that a working run shows; what a
run measured is on the [benchmark pages](../benchmarks/index.md), where the
[main job](../benchmarks/main-job.md) lists score, KL, β, clip fraction, approximate KL and both
losses for each of its updates. **When it is off** names the settings to check or change, all of
them in the [configuration reference](configuration.md); the [troubleshooting](../troubleshooting.md)
page goes through the common failures.
"""


def _text(text: str) -> str:
    """``text`` with reStructuredText's double backticks as Markdown code, ending in a full stop."""
    text = re.sub(r"``([^`]+)``", r"`\1`", text.strip())
    return text if text.endswith(".") else text + "."


def _sentence(text: str) -> str:
    """:func:`_text` with its first letter upper-case (a leading code span is left as it is)."""
    text = _text(text)
    return text[0].upper() + text[1:] if text[0].isalpha() else text


def markdown(metrics=None) -> str:
    """The glossary page (Markdown) of ``metrics`` (default :data:`textrl.metrics.METRICS`)."""
    if metrics is None:
        from textrl.metrics import METRICS as metrics

    out = [INTRO]
    placed: set[str] = set()
    for stages, title in SECTIONS:
        names = [n for n, m in metrics.items() if n not in placed and set(m.stages) & set(stages)]
        if not names:
            continue
        out += [f"## {title}", ""]
        for name in names:
            entry = metrics[name]
            placed.add(name)
            unit = "a plain number" if entry.unit == "1" else entry.unit
            where = ", ".join(f"`stage={s}`" for s in entry.stages)
            out += [f"### `{name}`", "", f"*{unit}*, logged by {where}. {_sentence(entry.meaning)}", ""]
            if entry.healthy:
                out.append(f"- **Healthy**: {_text(entry.healthy)}")
            if entry.when_off:
                out.append(f"- **When it is off**: {_text(entry.when_off)}")
            out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown())
