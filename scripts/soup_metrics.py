"""Compare soups with their ingredients: accuracy, block CKA, weight geometry, barriers, basins, purity.

Example:
    python scripts/soup_metrics.py --models_config configs/models/demo_trained.json \
        --datasets wds/digits wds/digits_rotated --ood_datasets wds/digits_rotated \
        --barrier_models resnet_ft_0 resnet_ft_1
"""

from _entry import run_main

if __name__ == "__main__":
    raise SystemExit(run_main("sim_consistency.stages.soup_metrics"))
