"""Atomic outputs: a result file exists only once it is complete, and write failures are named.

Writers produce ``<file>.partial`` next to the target and rename it into place when the body of
:func:`atomic_output` finishes without an exception. A crash, a ``KeyboardInterrupt``, a SIGTERM
or a SIGKILL therefore never leaves a file under the final name that a reader could mistake for
a result.

Each ``.partial`` carries an advisory lock (``flock``) for as long as its writer runs. A second
writer of the same output waits for the first to finish and then writes its own copy; a
``.partial`` whose lock is free belongs to a run that died and is removed by the next run that
owns the output (:func:`clean_stale_partial`), never one that a live writer holds.

File-system failures — a full disk (``ENOSPC``, ``EDQUOT``), a read-only mount (``EROFS``),
missing permission (``EACCES``, ``EPERM``) — become :class:`~sim_consistency.errors.OutputWriteError`
naming the path, the file system's free space and what the step needed; the ``.partial`` is
removed. :func:`check_free_space` refuses a write of known size before it starts.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from sim_consistency.errors import OutputWriteError, StageTerminated

__all__ = [
    "WRITE_ERRNOS",
    "atomic_output",
    "atomic_write_json",
    "atomic_write_text",
    "check_free_space",
    "clean_stale_partial",
    "free_bytes",
    "partial_path",
    "raise_if_terminated",
    "sigterm_as_interrupt",
    "write_error",
    "write_errno",
]

log = logging.getLogger("sim_consistency.io")

PARTIAL_SUFFIX = ".partial"

#: errno values that mean "this file system will not take the write" (not a bug of ours).
WRITE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
)

#: Headroom added to a known size before a write: file-format overhead and block rounding.
_MARGIN_FRACTION = 0.05
_MARGIN_BYTES = 64 << 10

#: How libraries that do not raise OSError spell the errno: HDF5 ("errno = 28"), Rust's std
#: ("os error 28", safetensors) and Python's own text re-wrapped by a library ("[Errno 28]").
_ERRNO_IN_TEXT = re.compile(r"errno = (\d+)|os error (\d+)|\[Errno (\d+)\]")


def partial_path(path: str | os.PathLike) -> Path:
    """Return the temporary name under which ``path`` is written (``<path>.partial``)."""
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


def _existing_ancestor(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: str | os.PathLike) -> int | None:
    """Return the bytes available to this user on the file system holding ``path`` (or the
    nearest existing folder above it); ``None`` when it cannot be determined."""
    try:
        return shutil.disk_usage(_existing_ancestor(Path(path))).free
    except OSError:
        return None


def _size(n_bytes: int | None) -> str:
    if n_bytes is None:
        return "an unknown amount"
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def write_errno(exc: BaseException) -> int | None:
    """Return the file-system errno of a failed write (``OSError`` or an HDF5 error whose text
    carries ``errno = N``) when it is one of :data:`WRITE_ERRNOS`, else ``None``."""
    code = getattr(exc, "errno", None)
    if code is None:
        match = _ERRNO_IN_TEXT.search(str(exc))
        code = int(next(g for g in match.groups() if g)) if match else None
    return code if code in WRITE_ERRNOS else None


def write_error(
    path: str | os.PathLike,
    exc: BaseException | None = None,
    *,
    code: int | None = None,
    needed: int | None = None,
    what: str = "this step",
) -> OutputWriteError:
    """Return the one-line :class:`OutputWriteError` for a write to ``path`` that failed.

    Args:
        path: the file (or folder) being written.
        exc: the underlying error (its errno decides the wording).
        code: the errno, when there is no exception (a refused free-space check: ``ENOSPC``).
        needed: bytes the step needed, when known.
        what: what was being written, for the message ("the feature cache", …).
    """
    code = code if code is not None else (write_errno(exc) if exc is not None else None)
    free = free_bytes(path)
    if str(path).endswith(PARTIAL_SUFFIX):  # name the output, not its temporary file
        path = str(path)[: -len(PARTIAL_SUFFIX)]
    needs = f"{what} needs {_size(needed)}" if needed is not None else f"{what} could not finish"
    if code in (errno.ENOSPC, errno.EDQUOT):
        kind = "no space left on device" if code == errno.ENOSPC else "disk quota exceeded"
        hint = "Free space there or point --project_root at a larger file system, then rerun."
    elif code == errno.EFBIG:
        kind = "file too large (over this process's file-size limit, see `ulimit -f`)"
        hint = "Raise the limit or split the work, then rerun."
    elif code == errno.EROFS:
        kind = "read-only file system"
        hint = "Point --project_root at a writable location (or remount it read-write)."
    else:
        kind = "permission denied"
        hint = "Make the folder writable for this user or point --project_root elsewhere."
    detail = f" ({type(exc).__name__}: {_first_line(exc)})" if exc is not None else ""
    return OutputWriteError(
        f"{path}: cannot write: {kind}; {_size(free)} free on that file system, {needs}"
        f"{detail}. {hint}",
        code,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__


def check_free_space(path: str | os.PathLike, needed: int, *, what: str = "this step") -> None:
    """Raise :class:`OutputWriteError` before a write of ``needed`` bytes that cannot fit.

    ``needed`` is grown by 5 % + 64 KiB of headroom (file-format overhead).
    """
    free = free_bytes(path)
    want = int(needed * (1 + _MARGIN_FRACTION)) + _MARGIN_BYTES
    if free is not None and free < want:
        raise write_error(path, code=errno.ENOSPC, needed=want, what=what)


# -- the per-output lock ----------------------------------------------------------------------


def _lock_partial(tmp: Path, *, blocking: bool) -> int | None:
    """Open ``tmp`` (creating it) and take its exclusive ``flock``; return the descriptor.

    The lock is only valid if ``tmp`` still names the locked inode afterwards (a writer that
    finished renamed it away meanwhile): otherwise retry on the new file. With ``blocking``
    false, return ``None`` when another process holds the lock.
    """
    while True:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not blocking:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    return None
            else:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    log.info("%s: another run is writing this output; waiting for it", tmp)
                    fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(tmp).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            return fd
        os.close(fd)  # the file we locked was renamed into place by the writer we waited for


def clean_stale_partial(path: str | os.PathLike) -> bool:
    """Remove ``<path>.partial`` if no live writer holds it; return whether one was removed.

    Called by planners for every output they own, including up-to-date outputs they skip, so
    a killed run's leftover never outlives the next run. A concurrent writer's ``.partial``
    (its lock is held) is left alone.
    """
    tmp = partial_path(path)
    if not tmp.exists():
        return False
    try:
        fd = _lock_partial(tmp, blocking=False)
    except OSError:
        return False  # read-only or vanished: nothing we can or need to do
    if fd is None:
        return False
    try:
        tmp.unlink(missing_ok=True)
    finally:
        os.close(fd)
    log.info("%s: removed the partial file of an earlier run that did not finish", tmp)
    return True


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike, *, needed: int | None = None, what: str = "this step"
) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``path`` when the block succeeds.

    The ``.partial`` is locked for the duration: a concurrent writer of the same output waits,
    a stale one from a crashed run is truncated and reused. On any exception the partial file is
    deleted and the exception propagates (a file-system refusal as
    :class:`OutputWriteError`); ``path`` itself is untouched, so an older complete output
    survives a failed rebuild until the new one is ready.

    Args:
        path: final location of the output.
        needed: bytes the output will take, when known: refused early if they cannot fit.
        what: what is written, for error messages.

    Yields:
        The ``.partial`` path to write to (its parent folder exists; the file exists, empty).

    Raises:
        OutputWriteError: the folder or file cannot be created or written (full disk,
            read-only file system, permission), or ``needed`` bytes do not fit.
    """
    path = Path(path)
    tmp = partial_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if needed is not None:
            check_free_space(path, needed, what=what)
        fd = _lock_partial(tmp, blocking=True)
    except OSError as exc:
        if isinstance(exc, OutputWriteError) or write_errno(exc) is None:
            raise
        raise write_error(exc.filename or path, exc, needed=needed, what=what) from exc
    assert fd is not None
    try:
        try:
            os.ftruncate(fd, 0)  # a stale partial from a crashed run
            yield tmp
            raise_if_terminated()
            if not tmp.exists():
                raise FileNotFoundError(f"{tmp}: the writer finished without creating its output")
            os.replace(tmp, path)
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            if (
                isinstance(exc, Exception)
                and not isinstance(exc, OutputWriteError)
                and write_errno(exc) is not None
            ):
                raise write_error(path, exc, needed=needed, what=what) from exc
            raise
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    data = text.encode()
    with atomic_output(path, needed=len(data), what=f"{Path(path).name}") as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` as indented JSON (sorted keys; non-JSON values as ``str``), atomically."""
    return atomic_write_text(
        path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"
    )


class SigtermState:
    """Whether SIGTERM arrived while :func:`sigterm_as_interrupt` was active."""

    def __init__(self) -> None:
        self.received = False
        self._pid = os.getpid()

    def _handle(self, signum: int, _frame: object) -> None:
        if os.getpid() != self._pid:
            # A forked child that still runs our handler (a DataLoader worker before torch
            # installs its own): end as SIGTERM's default action would, without a traceback.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if self.received:
            return  # already ending: never interrupt the clean-up of the first one
        self.received = True
        # What dies with us (DataLoader workers, their iterators' destructors) is a
        # consequence, not news: keep stderr to the one-line termination message.
        sys.unraisablehook = lambda _report: None
        _quiet_child_exits()
        raise StageTerminated(f"received signal {signal.Signals(signum).name}")


def _quiet_child_exits() -> None:
    """Stop SIGCHLD from raising into the clean-up that SIGTERM starts.

    The same SIGTERM kills DataLoader workers, and torch's SIGCHLD handler turns each worker's
    death into a ``RuntimeError`` raised wherever the main thread is — inside the ``finally``
    and ``except`` blocks that remove ``.partial`` files, or in :func:`run_main`'s reporting.
    After SIGTERM the process is ending, so a worker's death is expected: a no-op handler
    takes its place (not restored; a dead worker is still noticed by the DataLoader's own
    timeout check).
    """
    if hasattr(signal, "SIGCHLD"):
        signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[SigtermState]:
    """Turn SIGTERM into :class:`~sim_consistency.errors.StageTerminated` (a
    ``KeyboardInterrupt``) while the block runs, so every :func:`atomic_output` removes its
    ``.partial`` as on Ctrl-C. Yields a :class:`SigtermState`: when SLURM signals the whole
    job, a DataLoader worker may die first and surface as another error, which the caller can
    then still report as a termination. A no-op outside the main thread.
    """
    state = SigtermState()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    hook = sys.unraisablehook
    previous = signal.signal(signal.SIGTERM, state._handle)
    _ACTIVE.append(state)
    try:
        yield state
    finally:
        _ACTIVE.remove(state)
        signal.signal(signal.SIGTERM, previous)
        if not state.received:  # after SIGTERM the process is ending: stay quiet until exit
            sys.unraisablehook = hook


#: The active SIGTERM states (innermost last); read by :func:`raise_if_terminated`.
_ACTIVE: list[SigtermState] = []


def raise_if_terminated() -> None:
    """Raise :class:`StageTerminated` if SIGTERM arrived, even if the handler's exception was
    swallowed (a signal handled inside a destructor is "unraisable"): called before an output
    is renamed into place and between batches, so a terminated run never completes one."""
    if any(state.received for state in _ACTIVE):
        raise StageTerminated("received signal SIGTERM")
