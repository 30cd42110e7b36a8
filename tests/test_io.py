"""Crash-safe writes (textrl/io.py) leave files a teammate can read: the modes an ordinary
``open``/``mkdir`` gives under the user's umask, not mkstemp's 0600 / mkdtemp's 0700."""

from __future__ import annotations

import json
import os
import stat

import pytest

from textrl.io import atomic_save_dir, atomic_write_json, atomic_write_text


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(params=[(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)],
                ids=["umask022", "umask077", "umask002"])
def umask(request):
    """Run the test under a umask; yields (umask, expected file mode, expected directory mode)."""
    mask, file_mode, dir_mode = request.param
    old = os.umask(mask)
    try:
        yield mask, file_mode, dir_mode
    finally:
        os.umask(old)


def test_atomic_files_get_the_umask_mode_of_an_ordinary_write(tmp_path, umask):
    mask, file_mode, _ = umask
    with open(tmp_path / "ordinary.txt", "w") as f:
        f.write("x")
    atomic_write_json(str(tmp_path / "summary.json"), {"a": 1})
    atomic_write_text(str(tmp_path / "notes.txt"), "hello\n")
    assert mode(tmp_path / "ordinary.txt") == file_mode  # the baseline the atomic writes must match
    assert mode(tmp_path / "summary.json") == file_mode
    assert mode(tmp_path / "notes.txt") == file_mode
    assert json.loads((tmp_path / "summary.json").read_text()) == {"a": 1}
    assert os.umask(mask) == mask  # the umask is left as it was


def test_atomic_directories_get_the_umask_mode_of_mkdir(tmp_path, umask):
    _, file_mode, dir_mode = umask
    os.mkdir(tmp_path / "ordinary")

    def save(directory):
        with open(os.path.join(directory, "config.json"), "w") as f:
            f.write("{}")

    atomic_save_dir(str(tmp_path / "policy"), save)
    atomic_save_dir(str(tmp_path / "policy"), save)  # replacing an existing directory too
    assert mode(tmp_path / "ordinary") == dir_mode
    assert mode(tmp_path / "policy") == dir_mode
    assert mode(tmp_path / "policy" / "config.json") == file_mode
    assert sorted(os.listdir(tmp_path)) == ["ordinary", "policy"]  # no temporary leftovers


def test_checkpoints_are_readable_under_umask_022(tmp_path, tokenizer, policy):
    """A checkpoint directory and its files come out 0755/0644 (it goes through atomic_save_dir)."""
    from conftest import compose_config
    from textrl.algorithms.ppo import PPO
    from textrl.checkpoint import save_checkpoint

    old = os.umask(0o022)
    try:
        cfg = compose_config(["experiment=tinystories_sentiment"])
        algo = PPO(lr=1e-3, minibatch_size=2)
        algo.setup(policy, None)
        save_checkpoint(str(tmp_path), 1, cfg, policy, algo, [{}], keep=2)
    finally:
        os.umask(old)
    directories = [d for d, _, _ in os.walk(tmp_path)][1:]  # pytest makes tmp_path itself 0700
    files = [os.path.join(d, f) for d, _, names in os.walk(tmp_path) for f in names]
    assert len(directories) >= 2 and files
    assert {mode(d) for d in directories} == {0o755}
    assert {mode(f) for f in files} == {0o644}
