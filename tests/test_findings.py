"""Report findings: every sentence follows the numbers it describes."""

from __future__ import annotations

import pandas as pd

from sim_consistency import findings


def _profile(values: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for model_id, cka in values.items():
        for i, v in enumerate(cka):
            rows.append(
                {
                    "dataset": "wds/digits",
                    "reference": "rn_w0",
                    "model_id": model_id,
                    "block": f"stages.{i}",
                    "block_index": i,
                    "cka": v,
                }
            )
    return pd.DataFrame(rows)


def test_cka_sentences_follow_the_data_not_the_paper():
    # The demo's situation: the last block is the most similar, low-only closer at 3 of 4.
    profile = _profile(
        {
            "rn_ft": [0.970, 0.960, 0.965, 0.990],
            "rn_highonly_vetterli": [0.975, 0.962, 0.966, 0.989],
            "rn_lowonly_vetterli": [0.980, 0.970, 0.960, 0.991],
        }
    )
    methods = {"rn_highonly_vetterli": "highonly", "rn_lowonly_vetterli": "lowonly"}
    text = findings.cka_profile_findings(profile, methods)
    assert "least similar to rn_w0 is stages.2 (mean CKA 0.9637)" in text[0]
    assert "most similar is stages.3" in text[0]
    assert "between 0.9600 and 0.9910" in text[0]
    assert "rn_highonly_vetterli is closer to rn_w0 than rn_lowonly_vetterli at 1 of 4" in text[1]


def test_difference_text_resolves_to_one_test_image():
    assert findings.difference_text(0.0017, 360) == "+0.17 pp (within one test image of 360)"
    assert findings.difference_text(2 / 360, 360) == "+0.56 pp (+2 test images of 360)"
    assert findings.difference_text(-1 / 360, 360) == "-0.28 pp (-1 test image of 360)"


def test_soup_counts_only_differences_of_at_least_one_image():
    table = pd.DataFrame(
        {
            "soup_id": ["a", "b", "c"],
            "dataset": ["d"] * 3,
            "improvement_over_mean": [0.01, 0.001, -0.01],
            "improvement_over_best": [0.0, -0.005, -0.02],
        }
    )
    (text,) = findings.soup_findings(table, {"d": 360})
    assert (
        "1 above and 1 below their mean ingredient by at least one test image (1 within one)"
        in text
    )
    assert "0 above and 2 below their best ingredient" in text


def test_monosoup_is_shown_with_its_ablations():
    accuracy = pd.DataFrame(
        [
            (m, "d", acc)
            for m, acc in [("w0", 0.8), ("ft", 0.9), ("mono", 0.91), ("hi", 0.88), ("lo", 0.82)]
        ],
        columns=["model_id", "dataset", "top1"],
    )
    family = {"base": "w0", "finetuned": "ft", "rank_rule": "vetterli"}
    variants = {
        "mono": {"method": "monosoup", **family},
        "hi": {"method": "highonly", **family},
        "lo": {"method": "lowonly", **family},
    }
    table = findings.monosoup_table(accuracy, variants)
    assert table["role"].tolist() == ["base (W0)", "fine-tuned", "monosoup", "highonly", "lowonly"]
    assert table["top1 d"].tolist() == [0.8, 0.9, 0.91, 0.88, 0.82]
    (text,) = findings.monosoup_findings(table, {"d": 100})
    assert "MonoSoup 91.00 % vs fine-tuned 90.00 % (+1.00 pp (+1 test image of 100))" in text
    assert "highonly 88.00 %, lowonly 82.00 %" in text


def test_barrier_sentence_names_both_definitions_values():
    barriers = pd.DataFrame(
        [
            {
                "dataset": "d",
                "model_a": "w0",
                "model_b": "ft",
                "kind": "error",
                "barrier": 0.0,
                "barrier_alpha": 0.0,
                "barrier_midpoint": 0.0069,
                "value_start": 0.10,
                "value_end": 0.0862,
            }
        ]
    )
    (text,) = findings.barrier_findings(barriers, {"d": 360})
    assert "error barrier 0.00 pp (below one test image)" in text
    assert "midpoint barrier 0.69 pp" in text


def test_probe_findings_say_when_there_is_no_spread():
    summary = pd.DataFrame(
        {"dataset": ["d", "d"], "model_id": ["a", "b"], "top1_mean": [0.9, 0.8],
         "top1_std": [float("nan")] * 2, "n_seeds": [1, 1]}
    )  # fmt: skip
    (text,) = findings.probe_findings(summary, {"d": 360})
    assert "1 seed(s) each" in text and "no spread" in text
    summary["top1_std"], summary["n_seeds"] = [0.004, 0.002], [3, 3]
    (text,) = findings.probe_findings(summary, {"d": 360})
    assert "3 seed(s) each" in text and "at most 0.40 pp" in text


def test_purity_counts_resolved_wins():
    sweep = pd.DataFrame(
        [(k, p, v) for k, hi, lo in [(4, 0.5, 0.4), (8, 0.6, 0.599), (16, 0.7, 0.7)]
         for p, v in (("high", hi), ("low", lo))],
        columns=["k", "purity", "top1"],
    ).assign(model_id="m")  # fmt: skip
    (text,) = findings.purity_findings(sweep, 360)
    assert "better than the k least orthogonal at 1 of 2 k < d, worse at 0" in text
