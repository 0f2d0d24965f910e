"""Extract block-wise features of every model on every dataset split into the HDF5 cache.

Example:
    python scripts/feature_extraction.py --models_config configs/models/demo.json \
        --datasets wds/digits --max_samples 500
"""

from _entry import run_main

if __name__ == "__main__":
    raise SystemExit(run_main("sim_consistency.stages.feature_extraction"))
