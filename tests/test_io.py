"""Atomic outputs under hostile conditions: locks, stale partials, refused writes."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from sim_consistency.errors import OutputWriteError, StageTerminated
from sim_consistency.io import (
    atomic_output,
    atomic_write_text,
    check_free_space,
    clean_stale_partial,
    partial_path,
    sigterm_as_interrupt,
    write_error,
)


def test_stale_partial_is_truncated_and_replaced(tmp_path):
    target = tmp_path / "out.txt"
    partial_path(target).write_text("half-written garbage from a killed run")
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and not partial_path(target).exists()


def test_clean_stale_partial_removes_only_unlocked_leftovers(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("valid old output")
    partial_path(target).write_text("leftover")
    assert clean_stale_partial(target) is True
    assert not partial_path(target).exists() and target.read_text() == "valid old output"
    assert clean_stale_partial(target) is False  # nothing to do

    with atomic_output(target) as tmp:  # a live writer holds the lock: its partial survives
        tmp.write_text("in progress")
        assert clean_stale_partial(target) is False
        assert tmp.read_text() == "in progress"
    assert target.read_text() == "in progress"


def test_a_second_writer_waits_for_the_first_and_both_finish(tmp_path):
    target = tmp_path / "out.txt"
    order: list[str] = []

    def second() -> None:
        with atomic_output(target) as tmp:
            order.append("second got the lock")
            tmp.write_text("second")

    with atomic_output(target) as tmp:
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)
        assert order == []  # blocked on the first writer's partial
        tmp.write_text("first")
        order.append("first done")
    thread.join(10)
    assert order == ["first done", "second got the lock"]
    assert target.read_text() == "second" and not partial_path(target).exists()


def test_free_space_check_refuses_early_naming_path_and_sizes(tmp_path):
    with pytest.raises(OutputWriteError, match=r"no space left on device; .* free .* needs") as e:
        check_free_space(tmp_path / "big.h5", 1 << 62, what="the feature cache")
    assert str(tmp_path / "big.h5") in str(e.value) and e.value.errno == errno.ENOSPC
    with pytest.raises(OutputWriteError), atomic_output(tmp_path / "big.h5", needed=1 << 62):
        raise AssertionError("the body must not run")
    assert list(tmp_path.iterdir()) == []


def test_write_error_wording_per_errno(tmp_path):
    cases = {
        errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied",
        errno.EDQUOT: "disk quota exceeded",
        errno.EFBIG: "file too large",
    }
    for code, words in cases.items():
        message = str(write_error(tmp_path / "x.partial", OSError(code, os.strerror(code))))
        assert words in message and f"{tmp_path / 'x'}: cannot write" in message
        assert "x.partial" not in message  # the output is named, not its temporary file


_FSIZE_SCRIPT = """
import resource, signal, sys
from sim_consistency.io import atomic_output
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
try:
    with atomic_output(sys.argv[1]) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"x" * 100_000)
except OSError as exc:
    print(type(exc).__name__, exc)
"""


def test_a_refused_write_becomes_a_named_error_and_removes_the_partial(tmp_path):
    target = tmp_path / "out.bin"
    result = subprocess.run(
        [sys.executable, "-c", _FSIZE_SCRIPT, str(target)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OutputWriteError") and "file too large" in result.stdout
    assert str(target) in result.stdout
    assert not target.exists() and not partial_path(target).exists()


# -- SIGTERM: what dies with the process must not interrupt its clean-up ----------------------


@pytest.fixture
def restore_signal_state(monkeypatch):
    """A SIGTERM inside :func:`sigterm_as_interrupt` leaves the process set up to end quietly
    (no unraisable reports, SIGCHLD a no-op); put this test process back as it was."""
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    previous = signal.getsignal(signal.SIGCHLD)
    yield
    signal.signal(signal.SIGCHLD, previous)


def test_worker_deaths_after_sigterm_do_not_interrupt_the_clean_up(tmp_path, restore_signal_state):
    """The flaky case of SIGTERM with DataLoader workers: the same signal kills the workers,
    and torch's SIGCHLD handler raised "DataLoader worker … is killed by signal" into whatever
    clean-up the main process was running (here: a slow removal of the ``.partial``)."""
    import torch

    target = tmp_path / "out.bin"
    loader = torch.utils.data.DataLoader(list(range(1000)), batch_size=1, num_workers=2)
    cleaned = False
    with (
        pytest.raises(StageTerminated),
        sigterm_as_interrupt() as state,
        atomic_output(target) as tmp,
    ):
        tmp.write_bytes(b"half of an output")
        batches = iter(loader)  # the workers are running (and torch's SIGCHLD handler set)
        next(batches)
        workers = [w.pid for w in batches._workers]
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises StageTerminated here
        finally:
            for pid in workers:  # SIGTERM from another process, as SLURM's reaches them
                subprocess.run(["kill", "-TERM", str(pid)], check=True)
            time.sleep(1.0)  # a slow clean-up on a loaded machine: the workers die meanwhile
            cleaned = True
    assert state.received and cleaned
    assert not partial_path(target).exists() and not target.exists()
    del batches


def test_a_forked_child_ends_by_sigterm_like_the_default_action(restore_signal_state):
    """A DataLoader worker forked while SIGTERM is handled inherits the handler until torch
    installs its own; there it must end as SIGTERM's default would, without a traceback."""
    with sigterm_as_interrupt():
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: signal its readiness, then wait to be terminated
            try:
                os.write(write, b"1")
                time.sleep(30)
            except BaseException:
                os._exit(7)  # the parent's handler raised StageTerminated in the child
            os._exit(0)
        os.read(read, 1)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        os.close(read)
        os.close(write)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
