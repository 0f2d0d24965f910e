"""The figure naming rule: every character of an id is kept, the format is appended."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from sim_consistency.aggregate import plot_accuracy_vs_depth  # noqa: E402
from sim_consistency.figures import figure_path, save_figure  # noqa: E402
from sim_consistency.soup_metrics import plots  # noqa: E402
from sim_consistency.stages._similarity_io import save_heatmap  # noqa: E402
from sim_consistency.stages.layer_cka import pair_name  # noqa: E402

# The example: two fine-tuned runs whose ids differ only after a dot.
A, B = "rn_ft_lr0.001_s0", "rn_ft_lr0.0003_s1"


def test_figure_path_appends_the_format_and_keeps_dots(tmp_path):
    assert figure_path(tmp_path / f"rn_w0__vs__{A}", "png").name == f"rn_w0__vs__{A}.png"
    assert figure_path(tmp_path / "cka_sigma_0.4", ".pdf").name == "cka_sigma_0.4.pdf"
    assert figure_path(tmp_path / A, "png") != figure_path(tmp_path / B, "png")
    with pytest.raises(ValueError):
        figure_path(tmp_path / "x", "")


def test_two_ids_differing_after_a_dot_give_two_files(tmp_path):
    for model_id in (A, B):
        fig, ax = plt.subplots()
        ax.set_title(model_id)
        save_figure(fig, tmp_path / f"retention_sweep_{model_id}")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(f"retention_sweep_{m}.{f}" for m in (A, B) for f in ("png", "pdf"))
    assert plots.save_figure is save_figure  # the soup-metrics stage uses the same rule


def test_layer_cka_heatmaps_of_two_pairs_do_not_overwrite(tmp_path):
    for other in (A, B):
        save_heatmap(
            np.eye(2),
            tmp_path / pair_name("rn_w0", other),
            row_labels=["b0", "b1"],
            col_labels=["b0", "b1"],
            title=other,
        )
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == sorted([f"rn_w0__vs__{A}.png", f"rn_w0__vs__{B}.png"])


def test_aggregate_figures_keep_dataset_names(tmp_path):
    rows = [
        {"kind": "probe", "dataset": d, "model_id": "m", "depth_fraction": x, "top1": 0.5}
        for d in ("wds/set_v1.0", "wds/set_v1.1")
        for x in (0.5, 1.0)
    ]
    paths = plot_accuracy_vs_depth(pd.DataFrame(rows), tmp_path)
    assert sorted(p.name for p in paths) == [
        "probe_accuracy_vs_depth_wds_set_v1.0.png",
        "probe_accuracy_vs_depth_wds_set_v1.1.png",
    ]
    assert all(p.is_file() for p in paths)
