"""The config schema as Markdown, generated from the constraint tables (the README's copy).

``python -m sim_consistency.config.reference`` prints it; a test checks that the README's
section between the ``config-schema`` markers equals it, so the documentation cannot drift from
what the loaders accept.
"""

from __future__ import annotations

__all__ = ["BEGIN", "END", "config_reference"]

BEGIN = "<!-- config-schema:begin (generated: python -m sim_consistency.config.reference) -->"
END = "<!-- config-schema:end -->"


def config_reference() -> str:
    """Every config's keys (type, allowed values, default, meaning) as Markdown."""
    from sim_consistency.config.models import COMMON_KEYS, REPRESENTATION_KEYS, TOKEN_PARAMETERS
    from sim_consistency.config.schema import markdown_table
    from sim_consistency.config.similarity import METRIC_KEYS, SIM_METHOD
    from sim_consistency.config.variants import METHOD_SPECS, MONOSOUP_PRESETS
    from sim_consistency.launch.slurm_config import CONTAINER_KEYS, SLURM_KEYS

    parts = [
        "#### Models config: keys of every entry",
        "",
        markdown_table({**COMMON_KEYS, **REPRESENTATION_KEYS}),
        "",
        "`model_parameters` (Rep2Rep) also holds the source's own parameters; the "
        "representation keys are:",
        "",
        markdown_table(TOKEN_PARAMETERS),
        "",
        "Descriptive keys (`objective`, `architecture_class`, `dataset`, `size`, …) are kept as "
        "metadata. Each base `source` validates its own keys and values (types; model names against "
        "the registry for torchvision, ssl and custom; files exist) with its spec class "
        "(`SOURCE_SPECS`), see "
        '"Bringing your models":',
        "",
        _sources_table(),
        "",
        "#### Models config: `variant` methods",
        "",
        'Every variant is `{"variant": {"method": …, …}}`; each method\'s keys:',
    ]
    for method, spec in METHOD_SPECS.items():
        parts += ["", f"`{method}` — {spec.DOC}", "", markdown_table(spec.KEYS)]
    presets = "; ".join(
        f"`{name}`: " + ", ".join(f"{k}={v}" for k, v in values.items())
        for name, values in MONOSOUP_PRESETS.items()
    )
    parts += [
        "",
        f"MonoSoup presets (explicit keys override them): {presets}.",
        "",
        "#### Similarity config (a list of metric objects)",
        "",
        markdown_table({"sim_method": SIM_METHOD}),
    ]
    for method, keys in METRIC_KEYS.items():
        parts += ["", f"`sim_method: {method}`", "", markdown_table(keys)]
    parts += [
        "",
        "#### SLURM config",
        "",
        markdown_table(SLURM_KEYS),
        "",
        "`container`:",
        "",
        markdown_table(CONTAINER_KEYS),
    ]
    return "\n".join(parts)


def _sources_table() -> str:
    from sim_consistency.models.sources.specs import SOURCE_SPECS  # imports torch: docs only

    lines = ["| source | spec class | keys (required in bold) |", "|---|---|---|"]
    for source, spec in SOURCE_SPECS.items():
        keys = ", ".join(
            f"**`{k}`**" if k in spec.REQUIRED else f"`{k}`" for k in sorted(spec.KEYS)
        )
        lines.append(f"| `{source}` | `{spec.__name__}` | {keys} |")
    return "\n".join(lines)


def main() -> None:
    print(BEGIN)
    print(config_reference())
    print(END)


if __name__ == "__main__":
    main()
