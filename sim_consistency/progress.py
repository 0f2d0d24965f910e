"""Progress and log output: live bars on a terminal, plain periodic lines in log files.

One policy for every loop that reports progress (extraction, probes, CKA grids, training, the
launchers):

* stderr is a terminal (or a Jupyter kernel): a ``tqdm`` bar (``tqdm.auto``, a widget in
  notebooks);
* otherwise (a SLURM log, ``2> file``, a pipe): no ``\\r`` frames. A plain line
  ``<desc>: <n>/<total> <unit> (<pct>%), <rate> <unit>/s, ETA <time>`` is printed each time
  another :data:`STEP_PERCENT` % is done or :data:`INTERVAL_S` seconds have passed since the
  last line, whichever comes first (not at 100 %), then a final ``done`` line with the count,
  the elapsed time and the mean rate.

Log records go through :func:`log_handler`, which writes with ``tqdm.write``: a record printed
while a bar is live clears the bar, prints its own line and redraws the bar below, instead of
being glued onto the bar's line.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

from tqdm import tqdm as _tqdm_text

__all__ = ["INTERVAL_S", "STEP_PERCENT", "PlainProgress", "log_handler", "progress_bar"]

INTERVAL_S = 30.0
"""At most this many seconds between two plain progress lines."""

STEP_PERCENT = 10
"""A plain progress line each time another this-many percent are done."""


def _is_live(stream: IO[str]) -> bool:
    """True when ``stream`` shows live bars: a terminal, or a Jupyter kernel's output."""
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
    return "ipykernel" in sys.modules and stream in (sys.stderr, sys.__stderr__)


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    desc: str = "",
    total: float | None = None,
    unit: str = "it",
    disable: bool = False,
    stream: IO[str] | None = None,
    **bar_options: Any,
) -> Any:
    """Return a progress reporter: a ``tqdm`` bar on a terminal, :class:`PlainProgress` otherwise.

    Used like ``tqdm`` (the subset the package uses): iterate over it, or call ``update(n)``,
    ``set_postfix(...)`` / ``set_postfix_str(...)`` and ``close()`` (or use it in ``with``).

    Args:
        iterable: what to iterate over (its ``len`` is the total when it has one).
        desc: the label of the bar or lines.
        total: the expected count (default: ``len(iterable)``).
        unit: what is counted (``img``, ``block``, ``step``, …).
        disable: report nothing.
        stream: where to write (default: ``sys.stderr`` at call time).
        bar_options: further ``tqdm`` options (``leave``, …), used by bars only.
    """
    stream = sys.stderr if stream is None else stream
    if _is_live(stream):
        tqdm_class: Any = _tqdm_text
        if stream is sys.stderr:
            from tqdm import auto  # a widget in notebooks (imports IPython)

            tqdm_class = auto.tqdm
        return tqdm_class(
            iterable, desc=desc, total=total, unit=unit, disable=disable, file=stream, **bar_options
        )
    return PlainProgress(
        iterable, desc=desc, total=total, unit=unit, disable=disable, stream=stream
    )


class PlainProgress:
    """Progress as plain lines (no ``\\r``): every :data:`STEP_PERCENT` % or :data:`INTERVAL_S` s.

    Args:
        iterable: what to iterate over, or ``None`` when the caller calls :meth:`update`.
        desc: the label of each line.
        total: the expected count (default: ``len(iterable)`` when it has one).
        unit: what is counted.
        disable: print nothing.
        stream: where the lines go.
        interval_s: the most seconds between two lines.
        step_percent: a line each time another ``step_percent`` % is done.
        clock: the time source (``time.monotonic``).
    """

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        desc: str = "",
        total: float | None = None,
        unit: str = "it",
        disable: bool = False,
        stream: IO[str] | None = None,
        interval_s: float = INTERVAL_S,
        step_percent: float = STEP_PERCENT,
        clock: Any = time.monotonic,
    ) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable = iterable
        self.desc = desc
        self.total = total
        self.unit = unit
        self.disable = disable
        self.stream = sys.stderr if stream is None else stream
        self.interval_s = interval_s
        self.step_percent = step_percent
        self.n: float = 0
        self.postfix = ""
        self._clock = clock
        self._start = clock()
        self._last_line = self._start
        self._last_step = 0
        self._closed = False

    # -- tqdm's interface (the part the package uses) ------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("PlainProgress: nothing to iterate over (got iterable=None).")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        """Count ``n`` more done; print a line when a step or the interval is reached."""
        self.n += n
        if self.disable:
            return
        if self.total and self.n >= self.total:
            return  # the final line comes from close()
        now = self._clock()
        step = self._step()
        if step > self._last_step or now - self._last_line >= self.interval_s:
            self._last_step = max(step, self._last_step)
            self._last_line = now
            self._print(self.line(now))

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """Append ``s`` to the following lines (what a bar shows after its counter)."""
        self.postfix = s

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """Append ``key=value`` pairs to the following lines."""
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{key}={value}" for key, value in items.items())

    def close(self) -> None:
        """Print the final line (count, elapsed time) once, if anything was counted."""
        if self._closed:
            return
        self._closed = True
        if self.disable or self.n == 0:
            return
        elapsed = self._clock() - self._start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        count = f"{self.n:g}" + (f"/{self.total:g}" if self.total else "")
        self._print(
            f"{self._label()}done {count} {self.unit} in {_tqdm_text.format_interval(elapsed)} "
            f"({rate:.3g} {self.unit}/s)"
        )

    # -- formatting ----------------------------------------------------------------------------
    def line(self, now: float | None = None) -> str:
        """Return the progress line for the current count."""
        now = self._clock() if now is None else now
        elapsed = now - self._start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        if self.total:
            percent = 100.0 * self.n / self.total
            eta = _tqdm_text.format_interval((self.total - self.n) / rate) if rate > 0 else "?"
            text = (
                f"{self.n:g}/{self.total:g} {self.unit} ({percent:.0f}%), "
                f"{rate:.3g} {self.unit}/s, ETA {eta}"
            )
        else:
            text = f"{self.n:g} {self.unit}, {rate:.3g} {self.unit}/s"
        extra = f" [{self.postfix}]" if self.postfix else ""
        return f"{self._label()}{text}{extra}"

    def _label(self) -> str:
        return f"{self.desc}: " if self.desc else ""

    def _step(self) -> int:
        if not self.total or self.step_percent <= 0:
            return 0
        return int(100.0 * self.n / self.total // self.step_percent)

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)


class _BarSafeHandler(logging.StreamHandler):
    """A stream handler that prints through ``tqdm.write`` (live bars are moved, not torn)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _tqdm_text.write(self.format(record), file=self.stream)
        except Exception:  # logging's contract: report, never raise from emit
            self.handleError(record)


def log_handler(stream: IO[str] | None = None) -> logging.Handler:
    """Return a log handler for ``stream`` (default stderr) that does not tear live bars."""
    return _BarSafeHandler(sys.stderr if stream is None else stream)
