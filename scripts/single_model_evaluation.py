"""Train linear probes on cached features of every model and dataset; score their heads.

Example:
    python scripts/single_model_evaluation.py --models_config configs/models/demo.json \
        --datasets wds/digits --blocks all --seeds 0 1 2 --protocol fast
"""

from _entry import run_main

if __name__ == "__main__":
    raise SystemExit(run_main("sim_consistency.stages.single_model_evaluation"))
