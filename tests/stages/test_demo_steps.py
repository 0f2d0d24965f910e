"""The demo's soup study is wired as a pipeline: generate → extract → layer CKA → soup metrics."""

from __future__ import annotations

import json

from sim_consistency.project import ProjectLocation
from sim_consistency.stages import demo


def _after(argv: list[str], flag: str) -> list[str]:
    i = argv.index(flag) + 1
    out = []
    while i < len(argv) and not argv[i].startswith("--"):
        out.append(argv[i])
        i += 1
    return out


def test_demo_generates_what_soup_metrics_reads(tmp_path):
    config = demo.DEFAULT_MODELS_CONFIG
    raw = json.loads(config.read_text())
    picked = demo.demo_models(config)
    assert len(picked["interpolation"]) == 3 * 11  # 3 barrier models: 3 paths × 11 points
    assert set(picked["branching"]) >= {
        "branchsoup__rn__e2__a5",
        "branchsoup__rn__e4__a7",
        "branchsoup__vit__e2__a5",
        "branchsoup__vit__e4__a7",
    }
    soups = [
        m for m, e in raw.items() if (e.get("variant") or {}).get("method") in demo._SOUP_METHODS
    ]
    for soup in soups:  # layer_cka holds every soup with its ingredients and W0
        assert {soup, *raw[soup]["variant"]["ingredients"]} <= set(picked["layer_cka"])
    steps = {title: argv for title, _, argv in demo.demo_steps(ProjectLocation(tmp_path), config)}
    build = next(a for t, a in steps.items() if t.startswith("build every variant"))
    soup = steps["soup metrics"]
    generated = _after(build, "--generate")[0]
    assert _after(soup, "--models_config") == [generated]
    for flag in ("--barrier_models", "--n_alphas"):
        assert _after(build, flag) == _after(soup, flag)
    cka = next(a for t, a in steps.items() if t.startswith("block×block CKA"))
    assert _after(cka, "--pairs") == ["all"] and _after(cka, "--datasets") == list(
        demo.DEMO_DATASETS
    )
    interp = steps["extract the interpolation points (test split)"]
    assert _after(interp, "--model_key") == picked["interpolation"]
