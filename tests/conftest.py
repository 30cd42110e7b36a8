"""Shared fixtures and helpers for tests/unit and tests/integration: offline settings, a tiny
tokenizer and random policy built in code, the real assets in ../shared/assets (tests that need
them skip with a message when they are absent), and the ways to run the ``textrl`` command:
:func:`textrl` (a subprocess, for tests of the process boundary) and the :func:`cli` fixture
(``textrl.cli.main`` in this process, for everything else).

Test files import the plain helpers with ``from conftest import ...``; no test file imports another."""

from __future__ import annotations

import contextlib
import functools
import http.server
import importlib
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n N: N processes share the cores, one thread each
    torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


def find_assets() -> Path:
    """``$TEXTRL_ASSETS``, else ``../shared/assets`` beside the repo, else the repo's ignored
    ``.assets/`` folder (a copy for machines without ``../shared``; see tests/benchmarks/gpu_check.sh)."""
    if "TEXTRL_ASSETS" in os.environ:
        return Path(os.environ["TEXTRL_ASSETS"])
    for candidate in (REPO.parent / "shared" / "assets", REPO / ".assets"):
        if (candidate / "tinystories-656k" / "config.json").is_file():
            return candidate
    return REPO.parent / "shared" / "assets"


ASSETS = find_assets()
os.environ.setdefault("TEXTRL_ASSETS", str(ASSETS))  # the textrl command (conf/policy/tinystories.yaml) reads it

WORDS = (
    "the a movie film story was is and very good bad great awful happy sad love hate "
    "dog cat boy girl park ball played ran saw it this that of to in on with fun day"
).split()


F64 = torch.float64


def t64(rows):
    """``rows`` (nested lists of numbers) as a float64 tensor, for hand-computed expectations."""
    return torch.tensor(rows, dtype=F64)


def make_tokenizer(pad: bool = True):
    """A word-level tokenizer: specials <pad>=0 (if pad) <unk> <bos> <eos>, then WORDS; adds BOS."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, decoders
    from transformers import PreTrainedTokenizerFast

    specials = (["<pad>"] if pad else []) + ["<unk>", "<bos>", "<eos>"]
    vocab = {w: i for i, w in enumerate(specials + list(WORDS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
    kwargs = {"pad_token": "<pad>"} if pad else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<bos>", eos_token="<eos>", padding_side="left", **kwargs
    )


def make_policy(tokenizer, seed: int = 0, hidden: int = 32):
    """A random 2-layer Llama policy with value head (random, nonzero value head weights)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from textrl.policies import PolicyWithValueHead

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    policy = PolicyWithValueHead(LlamaForCausalLM(config).eval())
    torch.nn.init.normal_(policy.value_head.summary.weight, std=0.5)
    return policy


def length_reward(prompts, responses):
    """A deterministic reward model: number of words in the response."""
    return torch.tensor([float(len(r.split())) for r in responses])


def compose_config(overrides, registry=None):
    """Compose ``train`` with the plugin configs registered, as the ``textrl`` command does."""
    import hydra
    from hydra.core.global_hydra import GlobalHydra

    from textrl.config import register_configs, register_plugin_configs
    from textrl.plugins import load_plugins

    register_configs()
    register_plugin_configs(registry or load_plugins())
    GlobalHydra.instance().clear()
    with hydra.initialize_config_module("textrl.conf", version_base="1.3"):
        return hydra.compose("train", overrides=list(overrides))


def textrl(*args, cwd=None, timeout=600, env=None):
    """Run ``python -m textrl ARGS`` as a subprocess (what the console script and sweeps run);
    returns the :class:`subprocess.CompletedProcess` with text ``stdout`` and ``stderr``. Use it
    where the process boundary is what is tested (exit status, signals, a fresh interpreter)."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "textrl", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=full_env
    )


def accelerate_launch(*args, processes=2, timeout=600, config_file=None, env=None):
    """``accelerate launch --num_processes N -m textrl ARGS`` on CPU; returns the
    :class:`subprocess.CompletedProcess` (text ``stdout`` and ``stderr``).

    ``--multi_gpu`` selects accelerate's torchrun launcher (its ``--cpu`` multi-process path needs
    mpirun); ``device=cpu`` in the args makes each process use gloo on the CPU. ``config_file``
    (e.g. ``textrl/data/accelerate/fsdp.yaml``) replaces ``--multi_gpu`` with that launch config;
    ``env`` entries are added to the processes' environment.
    """
    launcher = ["--config_file", str(config_file)] if config_file is not None else ["--multi_gpu"]
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *launcher,
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "0",
        "-m",
        "textrl",
        *args,
    ]
    full_env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)


def fast(run_dir, *extra):
    """Overrides for a quick TinyStories run writing to ``run_dir``."""
    return [
        "experiment=tinystories_sentiment",
        f"hydra.run.dir={run_dir}",
        "trainer.progress_bar=false",
        "rollout.batch_size=8",
        "algo.minibatch_size=4",
        "algo.epochs=1",
        "env.max_new_tokens=8",
        *extra,
    ]


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file a finished run wrote, read with :func:`textrl.io.parse_jsonl`;
    the test fails on a torn last line or a non-strict token (``NaN``, ``Infinity``)."""
    from textrl.io import parse_jsonl

    text = Path(path).read_text(encoding="utf-8")
    assert not text or text.endswith("\n"), f"{path}: last line cut short"
    return parse_jsonl(text, source=str(path), strict=True)


def one_line_error(result) -> str:
    """The error line of a failed run (``returncode != 0``, no traceback): its one ``textrl: error:``
    line, else its first non-blank stderr line (a library's warnings, such as a torch
    ``FutureWarning``, may come before it)."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("textrl: error:")]
    assert len(errors) <= 1, result.stderr[-3000:]
    return errors[0] if errors else (lines[0] if lines else "")


def install_plugin(site: Path, module: str, source: str, entry_name: str | None = None) -> None:
    """Write ``module.py`` and a dist-info with a ``textrl`` entry point into ``site``."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{module}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[textrl]\n{entry_name or module} = {module}\n")


def run_main(args, monkeypatch, capsys, env: dict | None = None) -> SimpleNamespace:
    """Run ``textrl ARGS`` through :func:`textrl.cli.main` in this process, as the console script
    does (``sys.argv`` set); returns ``returncode``, ``stdout`` and ``stderr`` like
    :func:`subprocess.run`. ``env`` entries are set for the call; a ``PYTHONPATH`` entry is put on
    ``sys.path`` instead (where a test installed plugins), and the modules imported from it are
    forgotten afterwards. An exception that escapes ``main`` fails the test (it would be a traceback
    on the user's screen). Without ``capsys`` (a module-scoped fixture has none) the output is not
    captured and ``stdout``/``stderr`` are empty.

    Hydra's config store is process-wide: ``main`` registers the ``policy``/``reward``/``algo`` options
    of the plugins it loads there. The call starts with those groups empty, as a fresh process does
    (so an option registered by an earlier test, or by a plugin this call does not load, cannot be
    picked), and they are put back as they were afterwards.
    """
    from hydra.core.config_store import ConfigStore
    from hydra.core.global_hydra import GlobalHydra

    from textrl.cli import main

    env = dict(env or {})
    paths = [p for p in env.pop("PYTHONPATH", "").split(os.pathsep) if p]
    repo = ConfigStore.instance().repo
    plugin_groups = {group: dict(repo.get(group, {})) for group in ("policy", "reward", "algo")}
    modules = set(sys.modules)
    threads = torch.get_num_threads()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "argv", ["textrl", *map(str, args)])
    for path in paths:
        monkeypatch.syspath_prepend(path)
    importlib.invalidate_caches()
    for group in plugin_groups:
        repo.get(group, {}).clear()
    if capsys is not None:
        capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        torch.set_num_threads(threads)  # run() sets trainer.threads for the process
        for group, options in plugin_groups.items():
            repo.setdefault(group, {}).clear()
            repo[group].update(options)
        GlobalHydra.instance().clear()
        for name in set(sys.modules) - modules:
            file = getattr(sys.modules[name], "__file__", None) or ""
            if any(file.startswith(path) for path in paths):
                del sys.modules[name]
    out, err = capsys.readouterr() if capsys is not None else ("", "")
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


@pytest.fixture
def cli(monkeypatch, capsys):
    """``cli(*args, env=None)``: :func:`run_main` bound to this test's monkeypatch and capsys."""
    return lambda *args, env=None: run_main(args, monkeypatch, capsys, env)


@pytest.fixture
def tokenizer():
    return make_tokenizer()


@pytest.fixture
def policy(tokenizer):
    return make_policy(tokenizer)


@pytest.fixture(scope="session")
def assets() -> Path:
    if not (ASSETS / "tinystories-656k" / "config.json").is_file():
        pytest.skip(f"real assets not found at {ASSETS} (set TEXTRL_ASSETS or put shared/ beside the repo)")
    return ASSETS


@pytest.fixture(scope="session")
def built_site(tmp_path_factory) -> Path:
    """The docs site built once per test run with ``mkdocs build --strict`` (the folder of
    ``index.html``): under pytest-xdist the first worker to need it builds it, behind a file lock,
    in the run's shared temporary folder and the others reuse it. The build failing fails every
    test that uses it, with mkdocs's messages."""
    from filelock import FileLock

    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the folder every worker's base temp lives in
    site, failed = shared / "docs-site", shared / "docs-site.failed"
    with FileLock(str(shared / "docs-site.lock")):
        if not (site / "index.html").is_file() and not failed.is_file():
            env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "HF_HUB_OFFLINE": "1"}
            result = subprocess.run(
                [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site)],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=300,
                env=env,
            )
            if result.returncode != 0:
                failed.write_text(result.stderr[-5000:])
    assert not failed.is_file(), failed.read_text()
    return site


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """A static file handler that does not print a line per request."""

    def log_message(self, format, *args) -> None:
        pass


@contextlib.contextmanager
def serve_directory(root: Path):
    """Serve ``root`` over HTTP on a free port of 127.0.0.1 in a background thread; yields the base
    URL (ending in ``/``), and stops the server on exit."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="session")
def site_url(built_site):
    """The base URL of :func:`built_site` served over HTTP (:func:`serve_directory`)."""
    with serve_directory(built_site) as url:
        yield url
