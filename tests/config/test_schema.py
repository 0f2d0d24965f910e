"""The config schema: every key and value of every config is validated at load, all at once.

Table-driven: for every variant method, every similarity metric, the SLURM config and the
models-config keys, a bad value is refused with a message naming the entry, the key, the value
and what is allowed; several problems of one file come in one error.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sim_consistency.config.models import (
    COMMON_KEYS,
    REPRESENTATION_KEYS,
    TOKEN_PARAMETERS,
    load_models_config,
    parse_models_config,
)
from sim_consistency.config.reference import BEGIN, END, config_reference
from sim_consistency.config.schema import Key
from sim_consistency.config.similarity import METRIC_KEYS, parse_similarity_config
from sim_consistency.config.variants import (
    METHOD_SPECS,
    MONOSOUP_PRESETS,
    VariantSpec,
    check_variant,
)
from sim_consistency.errors import ConfigError
from sim_consistency.launch.slurm_config import CONTAINER_KEYS, SLURM_KEYS, load_slurm_config

REPO = Path(__file__).resolve().parents[2]
REP2REP_REFERENCE = Path("/work/shared/reference/rep2rep_configs")

#: A bad value per kind of key (each is refused by every key of that kind).
BAD_BY_KIND = {
    "number": "lots",
    "integer": 1.5,
    "bool": "yes",
    "string": 7,
    "split": "no_split_here",
    "entry id": 3,
    "entry ids": [],
    "list of numbers": ["a"],
    "list of strings": "/data",
    "object": [1],
    "regex or list": "(",
}

#: A minimal valid ``variant`` object of every method.
BASE_OPTIONS = {
    "uniform": {"ingredients": ["a", "b"]},
    "weighted": {"ingredients": ["a", "b"], "weights": [1, 2]},
    "greedy": {"ingredients": ["a", "b"], "heldout": "wds/digits:val"},
    "pruned": {"ingredients": ["a", "b"], "heldout": "wds/digits:val"},
    "wise_ft": {"base": "a", "finetuned": "b"},
    "interpolate": {"base": "a", "finetuned": "b", "alpha": 0.3},
    "task_arithmetic": {"base": "a", "finetuned": ["b"]},
    "ties": {"base": "a", "finetuned": ["b"]},
    "monosoup": {"base": "a", "finetuned": "b"},
    "highonly": {"base": "a", "finetuned": "b"},
    "lowonly": {"base": "a", "finetuned": "b"},
}
BASE_ENTRIES = {
    "a": {"source": "timm", "model_name": "test_vit"},
    "b": {"source": "timm", "model_name": "test_vit"},
}


def _bad_value(key: Key):
    return "zzz" if key.choices else BAD_BY_KIND[key.kind]


def _expected(where: str, key: Key, value, prefix: str = "") -> str:
    """The message of the schema for a bad ``value`` of ``key``."""
    name = prefix + key.name
    if key.choices:
        return f"{where}: unknown {name} {value!r}"
    return f"{where}: {name} must be {key.allowed} (got {value!r})."


def _problems(raw) -> str:
    with pytest.raises(ConfigError) as info:
        parse_models_config(raw)
    return str(info.value)


# -- variants -------------------------------------------------------------------------------


def test_every_method_has_a_valid_example_that_loads():
    assert set(BASE_OPTIONS) == set(METHOD_SPECS)
    raw = {**BASE_ENTRIES}
    for method, options in BASE_OPTIONS.items():
        raw[f"v_{method}"] = {"variant": {"method": method, **options}}
    specs = parse_models_config(raw)
    assert specs["v_ties"].variant.settings() == {
        "base": "a",
        "finetuned": ["b"],
        "keep": 0.2,
        "lam": 1.0,
        "scope": "global",
    }


VARIANT_CASES = [(method, name) for method, spec in METHOD_SPECS.items() for name in spec.KEYS]


@pytest.mark.parametrize("method, name", VARIANT_CASES)
def test_every_variant_parameter_refuses_a_bad_value(method, name):
    key = METHOD_SPECS[method].KEYS[name]
    bad = _bad_value(key)
    options = {**BASE_OPTIONS[method], name: bad}
    message = _problems({**BASE_ENTRIES, "v": {"variant": {"method": method, **options}}})
    assert _expected("'v'", key, bad, "variant.") in message
    assert "1 problem(s)" in message


#: Values of the right type but out of range, and the allowed range the message states.
RANGE_CASES = [
    ("ties", "keep", "lots", "a finite number in (0, 1]"),
    ("ties", "keep", 0, "a finite number in (0, 1]"),
    ("ties", "keep", 1.5, "a finite number in (0, 1]"),
    ("ties", "lam", math.inf, "a finite number"),
    ("monosoup", "R", -3, "a finite number in (0, 1]"),
    ("highonly", "R", 0, "a finite number in (0, 1]"),
    ("lowonly", "min_rel_update", -1e-3, "a finite number >= 0"),
    ("wise_ft", "alpha", math.nan, "a finite number"),
    ("interpolate", "alpha", True, "a finite number"),
    ("task_arithmetic", "negate", 1, "true or false"),
    ("task_arithmetic", "coeffs", [], "a non-empty list of finite numbers"),
    ("greedy", "seed", -1, "an integer >= 0"),
    ("greedy", "heldout_max_samples", 0, "a positive integer"),
    ("pruned", "heldout", "wds/digits", "'<dataset>:<split>', e.g. 'wds/digits:val'"),
    ("uniform", "bn_max_samples", 0, "a positive integer"),
    ("wise_ft", "finetuned", ["a", "b"], "the id of one entry (or a list of exactly one)"),
    ("monosoup", "finetuned", ["a", "b"], "the id of one entry (or a list of exactly one)"),
    ("weighted", "weights", [1, "x"], "a non-empty list of finite numbers"),
]


@pytest.mark.parametrize("method, name, value, allowed", RANGE_CASES)
def test_values_out_of_range_name_entry_key_value_and_range(method, name, value, allowed):
    options = {**BASE_OPTIONS[method], name: value}
    message = _problems({**BASE_ENTRIES, "v": {"variant": {"method": method, **options}}})
    assert f"'v': variant.{name} must be {allowed} (got {value!r})." in message


CHOICE_CASES = [
    ("monosoup", "rank_rule", "magic", "variance, vetterli, freevariance"),
    ("uniform", "bn_policy", "sometimes", "average, from_anchor, reset"),
    ("ties", "scope", "local", "global, per_tensor"),
    ("greedy", "accept", "=>", ">=, >"),
    ("greedy", "order", "shuffled", "sorted, random"),
    ("pruned", "metric", "loss", "accuracy"),
    ("lowonly", "untouched_from", "zero", "finetuned, base"),
    ("highonly", "preset", "convnxt", ", ".join(MONOSOUP_PRESETS)),
]


@pytest.mark.parametrize("method, name, value, valid", CHOICE_CASES)
def test_choices_name_the_valid_values(method, name, value, valid):
    options = {**BASE_OPTIONS[method], name: value}
    message = _problems({**BASE_ENTRIES, "v": {"variant": {"method": method, **options}}})
    assert f"'v': unknown variant.{name} {value!r}" in message
    assert f"Valid: {valid}." in message


CROSS_CASES = [
    ("weighted", {"weights": [1]}, "variant.weights must give one number per ingredient"),
    ("uniform", {"weights": [1, -1]}, "variant.weights must not sum to 0"),
    ("task_arithmetic", {"coeffs": [1, 2]}, "variant.coeffs must give one number per"),
    ("wise_ft", {"bn_policy": "reset"}, "variant.bn_policy 'reset' needs variant.bn_split"),
    ("greedy", {"heldout": "wds/digits:test"}, "variant.heldout 'wds/digits:test' equals"),
    ("pruned", {"test": "wds/digits:val"}, "variant.heldout 'wds/digits:val' equals"),
    ("interpolate", {"alpha": None}, "variant.alpha must be a finite number (got None)"),
]


@pytest.mark.parametrize("method, extra, fragment", CROSS_CASES)
def test_checks_across_keys(method, extra, fragment):
    options = {**BASE_OPTIONS[method], **extra}
    assert f"'v': {fragment}" in _problems(
        {**BASE_ENTRIES, "v": {"variant": {"method": method, **options}}}
    )


@pytest.mark.parametrize("method", sorted(METHOD_SPECS))
def test_required_keys_and_unknown_keys(method):
    spec = METHOD_SPECS[method]
    required = [name for name, key in spec.KEYS.items() if key.required]
    assert required
    message = _problems(
        {**BASE_ENTRIES, "v": {"variant": {"method": method, "lamda": 1, "seeds": 2}}}
    )
    for name in required:
        assert f"'v': missing key 'variant.{name}'" in message
    assert "'v': unknown key 'variant.lamda'" in message
    assert f"{len(required) + 2} problem(s)" in message


def test_monosoup_presets_are_defaults_that_explicit_keys_override():
    specs = parse_models_config(
        {
            **BASE_ENTRIES,
            "m": {"variant": {"method": "monosoup", "base": "a", "finetuned": "b"}},
            "p": {
                "variant": {
                    "method": "monosoup",
                    "base": "a",
                    "finetuned": "b",
                    "preset": "convnext",
                    "R": 0.5,
                }
            },  # fmt: skip
        }
    )
    plain, preset = specs["m"].variant.settings(), specs["p"].variant.settings()
    assert (plain["rank_rule"], plain["R"], plain["min_rel_update"]) == ("vetterli", 0.8, 1e-6)
    assert (preset["rank_rule"], preset["R"], preset["min_rel_update"]) == ("vetterli", 0.5, 1e-2)
    assert "R" not in specs["m"].variant.options  # the recipe stays the file's object


def test_a_hand_built_variant_is_checked_by_the_builder_too():
    from sim_consistency.merging.build import build_variant_state_dict

    bad = VariantSpec("ties", {"base": "a", "finetuned": ("b",), "keep": "lots"})
    with pytest.raises(ConfigError, match=r"'x': variant.keep must be a finite number in \(0, 1\]"):
        check_variant("'x'", bad)
    specs = parse_models_config(BASE_ENTRIES)
    from sim_consistency.config.models import ModelSpec

    spec = ModelSpec(model_id="x", source="variant", variant=bad)
    with pytest.raises(ConfigError, match="variant.keep must be"):
        build_variant_state_dict(spec, {**specs, "x": spec}, location=None)  # type: ignore[arg-type]


# -- the four examples, one file, one error -------------------------------------------


def test_several_problems_in_one_file_are_reported_in_one_error(tmp_path):
    raw = {
        **BASE_ENTRIES,
        "soup_ties": {"variant": {"method": "ties", "base": "a", "finetuned": "b", "keep": "lots"}},
        "mono": {"variant": {"method": "monosoup", "base": "a", "finetuned": "b", "R": -3}},
        "mono2": {
            "variant": {"method": "monosoup", "base": "a", "finetuned": "b", "rank_rule": "magic"}
        },
        "soup": {
            "variant": {"method": "uniform", "ingredients": ["a", "b"], "bn_policy": "sometimes"}
        },
    }
    path = tmp_path / "my_models.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError) as info:
        load_models_config(path)
    assert str(info.value).splitlines() == [
        f"{path}: 4 problem(s):",
        "  entry 'soup_ties': variant.keep must be a finite number in (0, 1] (got 'lots').",
        "  entry 'mono': variant.R must be a finite number in (0, 1] (got -3).",
        "  entry 'mono2': unknown variant.rank_rule 'magic'. Valid: variance, vetterli, "
        "freevariance.",
        "  entry 'soup': unknown variant.bn_policy 'sometimes'. Valid: average, from_anchor, "
        "reset.",
    ]


# -- models config: keys of every entry and of the sources ------------------------------------


ENTRY_KEYS = {**COMMON_KEYS, **REPRESENTATION_KEYS}


@pytest.mark.parametrize("name", sorted(ENTRY_KEYS))
def test_every_common_key_refuses_a_bad_value(name):
    key = ENTRY_KEYS[name]
    bad = _bad_value(key)
    message = _problems({"m": {"source": "timm", "model_name": "test_vit", name: bad}})
    assert _expected("'m'", key, bad) in message


@pytest.mark.parametrize("name", sorted(TOKEN_PARAMETERS))
def test_representation_parameters_refuse_bad_values(name):
    key = TOKEN_PARAMETERS[name]
    bad = _bad_value(key)
    entry = {"source": "timm", "model_name": "test_vit", "module_name": "norm",
             "model_parameters": {name: bad}}  # fmt: skip
    assert _expected("'m'", key, bad, "model_parameters.") in _problems({"m": entry})


SOURCE_CASES = [
    ({"source": "timm", "model_name": 3}, "'m': model_name must be a string (got 3)."),
    ({"source": "timm", "model_name": "x", "pretrained": 1.5}, "'m': pretrained must be"),
    ({"source": "timm", "model_name": "x", "weights": "no.pt"}, "no.pt does not exist."),
    ({"source": "open_clip", "model_name": "x", "pretrained": []}, "'m': pretrained must be"),
    ({"source": "timm", "model_name": "x", "model_parameters": {"wieghts": 1}},
     "'m': unknown key 'model_parameters.wieghts'. Source 'timm' takes model_parameters: "
     "extract_cls_token, token_extraction."),
    ({"source": "checkpoint", "arch": 3, "path": "x.pt"}, "'m': arch must be the id of another"),
    ({"source": "checkpoint", "arch": "a"}, "'m': source 'checkpoint' needs key 'path'."),
    ({"source": "ssl", "model_name": "dino-vit-smal-p16"}, "'m': unknown ssl model_name"),
    ({"source": "ssl", "model_name": "dino-vit-small-p16", "pretrained": "yes"},
     "'m': pretrained must be true/false (got 'yes')."),
    ({"source": "ssl", "model_name": "dino-vit-small-p16", "model_parameters": {"x": 1}},
     "'m': unknown key 'model_parameters.x'. Source 'ssl' takes model_parameters:"),
    ({"source": "python", "factory": "nope", "transform": {}}, "'m': factory must be"),
    ({"source": "hf", "model_name": "a", "config": "c.json"}, "needs exactly one of"),
    ({"source": "timm", "model_name": "x", "sorce": 1}, "'m': unknown key 'sorce'"),
]  # fmt: skip


@pytest.mark.parametrize("entry, fragment", SOURCE_CASES)
def test_source_keys_are_validated_by_their_spec_classes(entry, fragment):
    assert fragment in _problems({"a": {"source": "timm", "model_name": "test_vit"}, "m": entry})


# -- similarity config ------------------------------------------------------------------------


SIMILARITY_CASES = [(method, name) for method, keys in METRIC_KEYS.items() for name in keys]


@pytest.mark.parametrize("method, name", SIMILARITY_CASES)
def test_every_similarity_key_refuses_a_bad_value(method, name):
    key = METRIC_KEYS[method][name]
    bad = _bad_value(key)
    entry = {"sim_method": method, name: bad}
    if method == "cka" and name != "sim_kernel":
        entry["sim_kernel"] = "rbf"  # the bandwidths apply to the rbf kernel
        entry.setdefault("sigma", 0.4) if name == "unbiased" else None
    with pytest.raises(ConfigError) as info:
        parse_similarity_config([{"sim_method": "mknn"}, entry], "metrics.json")
    assert _expected("metrics.json: entry 1", key, bad) in str(info.value)


@pytest.mark.parametrize(
    "entry, fragment",
    [
        (
            {"sim_method": "cka", "sim_kernel": "rbf", "sigma": 0},
            "sigma must be a finite number > 0",
        ),
        ({"sim_method": "cka", "sim_kernel": "rbf", "sigma_median": -1}, "sigma_median must be"),
        ({"sim_method": "mknn", "k": 0}, "k must be a positive integer (got 0)."),
        ({"sim_method": "mknn", "k": True}, "k must be a positive integer (got True)."),
        ({"sim_method": "cka", "sim_kernel": "rbf"}, "the rbf kernel needs exactly one of"),
        ({"sim_kernel": "rbf"}, "missing key 'sim_method' (one of cka, rsa, mknn)."),
        ({"sim_method": "CKA"}, "unknown sim_method 'CKA'; did you mean 'cka'?"),
    ],
)
def test_similarity_ranges(entry, fragment):
    with pytest.raises(ConfigError) as info:
        parse_similarity_config([entry], "metrics.json")
    assert f"metrics.json: entry 0: {fragment}" in str(info.value)


def test_similarity_problems_come_together():
    with pytest.raises(ConfigError) as info:
        parse_similarity_config(
            [
                {"sim_method": "mknn", "k": -1},
                {"sim_method": "rsa", "rsa_method": "euclid", "corr_method": "kendall"},
                {"sim_method": "cka", "unbiased": "no"},
            ],
            "m.json",
        )
    assert len(str(info.value).splitlines()) == 4


# -- SLURM config -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SLURM_KEYS))
def test_every_slurm_key_refuses_a_bad_value(tmp_path, name):
    key = SLURM_KEYS[name]
    bad = {"sbatch": {"account": [1]}, "setup": "module load x"}.get(name, _bad_value(key))
    path = tmp_path / "slurm.json"
    path.write_text(json.dumps({name: bad}))
    with pytest.raises(ConfigError) as info:
        load_slurm_config(path)
    assert _expected(str(path), key, bad) in str(info.value)


@pytest.mark.parametrize("name", sorted(CONTAINER_KEYS))
def test_every_container_key_refuses_a_bad_value(tmp_path, name):
    key = CONTAINER_KEYS[name]
    bad = _bad_value(key)
    path = tmp_path / "slurm.json"
    path.write_text(json.dumps({"container": {"image": "x.sif", name: bad}}))
    with pytest.raises(ConfigError) as info:
        load_slurm_config(path)
    assert _expected(str(path), key, bad, "container.") in str(info.value)


@pytest.mark.parametrize(
    "name, value, allowed",
    [
        ("cpus_per_task", 0, "a positive integer"),
        ("gpus_per_node", -1, "an integer >= 0"),
        ("mem_gb", 0, "a finite number > 0"),
        ("timeout_min", 0, "a positive integer"),
        ("array_parallelism", 2.0, "a positive integer"),
    ],
)
def test_slurm_ranges(tmp_path, name, value, allowed):
    path = tmp_path / "slurm.json"
    path.write_text(json.dumps({name: value, "partiton": "gpu"}))
    with pytest.raises(ConfigError) as info:
        load_slurm_config(path)
    lines = str(info.value).splitlines()
    assert f"{path}: {name} must be {allowed} (got {value!r})." in lines
    assert any("unknown key 'partiton'; did you mean 'partition'?" in line for line in lines)


def test_slurm_defaults_and_nulls(tmp_path):
    path = tmp_path / "slurm.json"
    path.write_text(json.dumps({"partition": None, "constraint": None, "container": None}))
    config = load_slurm_config(path)
    assert (config.partition, config.cpus_per_task, config.mem_gb, config.timeout_min) == (
        None,
        SLURM_KEYS["cpus_per_task"].default,
        SLURM_KEYS["mem_gb"].default,
        SLURM_KEYS["timeout_min"].default,
    )


# -- what ships, and Rep2Rep's files, load; the README's tables are the code's ----------------


def test_every_shipped_models_config_loads_in_all_sub_folders(tmp_path):
    files = sorted((REPO / "configs" / "models").rglob("*.json"))
    assert len(files) >= 7
    for path in files:
        try:
            load_models_config(path, base_dir=tmp_path)
        except ConfigError as error:  # only checkpoints trained by the demo may be absent
            problems = str(error).splitlines()[1:]
            assert all(p.endswith(".safetensors does not exist.") for p in problems), path


@pytest.mark.skipif(not REP2REP_REFERENCE.is_dir(), reason="Rep2Rep reference configs absent")
def test_rep2rep_reference_configs_load_unchanged():
    for path in sorted(REP2REP_REFERENCE.glob("models_config_*.json")):
        specs = load_models_config(path)
        assert list(specs) == list(json.loads(path.read_text()))
    for path in sorted(REP2REP_REFERENCE.glob("similarity_metric_config_*.json")):
        with pytest.warns(UserWarning, match="ignored keys"):
            assert len(parse_similarity_config(json.loads(path.read_text()), str(path))) > 0


def test_readme_schema_tables_are_generated_from_the_code():
    readme = (REPO / "README.md").read_text()
    assert BEGIN in readme and END in readme
    section = readme.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert section == config_reference().strip(), (
        "README config schema is stale: python -m sim_consistency.config.reference"
    )
