"""The report: headline first, findings from the data, truncation stated with a link."""

from __future__ import annotations

import pandas as pd

from sim_consistency.project import ProjectLocation
from sim_consistency.report import HTML_MAX_ROWS, write_report


def _accuracy(n_models: int) -> pd.DataFrame:
    rows = []
    for i in range(n_models):
        for dataset, shift in (("wds/digits", 0.0), ("wds/digits_noisy", -0.1)):
            rows.append(
                {
                    "model_id": f"m{i:02d}",
                    "dataset": dataset,
                    "split": "test",
                    "is_ood": dataset.endswith("noisy"),
                    "is_soup": False,
                    "method": "checkpoint",
                    "source": "head",
                    "n_samples": 360,
                    "top1": 0.5 + i / 200 + shift,
                }
            )
    return pd.DataFrame(rows)


def test_long_tables_say_they_are_cut_and_link_the_full_csv(tmp_path):
    location = ProjectLocation.resolve(tmp_path / "root").create()
    _accuracy(HTML_MAX_ROWS + 10).to_csv(location.soup_metrics / "accuracy.csv", index=False)
    md, page = write_report(location)
    html = page.read_text()
    link = "aggregated/report/accuracy_of_every_model.csv"
    assert f"showing the first {HTML_MAX_ROWS} of {HTML_MAX_ROWS + 10} rows" in html
    assert f"<a href='{link}'>" in html
    full = pd.read_csv(location.results / link)
    assert len(full) == HTML_MAX_ROWS + 10 and full["model_id"].iloc[0] == "m69"
    assert f"[{link}]({link})" in md.read_text()


def test_headline_comes_first_and_is_computed(tmp_path):
    location = ProjectLocation.resolve(tmp_path / "root").create()
    _accuracy(3).to_csv(location.soup_metrics / "accuracy.csv", index=False)
    html = write_report(location)[1].read_text()
    summary = html.index("<h2>Summary</h2>")
    assert summary < html.index("<h2>Models and soups: accuracy</h2>")
    assert "wds/digits: 3 models, n = 360 test images (one image = 0.28 pp)" in html
    assert "Highest test top-1: m02 (51.00 %)" in html
    # nothing written in advance: the old hard-coded conclusions are gone
    for phrase in ("changes late blocks most", "late forks stay close", "should probe better"):
        assert phrase not in html
    assert "<h2>Not run yet</h2>" in html and "layer CKA" in html
