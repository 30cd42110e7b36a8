"""Faults a long run meets, each ending in one line and a run that resumes exactly: a full disk
(or a missing permission) while an output is written, SIGTERM/SIGINT, a damaged newest
checkpoint.

The full disk is simulated (no root, no small file system needed): the writer raises
``OSError(ENOSPC)`` or torch's errno-less ``RuntimeError``, or writes to ``/dev/full``. The
signal test runs a subprocess that signals itself after a fixed update
(``TEXTRL_TEST_SIGNAL_AT_UPDATE``, :mod:`textrl.signals`); the other runs go through the
command's entry function in this process (:func:`conftest.run_main`).
"""

from __future__ import annotations

import errno
import json
import os
import signal
from pathlib import Path

import pytest
import torch

from conftest import fast, read_jsonl, run_main, textrl
from textrl.checkpoint import STATE_FILE, list_checkpoints
from textrl.errors import WriteError
from textrl.io import current_umask
from textrl.signals import TEST_SIGNAL_AT_UPDATE, StopSignals

UPDATES = 4


def run_args(out, *extra):
    return fast(
        out,
        "seed=3",
        f"trainer.updates={UPDATES}",
        "trainer.threads=1",
        "logger=none",
        "trainer.save_policy=false",
        *extra,
    )


def comparable(records):
    """Metrics without wall-clock timings."""
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in records]


def error_line(result) -> str:
    """The one ``textrl: error:`` line of a failed run (exit status 1, no traceback)."""
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("textrl: error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


@pytest.fixture(scope="module")
def whole(assets, tmp_path_factory) -> list[dict]:
    """metrics.jsonl of the uninterrupted run every faulted run must end up equal to."""
    out = tmp_path_factory.mktemp("whole") / "run"
    with pytest.MonkeyPatch.context() as monkeypatch:
        result = run_main(run_args(out), monkeypatch, None)
    assert result.returncode == 0
    return comparable(read_jsonl(out / "metrics.jsonl"))


def test_sigterm_checkpoints_at_the_update_and_resume_equals_an_uninterrupted_run(whole, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    stopped = textrl(*run_args(out), env={TEST_SIGNAL_AT_UPDATE: "2"})  # SIGTERM once update 2 is logged
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    line = stopped.stderr.splitlines()[-1]
    assert line == (
        f"textrl: stopped by SIGTERM after update 2 of {UPDATES}, checkpoint written to "
        f"'{out / 'checkpoints' / 'update_000002'}'; continue with trainer.resume=auto "
        f"hydra.run.dir={out}"
    ), line
    # the default trainer.checkpoint_every=0 writes none before the end: this one is the signal's
    assert [Path(p).name for p in list_checkpoints(str(out))] == ["update_000002"]
    assert [r["update"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2]
    assert not (out / "summary.json").exists()

    resumed = run_main(run_args(out, "trainer.resume=auto"), monkeypatch, capsys)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert comparable(read_jsonl(out / "metrics.jsonl")) == whole


def test_sigint_stops_with_one_line_and_status_130(assets, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    before = signal.getsignal(signal.SIGINT)
    monkeypatch.setenv(TEST_SIGNAL_AT_UPDATE, "1:INT")  # Ctrl-C once update 1 is logged
    result = run_main(fast(out, "trainer.updates=3", "logger=none", "trainer.save_policy=false"), monkeypatch, capsys)
    assert result.returncode == 128 + signal.SIGINT
    assert "Traceback" not in result.stderr and "KeyboardInterrupt" not in result.stderr, result.stderr[-3000:]
    stopped = [line for line in result.stderr.splitlines() if line.startswith("textrl: stopped")]
    assert len(stopped) == 1 and "stopped by SIGINT after update 1 of 3" in stopped[0], result.stderr[-3000:]
    assert [Path(p).name for p in list_checkpoints(str(out))] == ["update_000001"]
    assert signal.getsignal(signal.SIGINT) is before  # the stage's handler is gone


SFT = (
    "stage=sft",
    "policy=tinystories",
    "sft.max_examples=40",
    "sft.batch_size=8",
    "sft.max_length=64",
    "sft.eval_fraction=0.1",
    "logger=none",
    "trainer.progress_bar=false",
    "trainer.threads=1",
)


def sft_metrics(path: Path) -> list[dict]:
    """An SFT run's metrics without the Trainer's timings."""
    return [
        {k: v for k, v in r.items() if not any(t in k for t in ("runtime", "per_second", "preparation_time"))}
        for r in read_jsonl(path)
    ]


def test_sft_stops_through_the_trainers_checkpoint_and_resumes_exactly(assets, tmp_path, monkeypatch, capsys):
    whole = tmp_path / "whole"
    assert run_main([*SFT, f"hydra.run.dir={whole}"], monkeypatch, capsys).returncode == 0

    out = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setenv(TEST_SIGNAL_AT_UPDATE, "2")  # SIGTERM after optimizer step 2 of 5
        stopped = run_main([*SFT, f"hydra.run.dir={out}"], monkeypatch, capsys)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert stopped.stderr.splitlines()[-1] == (
        f"textrl: stopped by SIGTERM after step 2 of 5, checkpoint written to "
        f"'{out / 'checkpoints' / 'checkpoint-2'}'; continue with "
        f"trainer.resume=auto hydra.run.dir={out}"
    )
    assert not (out / "model").exists()
    readable = 0o666 & ~current_umask()  # safetensors writes 0600; the Trainer's checkpoint is made readable
    assert {f.stat().st_mode & 0o777 for f in (out / "checkpoints").rglob("*") if f.is_file()} == {readable}
    assert {f.stat().st_mode & 0o777 for f in (whole / "model").rglob("*") if f.is_file()} == {readable}

    resumed = run_main([*SFT, f"hydra.run.dir={out}", "trainer.resume=auto"], monkeypatch, capsys)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert sft_metrics(out / "metrics.jsonl") == sft_metrics(whole / "metrics.jsonl")
    ours, theirs = (json.loads((d / "summary.json").read_text()) for d in (out, whole))
    assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-12)
    assert ours["eval_loss_after"] == theirs["eval_loss_after"] and ours["resumed_at_step"] == 2
    assert not (out / "checkpoints").exists()  # removed once the model is saved


def test_sft_checkpoint_on_a_full_disk_is_one_line(assets, tmp_path, monkeypatch, capsys):
    """The Trainer's own torch.save to a path fails as torch does on a full disk (no errno)."""
    import textrl.io as io

    def full_disk(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    out = tmp_path / "run"
    monkeypatch.setattr(io, "free_bytes", lambda path: 0)
    monkeypatch.setattr(torch, "save", full_disk)
    monkeypatch.setenv(TEST_SIGNAL_AT_UPDATE, "2")
    line = error_line(run_main([*SFT, f"hydra.run.dir={out}"], monkeypatch, capsys))
    assert line.startswith(
        f"textrl: error: {out / 'checkpoints' / 'checkpoint-2'}: cannot write (No space left on device)"
    ), line
    assert not (out / "checkpoints" / "checkpoint-2").exists()  # the partial checkpoint is removed


def test_rm_stops_after_the_step_with_one_line(tmp_path):
    """Through the command (a subprocess): Ctrl-C must not end in a KeyboardInterrupt traceback."""
    from conftest import make_policy, make_tokenizer

    tokenizer = make_tokenizer()
    make_policy(tokenizer).lm.save_pretrained(tmp_path / "sft")
    tokenizer.save_pretrained(tmp_path / "sft")
    data = tmp_path / "pairs.jsonl"
    data.write_text(
        "".join(
            json.dumps({"prompt": f"the dog {i}", "chosen": "happy day", "rejected": "sad day"}) + "\n"
            for i in range(20)
        )
    )
    out = tmp_path / "rm"
    result = textrl(
        "stage=rm",
        f"rm.model={tmp_path / 'sft'}",
        "rm.gguf_file=null",
        f"rm.data={data}",
        "rm.batch_size=4",
        "rm.max_length=16",
        "logger=none",
        "trainer.progress_bar=false",
        f"hydra.run.dir={out}",
        env={TEST_SIGNAL_AT_UPDATE: "1:INT"},
    )  # Ctrl-C after step 1
    assert result.returncode == 128 + signal.SIGINT, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "KeyboardInterrupt" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("textrl: stopped by SIGINT after step 1 of ")
    assert "stage=rm writes no checkpoint: run it again" in result.stderr.splitlines()[-1]
    assert not (out / "model").exists()


def test_a_second_signal_exits_at_once_and_handlers_are_restored():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM  # first: only recorded
        with pytest.raises(SystemExit) as exit_:
            os.kill(os.getpid(), signal.SIGINT)
    assert exit_.value.code == 128 + signal.SIGINT
    assert {s: signal.getsignal(s) for s in before} == before


def test_disk_full_while_checkpointing_is_one_line_and_resumes_exactly(whole, tmp_path, monkeypatch, capsys):
    """The second checkpoint's write fails half-way: one line naming the file, the cause and how to
    resume; no temporary directory left; the first checkpoint intact; resume=auto finishes the run
    with the uninterrupted run's metrics."""
    real_save, calls = torch.save, []

    def full_disk(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            f.write(b"PK\x03\x04partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(torch, "save", full_disk)
    line = error_line(run_main(run_args(out, "trainer.checkpoint_every=2"), monkeypatch, capsys))
    monkeypatch.setattr(torch, "save", real_save)
    assert line.startswith(
        f"textrl: error: {out / 'checkpoints' / 'update_000004' / STATE_FILE}: cannot write (No space left on device)"
    ), line
    assert f"the last checkpoint is '{out / 'checkpoints' / 'update_000002'}'" in line, line
    assert f"continue with trainer.resume=auto hydra.run.dir={out}" in line, line
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["update_000002"]  # no .tmp-* left behind
    assert torch.load(out / "checkpoints" / "update_000002" / STATE_FILE, weights_only=False)["update"] == 2
    assert not (out / "summary.json").exists()

    resumed = run_main(run_args(out, "trainer.checkpoint_every=2", "trainer.resume=auto"), monkeypatch, capsys)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert comparable(read_jsonl(out / "metrics.jsonl")) == whole
    assert json.loads((out / "summary.json").read_text())["updates"] == UPDATES


def test_damaged_newest_checkpoint_is_skipped_by_auto_and_refused_by_path(whole, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    first = run_main(run_args(out, "trainer.checkpoint_every=1"), monkeypatch, capsys)
    assert first.returncode == 0, first.stderr[-3000:]
    newest = out / "checkpoints" / "update_000004"
    state = newest / STATE_FILE
    state.write_bytes(state.read_bytes()[:1000])  # truncated, as a full disk or a kill outside textrl leaves it

    line = error_line(run_main(run_args(out, f"trainer.resume={newest}"), monkeypatch, capsys))
    assert f"trainer.resume: cannot read '{state}'" in line, line

    resumed = run_main(run_args(out, "trainer.checkpoint_every=1", "trainer.resume=auto"), monkeypatch, capsys)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    warnings = [line for line in (resumed.stdout + resumed.stderr).splitlines() if "skipping checkpoint" in line]
    assert len(warnings) == 1 and str(newest) in warnings[0], resumed.stdout + resumed.stderr
    assert comparable(read_jsonl(out / "metrics.jsonl")) == whole  # update 4 run again from update 3's checkpoint
    assert torch.load(state, weights_only=False)["update"] == 4  # rewritten whole


def test_resume_auto_with_no_readable_checkpoint_is_one_line(tmp_path):
    from textrl.checkpoint import UnreadableCheckpoint, load_resume_checkpoint

    for update in (1, 2):
        folder = tmp_path / "checkpoints" / f"update_{update:06d}"
        folder.mkdir(parents=True)
        (folder / STATE_FILE).write_bytes(b"not a zip")
    with pytest.raises(UnreadableCheckpoint, match="none of the 2 checkpoints .* can be read") as e:
        load_resume_checkpoint("auto", str(tmp_path), cfg=None)
    assert "\n" not in str(e.value)


# the writers of textrl.io, each failing as a full disk or a missing permission makes it fail


def test_torch_save_to_a_full_device_is_a_write_error(tmp_path):
    import stat

    from textrl.io import save_torch

    if not (os.path.exists("/dev/full") and stat.S_ISCHR(os.stat("/dev/full").st_mode)):
        pytest.skip("no /dev/full device here")
    with pytest.raises(WriteError, match="^/dev/full: cannot write \\(No space left on device\\)") as e:
        save_torch({"w": torch.zeros(10_000)}, "/dev/full")  # a real ENOSPC from the kernel
    assert e.value.errno == errno.ENOSPC


@pytest.mark.parametrize("free, reason", [(0, "No space left on device"), (10 << 30, "Input/output error")])
def test_torch_writer_failure_without_errno_is_read_from_the_free_space(tmp_path, monkeypatch, free, reason):
    """torch.save to a path on a full disk raises RuntimeError('... unexpected pos ...'), no errno."""
    import textrl.io as io

    monkeypatch.setattr(io, "free_bytes", lambda path: free)

    def save(tmp):
        (Path(tmp) / STATE_FILE).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    target = tmp_path / "checkpoints" / "update_000001"
    with pytest.raises(WriteError) as e:
        io.atomic_save_dir(str(target), save)
    assert str(e.value) == (f"{target}: cannot write ({reason}); expected a writable directory with free space")
    assert os.listdir(tmp_path / "checkpoints") == []  # the temporary directory is gone


def test_other_errors_in_a_save_pass_unchanged(tmp_path):
    from textrl.io import atomic_save_dir

    def save(tmp):
        raise RuntimeError("a bug, not the disk")

    with pytest.raises(RuntimeError, match="a bug, not the disk"):
        atomic_save_dir(str(tmp_path / "policy"), save)
    assert os.listdir(tmp_path) == []


def test_failed_append_leaves_whole_lines_only(tmp_path, monkeypatch):
    import textrl.io as io

    path = tmp_path / "metrics.jsonl"
    io.append_jsonl(str(path), {"update": 1})
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(io.os, "write", half_then_full)
    with pytest.raises(WriteError, match=f"^{path}: cannot write \\(No space left on device\\)"):
        io.append_jsonl(str(path), {"update": 2, "objective/score": 0.5})
    monkeypatch.setattr(io.os, "write", real_write)
    assert path.read_text() == '{"update": 1}\n'


def test_permission_denied_names_the_file_and_leaves_it_as_it_was(tmp_path, monkeypatch):
    import tempfile

    import textrl.io as io

    path = tmp_path / "summary.json"
    path.write_text("{}\n")

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path))

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(WriteError, match=f"^{path}: cannot write \\(Permission denied\\)"):
        io.atomic_write_json(str(path), {"a": 1})
    assert path.read_text() == "{}\n"
