"""Crash-safe writes (textrl/io.py) leave files a teammate can read: the modes an ordinary
``open``/``mkdir`` gives under the user's umask, not mkstemp's 0600 / mkdtemp's 0700. The one
JSON-lines reader's torn-line rule, and the first-line-of-an-error helper."""

from __future__ import annotations

import json
import os
import stat

import pytest

from textrl.errors import TextRLError, first_line
from textrl.io import (
    append_jsonl,
    atomic_save_dir,
    atomic_write_json,
    atomic_write_text,
    parse_jsonl,
    read_jsonl,
    write_jsonl,
)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(
    params=[(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)],
    ids=["umask022", "umask077", "umask002"],
)
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


def test_atomic_directories_give_what_a_library_wrote_inside_the_umask_mode(tmp_path, umask):
    """safetensors writes its files 0600 whatever the umask; a saved model must still be readable."""
    import torch
    from safetensors.torch import save_file

    _, file_mode, dir_mode = umask

    def save(directory):
        save_file({"w": torch.zeros(2)}, os.path.join(directory, "model.safetensors"))
        os.makedirs(os.path.join(directory, "adapter"))
        save_file({"w": torch.zeros(2)}, os.path.join(directory, "adapter", "adapter_model.safetensors"))
        script = os.path.join(directory, "run.sh")
        with open(script, "w") as f:
            f.write("#!/bin/sh\n")
        os.chmod(script, 0o700)

    atomic_save_dir(str(tmp_path / "policy"), save)
    policy = tmp_path / "policy"
    assert mode(policy / "model.safetensors") == file_mode
    assert mode(policy / "adapter" / "adapter_model.safetensors") == file_mode
    assert mode(policy / "adapter") == dir_mode
    assert mode(policy / "run.sh") == dir_mode  # an executable stays executable: 0o777 & ~umask


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


def test_jsonl_skips_only_a_torn_last_line(tmp_path, caplog):
    assert parse_jsonl('{"update": 1}\n{"update": 2}\n{"upda') == [{"update": 1}, {"update": 2}]
    assert "cut short" in caplog.text
    assert parse_jsonl('{"a": 1}\n\n  \n{"a": 2}\n') == [{"a": 1}, {"a": 2}]  # blank lines skipped
    assert parse_jsonl('{"t": "x\u2028y"}\n') == [{"t": "x\u2028y"}]  # U+2028 is text, not a line break
    with pytest.raises(json.JSONDecodeError) as e:  # a broken last line that ends in a newline was written whole
        parse_jsonl('{"a": 1}\n{"upda\n')
    assert e.value.lineno == 2
    with pytest.raises(json.JSONDecodeError) as e:  # a broken middle line: the line number in the file
        parse_jsonl('{"a": 1}\n{"a": 2}\n{oops\n{"a": 3}')
    assert (e.value.lineno, e.value.colno) == (3, 2)


def test_jsonl_strict_rejects_nan_tokens():
    assert parse_jsonl('{"x": NaN}\n')[0]["x"] != 0.0  # Python's json reads NaN
    with pytest.raises(json.JSONDecodeError, match="NaN is not strict JSON"):
        parse_jsonl('{"x": NaN}\n', strict=True)


def test_jsonl_written_and_appended_round_trips_with_nan_as_null(tmp_path):
    path = str(tmp_path / "metrics.jsonl")
    write_jsonl(path, [{"update": 1, "x": float("nan")}])
    append_jsonl(path, {"update": 2, "x": 0.5})
    assert (
        read_jsonl(path)
        == parse_jsonl(open(path).read(), strict=True)
        == [{"update": 1, "x": None}, {"update": 2, "x": 0.5}]
    )
    with open(path, "a") as f:
        f.write('{"oops"\n{"update": 3}\n')
    with pytest.raises(TextRLError, match=r"^trainer.resume: '.*metrics.jsonl' line 3 is not JSON \(.*\); expected"):
        read_jsonl(path, key="trainer.resume")


def test_first_line_of_an_error():
    assert first_line(ValueError("bad value\n  details\n")) == "bad value"
    assert first_line(RuntimeError()) == ""
    assert first_line("one\ntwo") == "one"
