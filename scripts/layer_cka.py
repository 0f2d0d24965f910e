"""Block×block linear CKA grids between a reference model and the others (+ heatmaps, profile).

Example:
    python scripts/layer_cka.py --models_config configs/models/demo.json \
        --datasets wds/digits --reference pretrained
"""

from _entry import run_main

if __name__ == "__main__":
    raise SystemExit(run_main("sim_consistency.stages.layer_cka"))
