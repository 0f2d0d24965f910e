"""Block×block linear CKA grids between a reference model and the others (+ heatmaps, profile).

Example:
    python scripts/layer_cka.py --models_config configs/models/demo.json \
        --datasets wds/digits --reference pretrained
"""

from sim_consistency.stages import layer_cka

if __name__ == "__main__":
    raise SystemExit(layer_cka.main())
