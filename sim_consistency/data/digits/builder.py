"""Builder of ``wds/digits``: scikit-learn's 8×8 digits written as real webdataset shards.

The dataset every demo and test runs on, since nothing can be downloaded on the build machines.
``sklearn.datasets.load_digits()`` gives 1,797 images of 8×8 values in ``0..16`` and labels
``0..9``. Each image is stored as a grayscale PNG with pixel ``p = round(v * 255 / 16)``, so
``round(p * 16 / 255)`` gives back ``v`` exactly. Keys are ``s<sklearn index, 7 digits>``
(``s0000123``), so every row can be traced back to ``load_digits()``.

Splits are train/val/test = 60/20/20, stratified by label with ``train_test_split(...,
stratify=y, random_state=0)`` (first 60/40, then the 40 halved); rows within a split are in
sklearn order and written with ``webdataset.TarWriter`` into balanced shards of at most 200
samples, with ``nshards.txt`` per split and ``classnames.txt`` (``zero`` … ``nine``).

The build is atomic: everything is written into a hidden sibling folder that is renamed into
place once complete, with ``build_info.json`` written last. A folder whose ``build_info.json`` is
missing, from another builder version, or whose shards do not match it is rebuilt; a complete
one is reused. Run it with ``python -m sim_consistency.data.digits --project_root DIR [--force]``
(``__main__.py`` of this package calls :func:`main`).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from sim_consistency.errors import SimcError
from sim_consistency.io import write_errno, write_error
from sim_consistency.project import ProjectLocation

if TYPE_CHECKING:
    from sim_consistency.data.digits.derived import DigitsVariant

__all__ = [
    "BUILD_INFO",
    "MAX_SHARD_SAMPLES",
    "SEED",
    "DIGITS_DATASET",
    "DIGITS_CLASSNAMES",
    "DIGITS_SPLITS",
    "BUILDER_VERSION",
    "build_digits",
    "digits_split_indices",
    "digits_key",
    "digits_pixels",
    "main",
]

log = logging.getLogger(__name__)

DIGITS_DATASET = "wds/digits"
DIGITS_CLASSNAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGITS_SPLITS = ("train", "val", "test")
BUILDER_VERSION = 1
"""Bump when the written bytes change: older builds are then detected and rebuilt."""

SEED = 0
MAX_SHARD_SAMPLES = 200
BUILD_INFO = "build_info.json"
_SHARD_MTIME = 0  # fixed integer mtime: same bytes every build, and no pax header per member


def digits_key(sklearn_index: int) -> str:
    """Return the ``__key__`` of ``load_digits()`` row ``sklearn_index`` (``s0000123``)."""
    return f"s{sklearn_index:07d}"


def digits_pixels(values: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """Return 8-bit pixels ``round(v * 255 / 16)`` of digits values ``v`` in ``0..16``.

    The map is injective and ``np.rint(p * 16 / 255)`` inverts it exactly.
    """
    values = np.asarray(values, dtype=np.float64)
    return np.rint(values * 255.0 / 16.0).astype(np.uint8)


def digits_split_indices(labels: npt.ArrayLike, *, seed: int = SEED) -> dict[str, np.ndarray]:
    """Return the sorted ``load_digits()`` row indices of each split (train/val/test = 60/20/20).

    Two stratified ``train_test_split`` calls with ``random_state=seed``: 60/40, then the 40
    halved into val and test.

    Args:
        labels: ``(n,)`` digit labels.
        seed: the split seed.
    """
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    rows = np.arange(labels.size)
    train, rest = train_test_split(rows, test_size=0.4, stratify=labels, random_state=seed)
    val, test = train_test_split(rest, test_size=0.5, stratify=labels[rest], random_state=seed)
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def _png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_split(split_dir: Path, rows: np.ndarray, images: np.ndarray, labels: np.ndarray) -> int:
    """Write one split's shards and ``nshards.txt``; return the number of shards."""
    import webdataset

    split_dir.mkdir(parents=True)
    n_shards = math.ceil(rows.size / MAX_SHARD_SAMPLES)
    for shard_id, shard_rows in enumerate(np.array_split(rows, n_shards)):  # sizes differ by <= 1
        with webdataset.TarWriter(str(split_dir / f"{shard_id}.tar"), mtime=_SHARD_MTIME) as sink:
            for row in shard_rows:
                sink.write(
                    {
                        "__key__": digits_key(int(row)),
                        "png": _png_bytes(digits_pixels(images[row])),
                        "cls": str(int(labels[row])),
                    }
                )
    (split_dir / "nshards.txt").write_text(f"{n_shards}\n")
    return n_shards


def _expected_info(variant: DigitsVariant | None = None) -> dict[str, Any]:
    info = {
        "builder": "sim_consistency.data.digits",
        "builder_version": BUILDER_VERSION,
        "seed": SEED,
        "max_shard_samples": MAX_SHARD_SAMPLES,
    }
    if variant is not None:  # a derived dataset: its recipe decides whether a build is current
        info["variant"] = variant.info()
    return info


def _build_into(folder: Path, variant: DigitsVariant | None = None) -> dict[str, Any]:
    """Write the whole dataset into ``folder`` (which exists and is empty); return the info."""
    import sklearn
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.asarray(digits.images)
    labels = np.asarray(digits.target, dtype=np.int64)
    splits = digits_split_indices(labels, seed=SEED)
    if variant is not None:
        images = variant.apply(images)
    (folder / "classnames.txt").write_text("\n".join(DIGITS_CLASSNAMES) + "\n")
    info: dict[str, Any] = {
        **_expected_info(variant),
        "dataset": DIGITS_DATASET if variant is None else variant.dataset,
        "source": "sklearn.datasets.load_digits",
        "sklearn_version": sklearn.__version__,
        "n_samples": int(labels.size),
        "n_classes": len(DIGITS_CLASSNAMES),
        "splits": {},
    }
    for split in DIGITS_SPLITS:
        rows = splits[split]
        n_shards = _write_split(folder / split, rows, images, labels)
        shard_bytes = [(folder / split / f"{i}.tar").stat().st_size for i in range(n_shards)]
        info["splits"][split] = {
            "n_samples": int(rows.size),
            "n_shards": n_shards,
            "shard_bytes": shard_bytes,
        }
    (folder / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")  # written last
    return info


def _read_build_info(folder: Path, variant: DigitsVariant | None = None) -> dict[str, Any] | None:
    """Return the build info of a complete, current build in ``folder``, else ``None``."""
    try:
        info = json.loads((folder / BUILD_INFO).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or any(
        info.get(name) != value for name, value in _expected_info(variant).items()
    ):
        return None
    if not (folder / "classnames.txt").is_file():
        return None
    splits = info.get("splits")
    if not isinstance(splits, dict) or sorted(splits) != sorted(DIGITS_SPLITS):
        return None
    for split, split_info in splits.items():
        try:
            n_shards = int((folder / split / "nshards.txt").read_text().strip())
            shard_bytes = list(split_info["shard_bytes"])
            sizes = [(folder / split / f"{i}.tar").stat().st_size for i in range(n_shards)]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if n_shards != split_info.get("n_shards") or sizes != shard_bytes:
            return None
    return info


def _install(built: Path, target: Path, variant: DigitsVariant | None = None) -> None:
    """Move the finished build ``built`` to ``target``, replacing an outdated one."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
    try:
        os.replace(built, target)
    except OSError:
        if _read_build_info(target, variant) is None:  # not a concurrent builder that won
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_digits(
    location: ProjectLocation, *, force: bool = False, variant: DigitsVariant | None = None
) -> Path:
    """Build ``wds/digits`` under the project root unless a complete, current build exists.

    Args:
        location: the project root's folders; the dataset goes to
            ``location.wds_dataset_dir("digits")`` (``<root>/datasets/wds/wds_digits``).
        force: rebuild even if a complete build exists.
        variant: build a derived dataset instead (same rows, keys, labels and splits, images
            transformed; see :mod:`sim_consistency.data.digits.derived`), into
            ``location.wds_dataset_dir(variant.name)``.

    Returns:
        The dataset folder.
    """
    target = location.wds_dataset_dir("digits" if variant is None else variant.name)
    dataset = DIGITS_DATASET if variant is None else variant.dataset
    if not force:
        if _read_build_info(target, variant) is not None:
            log.debug("reusing %s (complete build)", target)
            return target
        if target.exists():
            log.warning(
                "%s: incomplete or outdated build of %s (builder version %d expected); rebuilding",
                target,
                dataset,
                BUILDER_VERSION,
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
    try:
        try:
            _build_into(building, variant)
        except OSError as exc:
            if write_errno(exc) is None:
                raise
            raise write_error(target, exc, what=f"building {dataset}") from exc
        if not force and _read_build_info(target, variant) is not None:
            log.debug("%s: a concurrent build finished first; keeping it", target)
            return target
        _install(building, target, variant)
    finally:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True)
    log.info("built %s in %s", dataset, target)
    return target


def main(argv: list[str] | None = None) -> int:
    """Build ``wds/digits`` from the command line; print where it is and the split sizes."""
    parser = argparse.ArgumentParser(
        prog="python -m sim_consistency.data.digits",
        description="Write scikit-learn's 8x8 digits as webdataset shards (wds/digits).",
    )
    parser.add_argument(
        "--project_root",
        default=None,
        help="project root (default: $SIMC_ROOT, else project_root in the checkout)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even a complete build")
    args = parser.parse_args(argv)
    try:
        folder = build_digits(ProjectLocation.resolve(args.project_root), force=args.force)
        info = _read_build_info(folder)
        if info is None:
            raise SimcError(f"{folder}: build finished but its {BUILD_INFO} does not check out.")
    except SimcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{DIGITS_DATASET}: {folder}")
    for split, split_info in info["splits"].items():
        print(
            f"  {split:<5}  {split_info['n_samples']:>5} samples  {split_info['n_shards']} shards"
        )
    return 0
