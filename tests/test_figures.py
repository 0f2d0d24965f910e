"""The figure naming rule: every character of an id is kept, the format is appended."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from sim_consistency.aggregate import plot_accuracy_vs_depth
from sim_consistency.figures import figure_path, save_figure, save_heatmap, subplots
from sim_consistency.similarity.grid_outputs import pair_name
from sim_consistency.soup_metrics import plots

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
        fig, ax = subplots()
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


def test_series_styles_differ_for_every_model_of_the_demo():
    from sim_consistency.figures import series_style

    styles = [tuple(sorted((k, str(v)) for k, v in series_style(i).items())) for i in range(200)]
    assert len(set(styles)) == 200  # the demo has 46 models; 10 colours alone repeated


def test_profile_axis_is_scaled_to_the_data(tmp_path):
    import matplotlib.image

    from sim_consistency.figures import save_profile_plot

    captured = {}
    original = Figure.savefig

    def spy(fig, *args, **kwargs):
        captured["ylim"] = fig.axes[0].get_ylim()
        captured["ylabel"] = fig.axes[0].get_ylabel()
        return original(fig, *args, **kwargs)

    Figure.savefig = spy
    try:
        paths = save_profile_plot(
            {"ft": [0.955, 0.97, 0.99], "high": [0.96, 0.975, 0.985]},
            tmp_path / "diagonal_profile",
            title="t",
            xlabel="block",
            ylabel="linear CKA",
        )
    finally:
        Figure.savefig = original
    lo, hi = captured["ylim"]
    assert 0.94 < lo < 0.955 and 0.99 < hi < 1.0  # not 0–1: the lines would be flat
    assert "zoomed" in captured["ylabel"]
    assert matplotlib.image.imread(paths[0]).shape[0] > 100


def test_scatter_labels_never_overlap():
    from sim_consistency.soup_metrics.plots import label_points_in_a_column

    fig, ax = subplots()
    xs, ys = [90.0, 90.01, 90.02, 90.03], [80.0, 80.0, 80.01, 79.99]  # nearly on top of each other
    ax.scatter(xs, ys)
    label_points_in_a_column(ax, xs, ys, ["a", "b", "c", "d"])
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in ax.texts]
    assert len(boxes) == 4
    for i in range(4):
        for j in range(i + 1, 4):
            assert not boxes[i].overlaps(boxes[j])


def test_importing_the_package_and_saving_figures_keeps_the_users_backend(tmp_path):
    """No library module selects a backend or goes through pyplot: a notebook user's backend
    (here ``svg``, chosen before the import) is the same after importing every module of the
    package and saving figures of each plotting module, and pyplot was never imported."""
    script = textwrap.dedent(
        f"""
        import importlib, pkgutil, sys
        from pathlib import Path
        import matplotlib
        matplotlib.use("svg")
        import numpy as np, pandas as pd
        import sim_consistency
        for module in pkgutil.walk_packages(sim_consistency.__path__, "sim_consistency."):
            if not module.name.endswith("__main__"):  # running a module is not importing it
                importlib.import_module(module.name)
        from sim_consistency.aggregate import plot_consistency
        from sim_consistency.figures import save_figure
        from sim_consistency.soup_metrics.plots import plot_retention_sweep
        from sim_consistency.figures import save_heatmap
        out = Path({str(tmp_path)!r})
        save_heatmap(np.eye(2), out / "heatmap", row_labels=["a", "b"], col_labels=["a", "b"],
                     title="t")
        plot_consistency(pd.DataFrame({{"metric": ["m"], "restriction": ["r"],
            "dataset_a": ["x"], "dataset_b": ["y"], "method": ["pearson"],
            "consistency": [0.5]}}), out)
        sweep = pd.DataFrame({{"purity": ["high", "low"], "k": [1, 1], "top1": [0.5, 0.4]}})
        save_figure(plot_retention_sweep(sweep), out / "sweep")
        print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["svg", "False"]
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == [
        "consistency.png", "heatmap.pdf", "heatmap.png", "sweep.pdf", "sweep.png"
    ]  # fmt: skip
