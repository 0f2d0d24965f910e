"""Weights & Biases logging for ``--wandb``: a stage's config, metrics and result tables.

Off unless asked (``--wandb``); when on, the run is written offline under
``<root>/logs/wandb`` (``wandb sync`` uploads it later) unless the user has configured wandb:
``WANDB_MODE`` set, ``WANDB_API_KEY`` set, or a login in ``~/.netrc``. ``WANDB_PROJECT`` /
``WANDB_ENTITY`` / ``WANDB_DIR`` are honoured as wandb documents them. Nothing here is global:
a stage opens one :class:`Tracker` per run and closes it.
"""

from __future__ import annotations

import netrc
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast, get_args

from sim_consistency.errors import ConfigError
from sim_consistency.jsonable import jsonable
from sim_consistency.project import ProjectLocation

__all__ = ["Tracker", "start_tracking", "wandb_mode"]

DEFAULT_PROJECT = "sim-consistency"
#: The modes ``wandb.init`` takes; wandb's legacy ``dryrun`` / ``run`` mean offline / online.
WandbMode = Literal["online", "offline", "disabled", "shared"]
_LEGACY_MODES: dict[str, WandbMode] = {"dryrun": "offline", "run": "online"}


def _checked_mode(mode: str) -> WandbMode:
    if mode in _LEGACY_MODES:
        return _LEGACY_MODES[mode]
    if mode not in get_args(WandbMode):
        raise ConfigError(
            f"wandb mode {mode!r} (WANDB_MODE or mode=) is not one of "
            f"{', '.join(get_args(WandbMode))}."
        )
    return cast(WandbMode, mode)


def wandb_mode(environ: Mapping[str, str] | None = None, netrc_file: Path | None = None) -> str:
    """Return ``WANDB_MODE`` if set, ``online`` when the user has credentials, else ``offline``."""
    environ = os.environ if environ is None else environ
    if environ.get("WANDB_MODE"):
        return environ["WANDB_MODE"]
    if environ.get("WANDB_API_KEY"):
        return "online"
    path = netrc_file or Path(environ.get("NETRC", Path.home() / ".netrc"))
    try:
        if path.is_file() and netrc.netrc(path).authenticators("api.wandb.ai"):
            return "online"
    except (netrc.NetrcParseError, OSError):
        pass
    return "offline"


class Tracker:
    """A stage's wandb run, or a no-op when tracking is off (``enabled=False``).

    Use as a context manager; :meth:`log_metrics` and :meth:`log_table` may be called any
    number of times.
    """

    def __init__(self, run: Any = None) -> None:
        self._run = run

    @property
    def enabled(self) -> bool:
        return self._run is not None

    @property
    def run_dir(self) -> Path | None:
        """The run's local folder (``…/wandb/offline-run-*`` offline), or ``None`` when off."""
        return Path(self._run.dir).parent if self._run is not None else None

    def log_metrics(self, metrics: Mapping[str, float | int]) -> None:
        """Log scalar metrics (also kept in the run's summary)."""
        if self._run is not None:
            self._run.log(dict(metrics))
            self._run.summary.update(dict(metrics))

    def log_table(self, name: str, rows: Sequence[Mapping[str, Any]] | Any) -> None:
        """Log a result table: a list of row dicts or a pandas DataFrame."""
        if self._run is None:
            return
        import wandb

        if hasattr(rows, "to_dict"):
            table = wandb.Table(dataframe=rows)
        else:
            rows = list(rows)
            columns = list(dict.fromkeys(k for row in rows for k in row))
            data = [[jsonable(row.get(c)) for c in columns] for row in rows]
            table = wandb.Table(columns=columns, data=data)
        self._run.log({name: table})

    def finish(self, exit_code: int = 0) -> None:
        """Close the run and wait until wandb has written all of it (run files complete)."""
        if self._run is not None:
            import wandb

            self._run.finish(exit_code=exit_code)
            self._run = None
            # finish() returns before wandb's service has flushed the run file; teardown waits.
            wandb.teardown(exit_code=exit_code)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)


def start_tracking(
    enabled: bool,
    *,
    stage: str,
    config: Mapping[str, Any],
    location: ProjectLocation,
    mode: str | None = None,
) -> Tracker:
    """Open a wandb run for ``stage`` with its config, or a no-op tracker when not enabled.

    Args:
        enabled: the stage's ``--wandb`` flag.
        stage: job type and run-name prefix (``feature_extraction``).
        config: the run's settings (paths become strings).
        location: project root; runs are written under ``<root>/logs/wandb`` unless
            ``WANDB_DIR`` says otherwise.
        mode: ``offline`` / ``online`` / ``disabled``; default :func:`wandb_mode`.
    """
    if not enabled:
        return Tracker()
    import wandb

    directory = Path(os.environ.get("WANDB_DIR") or location.logs / "wandb")
    directory.mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=os.environ.get("WANDB_PROJECT", DEFAULT_PROJECT),
        job_type=stage,
        group=stage,
        config=jsonable(config),
        dir=str(directory),
        mode=_checked_mode(mode or wandb_mode()),
        reinit="finish_previous",
        settings=wandb.Settings(console="off", silent=True),
    )
    return Tracker(run)
