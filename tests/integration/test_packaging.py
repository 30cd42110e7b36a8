"""The published distribution (``textrl-rlhf``; the import name and the command are ``textrl``):
``python -m build`` makes a wheel and an sdist; the wheel, installed non-editable into a fresh
virtual environment, runs the ``textrl`` command outside the source tree with conf/ shipped as
``textrl.conf`` and textrl/data as package data; the sdist carries the licence and the configs
and nothing from the shared assets. Also: constraints.txt covers what is installed, and a run
raises no deprecation warning."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DIST = "textrl_rlhf"  # the distribution textrl-rlhf, normalised as wheel and sdist file names spell it


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """``{"wheel": path, "sdist": path}`` built from the working tree by ``python -m build``
    (no isolation: setuptools and wheel come from the dev extra, so it runs offline)."""
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    wheels, sdists = list(out.glob(f"{DIST}-*.whl")), list(out.glob(f"{DIST}-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


def test_wheel_metadata_names_the_distribution_licence_and_command(built):
    with zipfile.ZipFile(built["wheel"]) as wheel:
        names = wheel.namelist()
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = wheel.read(f"{info}/METADATA").decode()
        entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    assert "Name: textrl-rlhf" in metadata.splitlines()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert f"{info}/licenses/LICENSE" in names
    assert "textrl = textrl.cli:main" in entry_points
    assert "textrl/conf/train.yaml" in names and "textrl/conf/experiment/tinystories_sentiment.yaml" in names
    assert "textrl/data/movie_review_openings.txt" in names


def test_sdist_has_licence_and_configs_and_no_shared_assets(built):
    with tarfile.open(built["sdist"]) as sdist:
        names = [name.split("/", 1)[1] for name in sdist.getnames() if "/" in name]
    assert {"LICENSE", "CITATION.cff", "README.md", "pyproject.toml", "conf/train.yaml"} <= set(names)
    assert "conf/experiment/tinystories_sentiment.yaml" in names and "textrl/data/movie_review_openings.txt" in names
    for forbidden in ("shared/", "assets/", ".assets/", "outputs/", ".venv/", "tinystories-656k", "docs/"):
        assert not [n for n in names if forbidden in n], forbidden
    assert not [n for n in names if n.endswith((".safetensors", ".bin", ".gguf", ".pt", ".png"))]
    assert (REPO / "LICENSE").read_text().startswith("\n                                 Apache License\n")


def see_these_packages(venv: Path) -> list[str]:
    """Make the fresh ``venv`` see the packages this interpreter sees: a ``.pth`` file in its
    site-packages lists this process's ``sys.path`` directories but the source tree's (the
    checkout, its tests and plugin sources; a virtual environment inside it is installed packages,
    kept), so they follow the venv's own site-packages (the wheel's ``textrl`` wins) and ``.pth``
    files in them are not run (an editable install of this checkout stays out).
    ``--system-site-packages`` would give the base interpreter's packages instead, which inside a
    virtual environment are not this one's. Returns the directories listed."""
    find = [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
    purelib = Path(subprocess.run(find, capture_output=True, text=True, check=True).stdout.strip())
    installed = {os.path.abspath(p) for p in site.getsitepackages()}
    dirs = [p for p in dict.fromkeys(os.path.abspath(p) for p in sys.path if p) if os.path.isdir(p)]
    dirs = [p for p in dirs if p in installed or not Path(p).resolve().is_relative_to(REPO.resolve())]
    (purelib / "running_interpreter.pth").write_text("".join(f"{p}\n" for p in dirs))
    return dirs


@pytest.mark.slow
def test_installed_wheel_runs_the_command_outside_the_source_tree(built, assets, tmp_path):
    """A fresh venv that sees the running interpreter's packages (torch, transformers, ...;
    :func:`see_these_packages`, whether or not that interpreter is itself a virtual environment)
    gets the wheel with ``pip install --no-deps --force-reinstall``; ``textrl --help`` and a
    one-update TinyStories run work from a directory outside the repo with PYTHONPATH unset,
    importing the venv's copy."""
    venv = tmp_path / "venv"
    made = subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr[-2000:]
    assert any(Path(p, "gymnasium").is_dir() for p in see_these_packages(venv))
    python, command = venv / "bin" / "python", venv / "bin" / "textrl"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(
        HF_HUB_OFFLINE="1",
        WANDB_MODE="disabled",
        TEXTRL_ASSETS=str(assets),
        TEXTRL_DISABLE_PLUGIN_AUTOLOAD="1",  # the wheel alone, not the plugins the dev install registers
    )
    install = subprocess.run(  # pip from this interpreter's site-packages, installing into the venv
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--force-reinstall",
            "--no-index",
            "-q",
            str(built["wheel"]),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    work = tmp_path / "elsewhere"
    work.mkdir()

    where = subprocess.run(
        [
            str(python),
            "-c",
            "import textrl, sysconfig; print(textrl.__file__); print(sysconfig.get_paths()['purelib'])",
        ],
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
    )
    assert where.returncode == 0, where.stderr[-2000:]
    module, site = where.stdout.split()
    assert Path(module).is_relative_to(Path(site)) and Path(site).is_relative_to(venv), (module, site)
    assert not Path(module).is_relative_to(REPO)

    helped = subprocess.run([str(command), "--help"], capture_output=True, text=True, cwd=work, env=env, timeout=120)
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert "== Configuration groups ==" in helped.stdout and "experiment:" in helped.stdout, helped.stdout[:2000]

    run_dir = work / "run"
    ran = subprocess.run(
        [
            str(command),
            "experiment=tinystories_sentiment",
            "trainer.updates=1",
            "rollout.batch_size=4",
            "algo.minibatch_size=4",
            "env.max_new_tokens=4",
            "logger=none",
            "trainer.progress_bar=false",
            f"hydra.run.dir={run_dir}",
        ],
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in records] == [1] and "objective/score" in records[0]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["updates"] == 1 and summary["episodes"] == 4
    assert (run_dir / "policy" / "config.json").is_file() and (run_dir / "report.png").is_file()
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert not (work / "outputs").exists()  # everything went to hydra.run.dir


def read_constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name] = version
    return pins


def test_constraints_pin_every_installed_dependency_at_its_installed_version():
    """constraints.txt is what the README's commands and CI install with (``pip install -c``): it must
    name every distribution textrl, its dev extra, the plugins and the model packages pull in, at
    the version installed here; a dependency added to pyproject.toml without regenerating the file
    (``python .ci/constraints.py > constraints.txt``) fails here."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ci_constraints", REPO / ".ci" / "constraints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    installed = {k: v for k, v in module.closure().items() if k not in module.OWN | module.TOOLING}
    pins = read_constraints()
    missing = sorted(set(installed) - set(pins))
    assert not missing, f"not pinned in constraints.txt: {missing}"
    differ = {k: (pins[k], v) for k, v in installed.items() if pins[k] != v}
    assert not differ, f"constraints.txt pin vs installed: {differ}"


def test_readme_commands_and_ci_install_with_the_constraints():
    ci = (REPO / ".ci" / "run").read_text()
    assert "-c constraints.txt" in ci
    assert "transformers" in read_constraints() and "torch" in read_constraints()


def test_a_run_raises_no_deprecation_or_future_warning(assets, tmp_path):
    """textrl calls its libraries through their current APIs: a TinyStories update (rollout with a
    KV cache, PPO, saving the policy) raises no FutureWarning or DeprecationWarning (transformers
    5.24 warned on every ``past_key_values=`` call, which goes away in 5.40)."""
    import warnings

    from conftest import compose_config
    from textrl.plugins import load_plugins
    from textrl.run import run

    registry = load_plugins(autoload=False)
    cfg = compose_config(
        [
            "experiment=tinystories_sentiment",
            "trainer.updates=1",
            "rollout.batch_size=4",
            "algo.minibatch_size=4",
            "env.max_new_tokens=4",
            "logger=none",
            "trainer.progress_bar=false",
        ],
        registry,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(cfg, run_dir=str(tmp_path), registry=registry)
    found = [
        f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})"
        for w in caught
        if issubclass(w.category, (DeprecationWarning, FutureWarning))
    ]
    assert not found, found


def test_example_plugins_depend_on_the_published_distribution():
    """The plugins require ``textrl-rlhf``: a bare ``textrl`` requirement would pull another
    project of that name from PyPI."""
    for plugin in ("textrl-grpo", "textrl-regex-reward"):
        text = (REPO / "plugins" / plugin / "pyproject.toml").read_text()
        assert 'dependencies = ["textrl-rlhf"]' in text, plugin
