"""build_variants end to end, and variants built on the fly by feature_extraction.

Tiny real timm models (``test_vit``, ``test_resnet``) and the digits webdataset; ingredients
differ by their seeded random initialisation (each entry id seeds its own) or are checkpoint
files written here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sim_consistency.config import load_models_config
from sim_consistency.features import open_cache
from sim_consistency.merging import uniform_soup
from sim_consistency.models import create_model, load_state_dict_file, state_dict_sha256
from sim_consistency.stages import build_variants, feature_extraction

REPO = Path(__file__).resolve().parents[2]
VIT = {"source": "timm", "model_name": "test_vit", "num_classes": 10}
RESNET = {"source": "timm", "model_name": "test_resnet", "num_classes": 10}


def _build(project, config, *extra) -> int:
    return build_variants.main(
        ["--project_root", str(project.root), "--models_config", str(config), *extra]
    )


def _extract(project, config, *extra) -> int:
    return feature_extraction.main(
        [
            "--project_root",
            str(project.root),
            "--models_config",
            str(config),
            "--datasets",
            "wds/digits",
            "--splits",
            "test",
            "--max_samples",
            "20",
            "--num_workers",
            "0",
            *extra,
        ]
    )


_BUILT: dict[tuple[str, str], dict[str, torch.Tensor]] = {}


def _state_dict(project, config, model_id) -> dict[str, torch.Tensor]:
    """Weights of a timm entry as the factory builds them (cached: seeded by the id)."""
    specs = load_models_config(config, base_dir=project.root)
    key = (model_id, json.dumps(specs[model_id].recipe(), default=str))
    if specs[model_id].source != "timm" or key not in _BUILT:
        _BUILT[key] = create_model(specs[model_id], specs, location=project).model.state_dict()
    return _BUILT[key]


def _recipe(project, model_id) -> dict:
    return json.loads(project.model_recipe_file(model_id).read_text())


def _models_files(project) -> list[str]:
    return sorted(p.name for p in project.models.iterdir())


def _checkpoint(project, name: str, state_dict, scale: float, seed: int) -> Path:
    g = torch.Generator().manual_seed(seed)
    perturbed = {
        k: (v + scale * torch.randn(v.shape, generator=g)).contiguous()
        if v.is_floating_point()
        else v.contiguous()
        for k, v in state_dict.items()
    }
    path = project.root / "checkpoints" / f"{name}.safetensors"
    path.parent.mkdir(exist_ok=True)
    save_file(perturbed, str(path))
    return path


@pytest.mark.slow
def test_uniform_soup_and_monosoup_materialised_with_recipes(project, models_config, capsys):
    config = models_config(
        {
            "a": VIT,
            "b": VIT,
            "soup": {"variant": {"method": "uniform", "ingredients": ["a", "b"]}},
            "mono": {"variant": {"method": "monosoup", "base": "a", "finetuned": "b"}},
            "low": {"variant": {"method": "lowonly", "base": "a", "finetuned": "b"}},
        }
    )
    assert _build(project, config) == 0
    assert "3 output(s) computed, 0 reused" in capsys.readouterr().out
    a, b = _state_dict(project, config, "a"), _state_dict(project, config, "b")
    soup = load_state_dict_file(project.model_weights_file("soup"))
    expected = uniform_soup({"a": a, "b": b})
    assert all(torch.equal(soup[k], expected[k]) for k in expected)

    recipe = _recipe(project, "soup")
    assert recipe["recipe"]["variant"] == {"method": "uniform", "ingredients": ["a", "b"]}
    assert recipe["ingredients"] == [
        {"id": "a", "weights_sha256": state_dict_sha256(a)},
        {"id": "b", "weights_sha256": state_dict_sha256(b)},
    ]
    assert recipe["weights_sha256"] == state_dict_sha256(soup)
    assert [s["id"] for s in recipe["steps"]] == ["a", "b"]
    assert recipe["batchnorm"]["note"] == "no BatchNorm layers"

    mono = _recipe(project, "mono")
    assert mono["settings"] == {
        "rank_rule": "vetterli",
        "R": 0.8,
        "min_rel_update": 1e-6,
        "untouched_from": "finetuned",
        "include_buffers": False,
        "preset": None,
        "preset_overridden": [],
    }
    layers = {x["name"]: x for x in mono["layers"]}
    assert set(layers) == set(a)
    assert layers["blocks.0.norm1.weight"]["skip_reason"] == "fewer than 2 dims"
    qkv = layers["blocks.0.attn.qkv.weight"]
    assert qkv["edited"] and qkv["lambda_high"] + qkv["lambda_low"] == pytest.approx(1.0)
    low = load_state_dict_file(project.model_weights_file("low"))
    assert torch.equal(low["blocks.0.norm1.weight"], b["blocks.0.norm1.weight"])  # from W1

    # Up to date: a second run builds nothing; --force rebuilds only the selected one.
    mtime = project.model_weights_file("mono").stat().st_mtime_ns
    assert _build(project, config) == 0
    assert "0 output(s) computed, 3 reused" in capsys.readouterr().out
    assert _build(project, config, "--model_key", "soup", "--force") == 0
    assert "1 output(s) computed, 0 reused" in capsys.readouterr().out
    assert project.model_weights_file("mono").stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_extraction_builds_variants_and_rebuilds_when_an_ingredient_changes(
    project, models_config, caplog
):
    base_config = models_config({"a": VIT}, name="base.json")
    ft_path = _checkpoint(project, "ft", _state_dict(project, base_config, "a"), 0.05, 0)
    config = models_config(
        {
            "a": VIT,
            "ft": {"source": "checkpoint", "arch": "a", "path": str(ft_path)},
            "soup": {"variant": {"method": "uniform", "ingredients": ["a", "ft"]}},
            "mono": {
                "variant": {
                    "method": "monosoup",
                    "base": "a",
                    "finetuned": "ft",
                    "rank_rule": "variance",
                    "R": 0.9,
                    "min_rel_update": 0.01,
                }
            },
        }
    )
    assert _extract(project, config, "--model_key", "soup", "mono") == 0
    for model_id in ("soup", "mono"):
        assert project.model_weights_file(model_id).is_file()
        with open_cache(project.feature_file("wds/digits", "test", model_id)) as cache:
            assert len(cache.keys) == 20
            weights = load_state_dict_file(project.model_weights_file(model_id))
            assert cache.attrs["recipe"]["variant"]["method"] in ("uniform", "monosoup")
            assert cache.attrs["weights_sha256"] == state_dict_sha256(weights)
    ft_digest = _recipe(project, "mono")["ingredients"][1]
    assert ft_digest["id"] == "ft"

    # Fresh: nothing is rebuilt.
    mtimes = {m: project.model_weights_file(m).stat().st_mtime_ns for m in ("soup", "mono")}
    caplog.clear()
    assert _extract(project, config, "--model_key", "soup", "mono") == 0
    assert {m: project.model_weights_file(m).stat().st_mtime_ns for m in mtimes} == mtimes
    assert "up to date (variant key" in caplog.text

    # The fine-tuned checkpoint changes: both variants and their features are rebuilt.
    old_keys = {m: _recipe(project, m)["variant_key"] for m in mtimes}
    old_feature_key = open_cache(project.feature_file("wds/digits", "test", "soup"))
    old_feature_key = old_feature_key.attrs["content_key"]
    _checkpoint(project, "ft", _state_dict(project, base_config, "a"), 0.05, 1)
    assert _extract(project, config, "--model_key", "soup", "mono") == 0
    for model_id in mtimes:
        assert _recipe(project, model_id)["variant_key"] != old_keys[model_id]
        assert _recipe(project, model_id)["ingredients"][1] != ft_digest
    with open_cache(project.feature_file("wds/digits", "test", "soup")) as cache:
        assert cache.attrs["content_key"] != old_feature_key


def test_monosoup_presets_and_buffers_recorded_in_the_recipe(project, models_config):
    """A preset sets its reference script's values, explicit keys override it; buffers (the
    ResNet's BatchNorm statistics) are skipped as buffers unless include_buffers."""
    mono = {"method": "monosoup", "base": "r1", "finetuned": "r2"}
    config = models_config(
        {
            "r1": RESNET,
            "r2": RESNET,
            "clip": {"variant": {**mono, "preset": "clip"}},
            "cnx": {"variant": {**mono, "preset": "convnext"}},
            "cka": {"variant": {**mono, "preset": "convnext_cka", "R": 0.5}},
            "buf": {"variant": {**mono, "include_buffers": True, "min_rel_update": 0.0}},
        }
    )
    assert _build(project, config) == 0
    settings = {m: _recipe(project, m)["settings"] for m in ("clip", "cnx", "cka", "buf")}
    pick = ("preset", "rank_rule", "R", "min_rel_update", "preset_overridden", "include_buffers")
    assert {m: tuple(s[k] for k in pick) for m, s in settings.items()} == {
        "clip": ("clip", "freevariance", 0.8, 1e-6, [], False),
        "cnx": ("convnext", "vetterli", 0.9, 1e-2, [], False),
        "cka": ("convnext_cka", "vetterli", 0.5, 1e-2, ["R"], False),
        "buf": (None, "vetterli", 0.8, 0.0, [], True),
    }
    assert _recipe(project, "cka")["recipe"]["variant"]["preset"] == "convnext_cka"
    skipped = {x["name"]: x["skip_reason"] for x in _recipe(project, "cnx")["layers"]}
    assert skipped["conv1.1.running_mean"].startswith("buffer (MonoSoup edits parameters only")
    assert skipped["conv1.1.num_batches_tracked"].startswith("buffer")
    assert skipped["conv1.1.weight"] == "fewer than 2 dims"  # a parameter
    with_buffers = {x["name"]: x["skip_reason"] for x in _recipe(project, "buf")["layers"]}
    assert with_buffers["conv1.1.running_mean"] == "fewer than 2 dims"


def test_variant_keys_change_only_where_a_method_changed(project, models_config):
    """Greedy, pruned and MonoSoup results changed (issue 16): their keys carry a method
    revision, so stale variants are rebuilt; a uniform soup keeps its key and is reused."""
    import hashlib

    from sim_consistency.merging.build import MERGING_CODE_VERSION, METHOD_REVISIONS, variant_key

    sel = {"ingredients": ["a", "b"], "heldout": "wds/digits:val"}
    config = models_config(
        {
            "a": VIT,
            "b": VIT,
            "uniform": {"variant": {"method": "uniform", "ingredients": ["a", "b"]}},
            "greedy": {"variant": {"method": "greedy", **sel}},
            "pruned": {"variant": {"method": "pruned", **sel}},
            "mono": {"variant": {"method": "monosoup", "base": "a", "finetuned": "b"}},
        }
    )
    specs = load_models_config(config, base_dir=project.root)

    def old_key(spec):  # the key before method revisions existed
        refs = {r: {"recipe": specs[r].recipe()} for r in spec.references()}
        payload = {
            "code_version": MERGING_CODE_VERSION,
            "recipe": spec.recipe(),
            "references": refs,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    for model_id in ("uniform", "greedy", "pruned", "mono"):
        spec = specs[model_id]
        changed = spec.variant.method in METHOD_REVISIONS
        assert (variant_key(spec, specs, location=project) != old_key(spec)) == changed, model_id
    assert METHOD_REVISIONS["pruned"] >= 2 and "uniform" not in METHOD_REVISIONS


def test_greedy_soup_on_the_digits_val_split(project, models_config):
    config = models_config(
        {
            "a": VIT,
            "b": VIT,
            "c": VIT,
            "greedy": {
                "variant": {
                    "method": "greedy",
                    "ingredients": ["a", "b", "c"],
                    "heldout": "wds/digits:val",
                    "heldout_max_samples": 30,
                    "accept": ">",
                }
            },
        }
    )
    assert _build(project, config) == 0
    recipe = _recipe(project, "greedy")
    assert recipe["settings"] == {
        "accept": ">",
        "order": "sorted",
        "seed": 0,
        "heldout": "wds/digits:val",
        "test": "wds/digits:test",
        "heldout_rows": 30,
        "metric": "accuracy",
    }
    steps = recipe["steps"]
    assert sorted(s["id"] for s in steps) == ["a", "b", "c"]
    assert steps[0]["individual_score"] == max(s["individual_score"] for s in steps)
    assert all({"id", "score", "accepted", "individual_score"} <= set(s) for s in steps)
    accepted = [s["id"] for s in steps if s["accepted"]]
    soup = load_state_dict_file(project.model_weights_file("greedy"))
    expected = uniform_soup({i: _state_dict(project, config, i) for i in accepted})
    assert all(torch.equal(soup[k], expected[k]) for k in expected)


def test_batchnorm_policies(project, models_config, caplog):
    soup = {"method": "uniform", "ingredients": ["r1", "r2"]}
    config = models_config(
        {
            "r1": RESNET,
            "r2": RESNET,
            "avg": {"variant": soup},
            "anchored": {"variant": {**soup, "bn_policy": "from_anchor", "anchor": "r2"}},
            "reset": {
                "variant": {
                    **soup,
                    "bn_policy": "reset",
                    "bn_split": "wds/digits:train",
                    "bn_max_samples": 16,
                }
            },
            "v1": VIT,
            "v2": VIT,
            "vit_reset": {
                "variant": {
                    "method": "wise_ft",
                    "base": "v1",
                    "finetuned": "v2",
                    "alpha": 0.5,
                    "bn_policy": "reset",
                    "bn_split": "wds/digits:train",
                }
            },
        }
    )
    assert _build(project, config) == 0
    r2 = _state_dict(project, config, "r2")
    out = {
        m: load_state_dict_file(project.model_weights_file(m)) for m in ("avg", "anchored", "reset")
    }
    key = "conv1.1.running_var"
    assert torch.equal(out["anchored"][key], r2[key])
    assert torch.equal(out["anchored"]["fc.weight"], out["avg"]["fc.weight"])
    assert torch.equal(out["reset"]["fc.weight"], out["avg"]["fc.weight"])
    assert not torch.allclose(out["reset"][key], out["avg"][key])
    assert out["reset"]["conv1.1.num_batches_tracked"].item() == 1  # one batch of 16 rows
    assert _recipe(project, "reset")["batchnorm"] == {
        "policy": "reset",
        "n_buffers": len([k for k in r2 if ".running_" in k or "num_batches" in k]),
        "split": "wds/digits:train",
        "n_rows": 16,
        "n_layers": len([k for k in r2 if k.endswith("running_mean")]),
    }
    assert _recipe(project, "vit_reset")["batchnorm"]["note"] == "no BatchNorm layers"
    assert "no BatchNorm layers; bn_policy 'reset' is a no-op" in caplog.text


CASES = {
    "architectures": (
        {
            "a": VIT,
            "r": RESNET,
            "bad": {"variant": {"method": "uniform", "ingredients": ["a", "r"]}},
        },
        "variant 'bad' (uniform): uniform_soup: 'r' has different tensors than 'a'",
    ),
    "heldout_is_test": (
        {
            "a": VIT,
            "b": VIT,
            "bad": {
                "variant": {
                    "method": "greedy",
                    "ingredients": ["a", "b"],
                    "heldout": "wds/digits:test",
                }
            },
        },
        "'bad': variant.heldout 'wds/digits:test' equals the test split",
    ),
    "missing_base": (
        {"a": VIT, "bad": {"variant": {"method": "monosoup", "base": "zz", "finetuned": "a"}}},
        "'bad': references unknown entry 'zz'",
    ),
    "no_base": (
        {"a": VIT, "bad": {"variant": {"method": "monosoup", "finetuned": "a"}}},
        "'bad': missing key 'variant.base'",
    ),
    "empty": (
        {"a": VIT, "bad": {"variant": {"method": "uniform", "ingredients": []}}},
        "'bad': variant.ingredients must be an entry id or a non-empty list of entry ids (got [])",
    ),
    "non_finite": (
        {
            "a": VIT,
            "b": VIT,
            "bad": {
                "variant": {"method": "task_arithmetic", "base": "a", "finetuned": "b", "lam": 1e40}
            },
        },
        "variant 'bad' (task_arithmetic): the result's tensor",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_errors_name_the_variant_and_write_nothing(project, models_config, capsys, case):
    entries, fragment = CASES[case]
    config = models_config(entries)
    assert _build(project, config, "--model_key", "bad") == 2
    err = capsys.readouterr().err
    assert fragment in err
    if case == "architectures":
        assert "blocks." in err or "conv1." in err  # names the offending tensors
    if case == "non_finite":
        assert "the result's tensor '" in err and "has NaN/inf values" in err
    assert _models_files(project) == []


@pytest.mark.slow
def test_script_smoke(project, models_config):
    config = models_config(
        {
            "a": VIT,
            "b": VIT,
            "neg": {
                "variant": {
                    "method": "task_arithmetic",
                    "base": "a",
                    "finetuned": "b",
                    "negate": True,
                }
            },
        }
    )
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "build_variants.py"),
            "--project_root",
            str(project.root),
            "--models_config",
            str(config),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert _models_files(project) == ["neg.json", "neg.safetensors"]
    assert _recipe(project, "neg")["settings"]["lam"] == -1.0
    a, b = _state_dict(project, config, "a"), _state_dict(project, config, "b")
    neg = load_state_dict_file(project.model_weights_file("neg"))
    torch.testing.assert_close(neg["head.weight"], 2 * a["head.weight"] - b["head.weight"])


def test_moving_the_project_root_re_merges_nothing(project, tmp_path, models_config, capsys):
    base_config = models_config({"a": VIT}, name="base.json")
    _checkpoint(project, "ft", _state_dict(project, base_config, "a"), 0.05, 0)
    entries = {
        "a": VIT,
        "ft": {"source": "checkpoint", "arch": "a", "path": "checkpoints/ft.safetensors"},
        "soup": {"variant": {"method": "uniform", "ingredients": ["a", "ft"]}},
    }
    config = models_config(entries)
    assert _build(project, config) == 0
    assert "1 output(s) computed" in capsys.readouterr().out
    key = _recipe(project, "soup")["variant_key"]
    moved = tmp_path / "moved_root"
    project.root.rename(moved)
    from sim_consistency.project import ProjectLocation

    new = ProjectLocation.resolve(moved)
    assert build_variants.main(["--project_root", str(moved), "--models_config", str(config)]) == 0
    assert "0 output(s) computed, 1 reused" in capsys.readouterr().out
    assert _recipe(new, "soup")["variant_key"] == key
