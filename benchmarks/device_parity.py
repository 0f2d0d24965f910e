"""Check: features extracted on an accelerator match the CPU ones (same cache layout, keys).

Runs the feature-extraction stage twice on ``wds/digits`` test (float32 storage), once with
``--device cpu`` and once with ``--device cuda``, and prints the max |difference| per model and
block relative to the features' scale. Needs a CUDA machine.

    python benchmarks/device_parity.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sim_consistency.features import open_cache  # noqa: E402
from sim_consistency.project import ProjectLocation  # noqa: E402
from sim_consistency.stages import feature_extraction  # noqa: E402

MODELS = {
    "vit": {"source": "timm", "model_name": "test_vit", "num_classes": 10},
    "cnx": {"source": "timm", "model_name": "test_convnext", "num_classes": 10},
    "rn": {"source": "timm", "model_name": "test_resnet"},
}


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "models.json"
        config.write_text(json.dumps(MODELS))
        roots = {}
        for device in ("cpu", "cuda"):
            root = Path(tmp) / device
            code = feature_extraction.main(
                [
                    "--project_root",
                    str(root),
                    "--models_config",
                    str(config),
                    "--datasets",
                    "wds/digits",
                    "--splits",
                    "test",
                    "--dtype",
                    "float32",
                    "--device",
                    device,
                    "--num_workers",
                    "2",
                ]
            )
            assert code == 0, f"extraction on {device} failed"
            roots[device] = ProjectLocation(root)
        worst = 0.0
        for model_id in MODELS:
            paths = [roots[d].feature_file("wds/digits", "test", model_id) for d in roots]
            with open_cache(paths[0]) as a, open_cache(paths[1]) as b:
                assert a.keys.tolist() == b.keys.tolist() and a.content_key == b.content_key
                for name in a.block_names:
                    x, y = a.block(name), b.block(name)
                    rel = float(np.abs(x - y).max() / (np.abs(x).max() + 1e-12))
                    worst = max(worst, rel)
                    print(f"{model_id:<4} {name:<22} max|cpu-cuda|/max|cpu| = {rel:.2e}")
                if a.has_logits:
                    rel = float(np.abs(a.logits - b.logits).max() / np.abs(a.logits).max())
                    print(f"{model_id:<4} {'logits':<22} max|cpu-cuda|/max|cpu| = {rel:.2e}")
        print(f"worst relative difference: {worst:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
