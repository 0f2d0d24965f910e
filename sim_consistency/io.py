"""Atomic outputs: a result file exists only once it is complete.

Writers produce ``<file>.partial`` next to the target and rename it into place when the body of
:func:`atomic_output` finishes without an exception. A crash, a ``KeyboardInterrupt`` or a SIGKILL
therefore never leaves a file under the final name that a reader could mistake for a result.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_output", "partial_path", "atomic_write_text"]

PARTIAL_SUFFIX = ".partial"


def partial_path(path: str | os.PathLike) -> Path:
    """Return the temporary name under which ``path`` is written (``<path>.partial``)."""
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``path`` when the block succeeds.

    A stale ``.partial`` from an earlier crashed run is removed first. On any exception the
    partial file is deleted and the exception propagates; ``path`` itself is untouched, so an
    older complete output survives a failed rebuild until the new one is ready.

    Args:
        path: final location of the output.

    Yields:
        The ``.partial`` path to write to (its parent folder exists).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if not tmp.exists():
        raise FileNotFoundError(f"{tmp}: the writer finished without creating its output")
    os.replace(tmp, path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return Path(path)
