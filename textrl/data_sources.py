"""Data sources: the generated datasets a run can read by name, as an explicit table.

A data source string written ``"<name>:<split>"`` (``data.prompts=arithmetic:train``,
``sft.data=arithmetic:train``, ``interaction.path=hh_dialogues:train``) names a dataset generated
in code (the ``textrl_datasets`` hook) and one of its splits. Each stage builds one
:class:`DataSources` from the plugin registry it was given (``DataSources(registry.datasets)``)
and passes it down, as the keyword argument ``sources``, to what reads data:
:func:`textrl.prompts.load_prompts`, :func:`textrl.training_examples.read_rows` and the
plugin factories that declare a ``sources`` parameter (the ``dialogue`` interaction; see
:data:`textrl.config.plugin_options.INJECTED_KEYS`). Nothing below the stages reads a global
registry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Iterable, Mapping

from textrl.errors import TextRLError, first_line

RowsFn = Callable[[str], Iterable[dict]]
"""``rows(split) -> rows``: a generated dataset (``textrl_datasets``); raises ``ValueError`` for an
unknown split."""


def parse_source(source: str) -> tuple[str, str] | None:
    """``(name, split)`` when ``source`` is written ``"<name>:<split>"`` (both Python identifiers,
    e.g. ``"arithmetic:train"``), else ``None`` (a path or a ``datasets`` id)."""
    name, sep, split = source.partition(":")
    if not sep or not name.isidentifier() or not split.isidentifier():
        return None
    return name, split


@dataclass(frozen=True)
class DataSources:
    """The generated datasets a run reads, by name (read-only).

    Attributes:
        datasets: name → ``rows(split)`` (:data:`RowsFn`), e.g. a plugin registry's
            ``datasets``: ``{"arithmetic": ..., "hh_dialogues": ...}``. Empty by default: then
            only files and ``datasets`` ids resolve.
    """

    datasets: Mapping[str, RowsFn] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "datasets", MappingProxyType(dict(self.datasets)))

    @property
    def names(self) -> list[str]:
        """The dataset names, sorted."""
        return sorted(self.datasets)

    def rows(self, source: str, key: str) -> list[dict] | None:
        """The rows of ``source`` when it is a generated dataset ``"<name>:<split>"``, else
        ``None`` (``source`` is a path or a ``datasets`` id, for the caller to read). An existing
        file named like ``"<name>:<split>"`` is left to the caller when ``<name>`` is not a
        generated dataset.

        Args:
            source: the data source string the user wrote.
            key: the config key it came from (``data.prompts``, ``sft.data``...), named in errors.

        Returns:
            list[dict] | None: the rows, in the dataset's order.

        Raises:
            TextRLError: ``<split>`` is not a split of ``<name>``, or ``source`` is written
                ``"<name>:<split>"`` but ``<name>`` is no generated dataset and no such file
                exists; one line naming ``key``.
        """
        parsed = parse_source(source)
        if parsed is None:
            return None
        name, split = parsed
        rows = self.datasets.get(name)
        if rows is None:
            if os.path.exists(os.path.expanduser(source)):
                return None
            raise TextRLError(
                f"{key}: got {source!r}; expected <name>:<split> with <name> a generated dataset "
                f"(one of {self.names}), or a file path or a datasets id"
            )
        try:
            return list(rows(split))
        except ValueError as e:
            if isinstance(e, TextRLError):
                raise
            raise TextRLError(f"{key}: got {source!r}; {first_line(e)}") from None
