"""The Rep2Rep paper's analyses from stored similarity matrices and feature caches.

Example:
    python scripts/analyses.py --models_config configs/models/demo.json \
        --datasets wds/digits wds/other --similarity_config configs/similarity/default.json
"""

from _entry import run_main

if __name__ == "__main__":
    raise SystemExit(run_main("sim_consistency.stages.analyses"))
