"""Feature extraction's dry run (``--list_blocks``): blocks, widths and projected cache size."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sim_consistency.config import load_models_config
from sim_consistency.errors import ConfigError, SimcError
from sim_consistency.features.pipeline import block_specs, model_dataset
from sim_consistency.models import REP2REP_BLOCK, create_model

if TYPE_CHECKING:
    from sim_consistency.stages.feature_extraction import ExtractionSettings

__all__ = ["list_blocks"]


def list_blocks(settings: ExtractionSettings) -> str:
    """Return the dry-run report: blocks, pooled dims, bytes per image, projected cache size.

    Models are built on the meta device: no weights are read, downloaded or allocated, so the
    largest architectures list their blocks in seconds.

    Raises:
        ConfigError: some entries cannot be built; the message is the whole report with the
            reason on each such entry's line.
    """
    specs = load_models_config(settings.models_config, base_dir=settings.project_root)
    n_rows = {
        (d, s): len(model_dataset(settings, d, s))
        for d in settings.datasets
        for s in settings.splits
    }
    total_rows = sum(n_rows.values())
    itemsize = np.dtype(settings.dtype).itemsize
    lines: list[str] = []
    grand_total = 0
    failures: list[str] = []
    for model_id in settings.model_ids:
        try:  # the architecture only: no weights are read or allocated
            loaded = create_model(specs[model_id], specs, device="meta", location=settings.location)
        except SimcError as exc:
            failures.append(str(exc))
            lines.append(f"{model_id}: cannot be built: {exc}")
            continue
        blocks = block_specs(loaded)
        per_image = sum(info.dim for info in loaded.blocks) * itemsize
        if loaded.rep2rep is not None:
            per_image += loaded.rep2rep.dim * 4  # float32, as Rep2Rep stores it
        if loaded.has_head and loaded.n_classes:
            per_image += loaded.n_classes * 4
        projected = per_image * total_rows
        grand_total += projected
        lines.append(
            f"{model_id}: {loaded.family}, {len(loaded.blocks)} blocks"
            + (" + rep2rep" if loaded.rep2rep is not None else "")
            + f", {per_image:,} bytes/image, "
            f"{total_rows:,} images -> {projected / 2**20:.1f} MB"
            + (f" (+ logits {loaded.n_classes})" if loaded.has_head else "")
        )
        for info, block in zip(loaded.blocks, blocks[: len(loaded.blocks)], strict=True):
            lines.append(
                f"  {info.name:<32} {info.kind:<9} d={info.dim:<6} pooling={block.pooling}"
            )
        if loaded.rep2rep is not None:
            r = loaded.rep2rep
            lines.append(
                f"  {REP2REP_BLOCK:<32} {'vector':<9} d={r.dim:<6} pooling={r.pooling}+l2 "
                f"(module {r.module_name}, output {list(r.output_shape)}, float32)"
            )
    lines.append("datasets: " + ", ".join(f"{d}:{s} ({n:,} rows)" for (d, s), n in n_rows.items()))
    lines.append(f"projected cache size: {grand_total / 2**20:.1f} MB")
    if failures:
        raise ConfigError(
            "\n".join(lines) + f"\n{len(failures)} model(s) cannot be built (see above)."
        )
    return "\n".join(lines)
