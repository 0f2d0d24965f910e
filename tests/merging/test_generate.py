"""Generated soup-study variants: interpolation points and branching soups as config entries."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sim_consistency.config import load_models_config
from sim_consistency.errors import ConfigError
from sim_consistency.merging.generate import (
    SoupStudy,
    barrier_pairs,
    branching_runs,
    generated_entries,
    interpolation_alphas,
    interpolation_id,
    is_generated,
    write_generated_config,
)

ARCH = {"source": "timm", "model_name": "test_resnet", "pretrained": False, "num_classes": 10}


def _config(tmp_path):
    def run(group, branch):
        meta = {"run_group": group, "branch_epoch": branch, "analysis_epoch": 4}
        return {**ARCH, "metadata": meta}

    config = {
        "a": ARCH,
        "b": ARCH,
        "r1": run("rn", 1),
        "r2": run("rn", 1),
        "r3": run("rn", 2),
        "v1": run(None, 1),  # no run_group: the "all" group
        "soup": {"variant": {"method": "uniform", "ingredients": ["a", "b"]}},
    }
    path = tmp_path / "models.json"
    path.write_text(json.dumps(config))
    return path, config


def test_alphas_and_pairs():
    assert np.allclose(interpolation_alphas(5), [0, 0.25, 0.5, 0.75, 1])
    with pytest.raises(ConfigError, match="at least 3 points"):
        interpolation_alphas(2)
    pairs = barrier_pairs([("a", "b")], ["a", "b", "c"])
    assert pairs == [("a", "b"), ("a", "c"), ("b", "c")]  # explicit first, no duplicate
    assert interpolation_id("a", "b", 0.25) == "interp__a__b__0p250"


def test_generated_entries_and_config(tmp_path):
    path, config = _config(tmp_path)
    specs = load_models_config(path, base_dir=tmp_path)
    assert [r["model_id"] for r in branching_runs(specs)] == ["r1", "r2", "r3", "v1"]
    assert branching_runs(config) == branching_runs(specs)  # raw entries read the same
    with pytest.raises(ConfigError, match="--bn_policy reset needs --bn_split"):
        SoupStudy(bn_policy="reset")
    study = SoupStudy(
        interpolate=(("a", "b"),), n_alphas=3, bn_policy="reset", bn_split="wds/digits:train"
    )
    entries = generated_entries(specs, study)
    assert list(entries) == [
        "interp__a__b__0p000",
        "interp__a__b__0p500",
        "interp__a__b__1p000",
        "branchsoup__all__e1__a4",
        "branchsoup__rn__e1__a4",
        "branchsoup__rn__e2__a4",
    ]
    mid = entries["interp__a__b__0p500"]["variant"]
    assert mid == {
        "method": "interpolate",
        "base": "a",
        "finetuned": "b",
        "alpha": 0.5,
        "bn_policy": "reset",
        "bn_split": "wds/digits:train",
    }
    assert entries["branchsoup__rn__e1__a4"]["variant"]["ingredients"] == ["r1", "r2"]
    out = write_generated_config(path, entries, tmp_path / "gen" / "study.json")
    loaded = load_models_config(out, base_dir=tmp_path)
    assert set(loaded) == set(config) | set(entries)
    assert {m for m, s in loaded.items() if is_generated(s)} == set(entries)
    # regenerating from the generated config replaces the earlier generation, in place
    fewer = generated_entries(loaded, SoupStudy(branching=False, interpolate=(("a", "b"),)))
    write_generated_config(out, fewer, out)
    assert set(json.loads(out.read_text())) == set(config) | set(fewer)
    with pytest.raises(ConfigError, match="unknown model id"):
        generated_entries(specs, SoupStudy(barrier_models=("a", "nope")))


def test_user_ids_that_clash_are_refused(tmp_path):
    path, config = _config(tmp_path)
    config["interp__a__b__0p000"] = ARCH
    path.write_text(json.dumps(config))
    specs = load_models_config(path, base_dir=tmp_path)
    entries = generated_entries(specs, SoupStudy(interpolate=(("a", "b"),), n_alphas=3))
    with pytest.raises(ConfigError, match="reserved for generated"):
        write_generated_config(path, entries, tmp_path / "out.json")
