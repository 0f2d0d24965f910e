"""Train linear probes on cached features of every model and dataset; score their heads.

Example:
    python scripts/single_model_evaluation.py --models_config configs/models/demo.json \
        --datasets wds/digits --blocks all --seeds 0 1 2 --protocol fast
"""

from sim_consistency.stages import single_model_evaluation

if __name__ == "__main__":
    raise SystemExit(single_model_evaluation.main())
