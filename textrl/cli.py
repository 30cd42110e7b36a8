"""The ``textrl`` command: ``textrl [overrides...]`` (a Hydra app), ``textrl plugins`` and
``textrl report <run_dir>``.

Exit status: 0 done; 1 bad input or a failed write (one ``textrl: error:`` line,
:class:`~textrl.errors.TextRLError`); ``128 + signum`` stopped by SIGTERM/SIGINT (one ``textrl:
stopped by ...`` line, :class:`~textrl.errors.Interrupted`; 130 for a Ctrl-C outside a training
loop, with no traceback).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from omegaconf.errors import OmegaConfBaseException  # noqa: E402

from textrl.config import check_config, check_plugin_overrides, register_configs, register_plugin_configs  # noqa: E402
from textrl.errors import Interrupted, TextRLError, first_line  # noqa: E402

_registry = None


def _fail(message: str) -> None:
    print(f"textrl: error: {message}", file=sys.stderr)
    sys.exit(1)


def _stopped(message: str, signum: int) -> None:
    print(f"textrl: {message}", file=sys.stderr)
    sys.exit(128 + signum)


@hydra.main(version_base="1.3", config_path="pkg://textrl.conf", config_name="train")
def _app(cfg: DictConfig):
    from textrl.run import run

    try:
        return run(cfg, registry=_registry)
    except TextRLError as e:
        _fail(str(e))
    except Interrupted as e:
        _stopped(str(e), e.signum)
    except OmegaConfBaseException as e:  # e.g. an interpolation whose resolver raised TextRLError
        cause = e.__cause__ if isinstance(e.__cause__, TextRLError) else e
        _fail(first_line(cause))


def main() -> None:
    """Console-script entry point; a Ctrl-C that no stage handles is one line and status 130."""
    import signal

    try:
        _main()
    except KeyboardInterrupt:
        _stopped("stopped by SIGINT (Ctrl-C)", signal.SIGINT)


def _main() -> None:
    global _registry
    from transformers.utils import logging as hf_logging

    from textrl.plugins import describe, load_plugins

    hf_logging.disable_progress_bar()
    if sys.argv[1:2] == ["report"]:
        report(sys.argv[2:])
        return
    try:
        _registry = load_plugins()
    except TextRLError as e:
        _fail(str(e))
    if sys.argv[1:2] == ["plugins"]:
        print(describe(_registry))
        return
    try:
        check_plugin_overrides(sys.argv[1:], _registry, default_options())
    except TextRLError as e:
        _fail(str(e))
    register_configs()
    register_plugin_configs(_registry)
    try:
        check_composition(sys.argv[1:], _registry)
    except TextRLError as e:
        _fail(str(e))
    _app()


def report(args: list[str]) -> None:
    """``textrl report <run_dir>``: redraw the run's figures from its files (:mod:`textrl.report`)
    and print their paths; bad input is one ``textrl: error:`` line and exit status 1."""
    from textrl.report import redraw

    if len(args) != 1 or args[0].startswith("-"):
        _fail(f"report: got {args!r}; expected exactly one run directory: textrl report <run_dir>")
    try:
        for path in redraw(args[0]):
            print(path)
    except TextRLError as e:
        _fail(str(e))


def check_composition(argv: list[str], registry=None) -> None:
    """Compose the config once with Hydra's compose API so a typo, a wrong type, an unknown group
    option or an unparsable override becomes one line naming the key (Hydra's own report runs
    to several lines), and range-check every setting (:func:`textrl.config.check_config`) before
    Hydra creates the run directory. Multirun sweeps and Hydra's flags (``--cfg``...) are left to
    Hydra (each job's settings are checked by :func:`textrl.run.run`).

    Raises:
        TextRLError: ``<key>: got <value>; expected <what is allowed>``.
    """
    if any(a.startswith("-") or a.replace(" ", "").upper() == "HYDRA.MODE=MULTIRUN" for a in argv):
        return
    from hydra import compose, initialize_config_module
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    try:
        with initialize_config_module("textrl.conf", version_base="1.3"):
            cfg = compose("train", overrides=list(argv), return_hydra_config=True)
            try:
                run_dir = cfg.hydra.run.dir
            except OmegaConfBaseException:  # e.g. ${hydra:job.name}: only Hydra's own run resolves it
                run_dir = None
            check_config(cfg, registry)
    except OverrideParseException as e:
        first, reason = (e.message.splitlines() + [""])[:2]  # Hydra's parser error, first two lines
        raise TextRLError(
            f"{first.replace('Error parsing override ', 'override ')}: cannot parse ({reason}); expected key=value"
        ) from None
    except MissingConfigException as e:
        raise TextRLError(missing_option_message(e)) from None
    except ConfigCompositionException as e:
        raise TextRLError(override_error_message(e, argv)) from None
    except ValueError as e:  # Hydra: a group set to null on the command line (`interaction=null`)
        if "Config group override" not in str(e):
            raise
        groups = [a.split("=", 1)[0] for a in argv if a.partition("=")[2].strip().lower() in ("null", "none")]
        key = groups[0] if groups else "override"
        raise TextRLError(f"{key}: got null; expected an option name (drop the group with ~{key})") from None
    if run_dir is not None:
        check_writable(run_dir)


def check_writable(run_dir: str) -> None:
    """Fail before the run when its output directory cannot be created or written.

    Tries to create (and removes) a temporary directory in the nearest existing ancestor of
    ``run_dir``, so nothing is left behind either way.

    Raises:
        TextRLError: ``hydra.run.dir: cannot write to <dir> (<reason>); expected a writable directory``.
    """
    import tempfile

    path = os.path.abspath(run_dir)
    ancestor = path
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    try:
        if not os.path.isdir(ancestor):
            raise NotADirectoryError(f"{ancestor} is a file")
        os.rmdir(tempfile.mkdtemp(dir=ancestor, prefix=".textrl-write-check-"))
    except OSError as e:
        raise TextRLError(
            f"hydra.run.dir: cannot write to {run_dir!r} ({e.strerror or e}); expected a writable directory"
        ) from None


def missing_option_message(error) -> str:
    """``<group>=<option>: no such option; expected one of [...]`` from Hydra's
    ``MissingConfigException`` (its ``missing_cfg_file`` and ``options``)."""
    group, _, option = (error.missing_cfg_file or "").rpartition("/")
    if not group or error.options is None:  # not a group option (e.g. the primary config)
        return first_line(error)
    return f"{group}={option}: no such {group} option; expected one of {list(error.options)}"


def override_error_message(error: Exception, argv: list[str]) -> str:
    """One line for a failed override: an unknown key (with the valid keys) or a wrong type."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    cause = error.__cause__
    key = getattr(cause, "full_key", None)
    value = next((a.split("=", 1)[1] for a in reversed(argv) if key and a.lstrip("+~").split("=", 1)[0] == key), None)
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and key:
        parent, _, name = key.rpartition(".")
        return f"{key}: no such key; expected one of {valid_keys(parent, argv)} (or +{key}={value} to add one)"
    if isinstance(cause, ValidationError) and key:
        reason = first_line(cause)
        return f"{key}: got {value!r}; expected a value of the key's type ({reason})"
    return " ".join(str(error).split())


def valid_keys(parent: str, argv: list[str]) -> list[str]:
    """Keys of the config node ``parent`` after the group choices in ``argv``."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    choices = [a for a in argv if "=" in a and "." not in a.split("=", 1)[0]]
    with initialize_config_module("textrl.conf", version_base="1.3"):
        cfg = compose("train", overrides=choices)
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return sorted(node.keys()) if node is not None and hasattr(node, "keys") else []


def default_options() -> dict[str, str]:
    """The ``reward``/``algo`` options ``conf/train.yaml``'s defaults list picks."""
    from importlib import resources

    import yaml

    train = yaml.safe_load(resources.files("textrl.conf").joinpath("train.yaml").read_text())
    picks = {}
    for entry in train.get("defaults", []):
        if isinstance(entry, dict):
            picks.update({k: v for k, v in entry.items() if isinstance(v, str)})
    return picks


if __name__ == "__main__":
    main()
