"""Compute model×model similarity matrices (CKA, RSA, mutual k-NN) per dataset and metric.

Example:
    python scripts/distance_matrix_computation.py --models_config configs/models/demo.json \
        --datasets wds/digits --similarity_config configs/similarity/default.json
"""

from sim_consistency.stages import distance_matrix_computation

if __name__ == "__main__":
    raise SystemExit(distance_matrix_computation.main())
