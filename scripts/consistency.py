"""Rep2Rep consistency: correlate model×model similarity matrices across datasets.

Example:
    python scripts/consistency.py --models_config configs/models/demo.json \
        --datasets wds/digits wds/other --similarity_config configs/similarity/default.json
"""

from _entry import run_main

if __name__ == "__main__":
    raise SystemExit(run_main("sim_consistency.stages.consistency"))
