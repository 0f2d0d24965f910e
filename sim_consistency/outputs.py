"""Content keys of outputs: digests, the key an output records, and why a plan rebuilds it.

Every stage decides "reuse or rebuild" the same way: it hashes what determines an output (the
inputs' content keys, the settings that change the numbers, a code version) into a
*content key* with :func:`json_digest`, reads the key the existing output recorded with
:func:`stored_key`, and asks :func:`plan_reason` — ``"forced"``, ``"missing"``, ``"stale"`` or
``None`` (current: reuse it). Only content enters a key (bytes of files via
:func:`file_digest`, never sizes or modification times), so a copied or touched file is not
rebuilt and an edited one always is.

:func:`folder_plan_reason` is the common case of an output folder whose ``metadata.json``
(written last) records the key. Reused outputs are counted for the stage's summary
(:func:`count_reused`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sim_consistency.io import clean_stale_partial

__all__ = [
    "METADATA_FILE",
    "count_reused",
    "file_digest",
    "folder_plan_reason",
    "json_digest",
    "note_reused",
    "plan_reason",
    "read_json_record",
    "stored_key",
]

log = logging.getLogger("sim_consistency.outputs")

#: The file an output folder writes last; it records the folder's content key.
METADATA_FILE = "metadata.json"

_HDF5_SUFFIXES = (".h5", ".hdf5")


def json_digest(payload: Any) -> str:
    """Return the hex SHA-256 of ``payload`` as JSON (sorted keys; non-JSON values by ``str``).

    The one content-key digest of the package: two payloads that serialise alike get the same
    key. For JSON-native payloads it equals ``sha256(json.dumps(payload, sort_keys=True))``.
    """
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def file_digest(path: str | os.PathLike, *, chunk_size: int = 1 << 20) -> str:
    """Return the hex SHA-256 of a file's bytes (read in chunks; content only, never mtime)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_json_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """Return the JSON object stored in ``path`` (None if absent, unreadable or not an object)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def stored_key(path: str | os.PathLike, *, key: str = "content_key") -> str | None:
    """Return the content key an output recorded (None if absent or unreadable).

    ``path`` is a JSON file (``metadata.json``, ``results.json``), an HDF5 file (the key is a
    root attribute), or a folder (its ``metadata.json``).
    """
    path = Path(path)
    if path.is_dir():
        path = path / METADATA_FILE
    if path.suffix in _HDF5_SUFFIXES:
        if not path.is_file():
            return None
        import h5py

        try:
            with h5py.File(path, "r", locking=False) as f:
                value = f.attrs.get(key)
        except OSError:
            return None
        return None if value is None else str(value)
    record = read_json_record(path)
    value = None if record is None else record.get(key)
    return None if value is None else str(value)


_reused: list[list[str]] = []


@contextlib.contextmanager
def count_reused() -> Iterator[list[str]]:
    """Collect, while the block runs, the outputs :func:`plan_reason` found current.

    The runtime wraps planning in it to report how many outputs were reused.
    """
    found: list[str] = []
    _reused.append(found)
    try:
        yield found
    finally:
        _reused.remove(found)


def plan_reason(
    where: str | os.PathLike,
    key: str,
    stored: str | None,
    *,
    force: bool = False,
    complete: bool = True,
) -> str | None:
    """Return why the output at ``where`` must be (re)built, or None when it is current.

    ``"forced"`` with ``force``; ``"missing"`` when no key is stored or the output is not
    ``complete`` (a file of it is absent); ``"stale"`` when the stored key differs from
    ``key``. A current output is logged as skipped and counted as reused.
    """
    if force:
        return "forced"
    if stored is None or not complete:
        return "missing"
    if stored != key:
        log.info("%s: content key changed (%s… -> %s…); rebuilding", where, stored[:10], key[:10])
        return "stale"
    log.info("%s: up to date (content key %s…), skipped", where, key[:10])
    note_reused(where)
    return None


def note_reused(where: str | os.PathLike) -> None:
    """Count ``where`` as reused (for planners whose currency test is their own)."""
    for found in _reused:
        found.append(str(where))


def folder_plan_reason(
    folder: Path,
    key: str,
    outputs: Sequence[str],
    force: bool,
    *,
    metadata: str = METADATA_FILE,
) -> str | None:
    """Return why ``folder`` must be (re)built — forced, missing or stale — or None if current.

    Current means: every file of ``outputs`` exists and ``metadata`` (written last) records
    ``key``. A ``.partial`` of these files left by a killed run is removed here, whatever the
    verdict.
    """
    for name in (*outputs, metadata):
        clean_stale_partial(folder / name)
    complete = all((folder / name).is_file() for name in outputs)
    return plan_reason(folder, key, stored_key(folder / metadata), force=force, complete=complete)
