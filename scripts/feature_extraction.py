"""Extract block-wise features of every model on every dataset split into the HDF5 cache.

Example:
    python scripts/feature_extraction.py --models_config configs/models/demo.json \
        --datasets wds/digits --max_samples 500
"""

from sim_consistency.stages import feature_extraction

if __name__ == "__main__":
    raise SystemExit(feature_extraction.main())
