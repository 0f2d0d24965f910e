"""Materialise the variant entries of a models config (soups, MonoSoup, WiSE-FT, TIES, …).

Example:
    python scripts/build_variants.py --models_config configs/models/demo.json \
        --model_key soup_greedy
"""

from _entry import run_main

if __name__ == "__main__":
    raise SystemExit(run_main("sim_consistency.stages.build_variants"))
