"""Check: how far is RBF CKA from an extended-precision evaluation of the same estimator?

For the shapes and bandwidths of ``tests/similarity/test_cka_precision.py`` (σ = f × the
median distance, f from 1.0 down to 0.05; n 50–500, d < n and d > n), prints the largest
absolute error of ``cka(kernel="rbf")`` (one slab and 37-row slabs) against that test's
``np.longdouble`` reference, per f, biased and unbiased; NaN results count as infinite error.

    uv run python benchmarks/cka_precision.py
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests/
from sim_consistency.similarity import cka  # noqa: E402
from tests.similarity.test_cka_precision import (  # noqa: E402
    FRACTIONS,
    SHAPES,
    _cka_ld,
    _sq_distances_ld,
)


def main() -> None:
    worst: dict[tuple[float, bool], float] = {}
    for n, d in SHAPES:
        rng = np.random.default_rng(n + d)  # the test's features
        X = rng.normal(size=(n, d))
        Y = np.tanh(X @ rng.normal(size=(d, d)) / np.sqrt(d)) + 0.5 * rng.normal(size=(n, d))
        DX, DY = _sq_distances_ld(X), _sq_distances_ld(Y)
        for f in FRACTIONS:
            kx = np.exp(-DX / (2 * np.longdouble(f) ** 2 * np.median(DX)))
            ky = np.exp(-DY / (2 * np.longdouble(f) ** 2 * np.median(DY)))
            for unbiased in (False, True):
                expected = _cka_ld(kx, ky, unbiased)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    got = [
                        cka(X, Y, kernel="rbf", sigma_median=f, unbiased=unbiased, chunk_rows=c)
                        for c in (1024, 37)
                    ]
                err = max(abs(g - expected) if np.isfinite(g) else np.inf for g in got)
                worst[(f, unbiased)] = max(worst.get((f, unbiased), 0.0), err)
    print("| σ / median distance | biased: max abs error | unbiased: max abs error |")
    print("|---:|---:|---:|")
    for f in FRACTIONS:
        print(f"| {f} | {worst[(f, False)]:.1e} | {worst[(f, True)]:.1e} |")


if __name__ == "__main__":
    main()
