"""Exceptions raised at the edges of sim-consistency.

Every user-facing error is a :class:`SimcError`, so a stage's ``main`` can print it without a
traceback. Each subclass also derives from the built-in a caller would expect
(``ConfigError`` is a ``ValueError``, ``MissingInputError`` a ``FileNotFoundError``), so code
that does not know about this module still catches them.
"""

from __future__ import annotations

__all__ = [
    "SimcError",
    "ConfigError",
    "DataError",
    "NonFiniteError",
    "MissingInputError",
    "WeightsNotFoundError",
    "CacheError",
    "OfflineError",
    "MergeError",
    "OutputWriteError",
    "CacheIntegrityError",
    "StageTerminated",
]


class SimcError(Exception):
    """Base class of every error sim-consistency raises on purpose."""


class ConfigError(SimcError, ValueError):
    """A config file or argument is invalid (unknown key, bad value, cycle, …)."""


class DataError(SimcError, ValueError):
    """A dataset is malformed: corrupt shard, undecodable image, label out of range, …"""


class NonFiniteError(DataError):
    """Values that must be finite hold NaN or inf: features, logits, merged weights, a curve.

    Raised by :func:`sim_consistency.finite.check_finite`, the one check of the package.
    """


class MissingInputError(SimcError, FileNotFoundError):
    """A file or folder the run needs does not exist."""


class WeightsNotFoundError(MissingInputError):
    """Pretrained weights are not available locally (offline machine, empty cache)."""


class CacheError(SimcError, RuntimeError):
    """A feature cache is incomplete, stale or does not match what it is compared with."""


class OfflineError(SimcError, ConnectionError):
    """A download was requested but the network (or the remote hub) cannot be reached."""


class MergeError(SimcError, ValueError):
    """A merge cannot be computed: incompatible ingredients, empty list, NaN/inf in a result."""


class OutputWriteError(SimcError, OSError):
    """The file system refused a write: full disk, quota, read-only mount or permission.

    The message names the path, the free space and what the step needed; ``errno`` is set.
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.errno = code


class CacheIntegrityError(CacheError):
    """A feature cache is not one of ours, or its stored bytes fail their checksums."""


class StageTerminated(KeyboardInterrupt):
    """The process received SIGTERM (SLURM time limit, ``scancel``): handled like Ctrl-C."""
