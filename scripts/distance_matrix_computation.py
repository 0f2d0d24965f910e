"""Compute model×model similarity matrices (CKA, RSA, mutual k-NN) per dataset and metric.

Example:
    python scripts/distance_matrix_computation.py --models_config configs/models/demo.json \
        --datasets wds/digits --similarity_config configs/similarity/default.json
"""

from _entry import run_main

if __name__ == "__main__":
    raise SystemExit(run_main("sim_consistency.stages.distance_matrix_computation"))
