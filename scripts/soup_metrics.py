"""Compare soups with their ingredients: accuracy, block CKA, weight geometry, barriers, basins, purity.

Example:
    python scripts/soup_metrics.py --models_config configs/models/demo_trained.json \
        --datasets wds/digits wds/digits_rotated --ood_datasets wds/digits_rotated \
        --barrier_models resnet_ft_0 resnet_ft_1
"""

from sim_consistency.stages import soup_metrics

if __name__ == "__main__":
    raise SystemExit(soup_metrics.main())
