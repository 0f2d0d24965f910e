"""Check: does the fast protocol's search score validation like exact fits would?

The fast search fits stop at ``search_tol`` (1e-4, float32); this script refits every grid
point the search scored exactly (float64, tol 1e-8, warm-started strongest penalty first) and
counts, per feature set, the validation rows on which the two disagree and whether the chosen
weight decay is the exact curve's choice (best validation top-1, ties to the larger decay).

    python benchmarks/probe_search_fidelity.py

Sets: digits (timm ``test_vit`` last block; full and few-shot k = 5), Gaussian clusters
2,000 × 256 × 20, 400 × 1,024 × 10 (d > n) and 3,000 × 128 × 30 with a +3 offset on every
feature.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from probe import digits_features, random_features  # benchmarks/probe.py

from sim_consistency.probe import fit_logreg, linear_probe


def fidelity(X_tr, y_tr, X_te, y_te, **options) -> tuple[list[int], float, float]:
    """Return (rows off per scored point, chosen λ, the exact curve's λ)."""
    result = linear_probe(X_tr, y_tr, X_te, y_te, **options)
    classes = np.unique(y_tr)
    fit_rows, val_rows = result["search_indices"], result["val_indices"]
    X = torch.nn.functional.normalize(torch.from_numpy(X_tr).double(), dim=1)
    y = torch.from_numpy(np.searchsorted(classes, y_tr))
    exact, off, init = {}, [], None
    for point in sorted(result["val_curve"], key=lambda p: -p["weight_decay"]):
        wd = point["weight_decay"]
        init = fit_logreg(X[fit_rows], y[fit_rows], classes.size, l2=wd, init=init, tol=1e-8)
        hits = (X[val_rows] @ init.W + init.b).argmax(1) == y[val_rows]
        exact[wd] = float(hits.double().mean())
        off.append(round((point["val_top1"] - exact[wd]) * len(val_rows)))
    return off, result["weight_decay"], max(exact, key=lambda wd: (exact[wd], wd))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        digits = digits_features(Path(tmp) / "root")
    rng = np.random.default_rng(1)
    sets = {
        "digits": (digits, {}),
        "digits few-shot k=5": (digits, {"fewshot_k": 5}),
        "2000 x 256 x 20": (random_features(2000, 1000, 256, 20, 6.0, rng=rng), {}),
        "400 x 1024 x 10": (random_features(400, 400, 1024, 10, 10.0, rng=rng), {}),
        "3000 x 128 x 30 +3": (random_features(3000, 1000, 128, 30, 5.0, offset=3.0, rng=rng), {}),
    }
    same = total = agree = 0
    print("| set | validation rows off, per scored point | chosen λ | exact curve's λ |")
    print("|---|---|---:|---:|")
    for name, (data, options) in sets.items():
        off, chosen, best = fidelity(*data, **options)
        same, total, agree = same + off.count(0), total + len(off), agree + (chosen == best)
        print(f"| {name} | {off} | {chosen:.3g} | {best:.3g} |")
    print(f"\n{same}/{total} points equal to the exact curve; {agree}/{len(sets)} sets pick its λ")


if __name__ == "__main__":
    main()
