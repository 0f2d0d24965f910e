"""Datasets derived from ``wds/digits``: the same rows with transformed images.

A second dataset for cross-dataset studies (Rep2Rep consistency: do model×model similarities
agree across datasets?) that needs no download. Each :class:`DigitsVariant` keeps everything of
``wds/digits`` — ``load_digits()`` rows, ``__key__`` (``s0000123``), labels, train/val/test
splits and shard layout — and only transforms the 8×8 images, so a row of ``wds/digits_rotated``
is the same digit as the row with the same key in ``wds/digits``. They are written by the
digits builder (:func:`~sim_consistency.data.digits.build_digits` with ``variant=``) and, being
listed in :data:`~sim_consistency.data.resolve.DATASET_BUILDERS`, built on first use.

* ``wds/digits_rotated`` — every image rotated by 90° counter-clockwise (``np.rot90``: exact,
  no interpolation, values unchanged).
* ``wds/digits_noisy`` — additive Gaussian noise, σ = 2 on the 0..16 value scale, drawn once for
  the whole ``load_digits()`` array with ``default_rng(seed)`` (so a row's noise does not depend
  on the split), clipped to ``[0, 16]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sim_consistency.data.digits.builder import build_digits
from sim_consistency.project import ProjectLocation

__all__ = [
    "DIGITS_VARIANTS",
    "DigitsVariant",
    "build_digits_noisy",
    "build_digits_rotated",
    "noisy_values",
    "rotated_values",
]

DIGITS_MAX_VALUE = 16.0
"""``load_digits()`` values lie in ``0..16``."""


def rotated_values(images: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Return ``(n, 8, 8)`` digits values rotated by 90° counter-clockwise (exact)."""
    return np.ascontiguousarray(np.rot90(np.asarray(images, dtype=np.float64), k=1, axes=(1, 2)))


def noisy_values(
    images: npt.NDArray[np.float64], *, sigma: float = 2.0, seed: int = 0
) -> npt.NDArray[np.float64]:
    """Return ``images + N(0, sigma²)`` clipped to ``[0, 16]`` (one seeded draw for all rows)."""
    images = np.asarray(images, dtype=np.float64)
    noise = np.random.default_rng(seed).normal(0.0, sigma, size=images.shape)
    return np.clip(images + noise, 0.0, DIGITS_MAX_VALUE)


@dataclass(frozen=True)
class DigitsVariant:
    """A dataset derived from ``wds/digits`` by transforming its images.

    Attributes:
        name: ``wds/<name>`` names the dataset; its folder is ``wds_<name>``.
        transform: ``(n, 8, 8)`` float64 values in ``0..16`` -> same shape and range.
        params: what ``transform`` depends on (written to ``build_info.json``: a build made
            with other parameters or another ``version`` is rebuilt).
        version: bump when ``transform`` changes the written bytes.
    """

    name: str
    transform: Callable[..., npt.NDArray[np.float64]]
    params: dict[str, Any] = field(default_factory=dict)
    version: int = 1

    @property
    def dataset(self) -> str:
        """The dataset name, ``wds/<name>``."""
        return f"wds/{self.name}"

    def apply(self, images: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Return the transformed ``(n, 8, 8)`` values."""
        out = self.transform(images, **self.params)
        if out.shape != images.shape:  # our own invariant: keys and rows stay aligned
            raise AssertionError(f"{self.name}: transform changed shape {images.shape}")
        return out

    def info(self) -> dict[str, Any]:
        """JSON description recorded in ``build_info.json``."""
        return {"name": self.name, "version": self.version, "params": dict(self.params)}


#: Derived datasets by name (``wds/<name>``).
DIGITS_VARIANTS: dict[str, DigitsVariant] = {
    "digits_rotated": DigitsVariant("digits_rotated", rotated_values),
    "digits_noisy": DigitsVariant("digits_noisy", noisy_values, {"sigma": 2.0, "seed": 0}),
}


def build_digits_rotated(location: ProjectLocation, *, force: bool = False) -> Path:
    """Build ``wds/digits_rotated`` unless a complete, current build exists; return its folder."""
    return build_digits(location, force=force, variant=DIGITS_VARIANTS["digits_rotated"])


def build_digits_noisy(location: ProjectLocation, *, force: bool = False) -> Path:
    """Build ``wds/digits_noisy`` unless a complete, current build exists; return its folder."""
    return build_digits(location, force=force, variant=DIGITS_VARIANTS["digits_noisy"])
