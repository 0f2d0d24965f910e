"""Materialise the variant entries of a models config (soups, MonoSoup, WiSE-FT, TIES, …).

Example:
    python scripts/build_variants.py --models_config configs/models/demo.json \
        --model_key soup_greedy
"""

from sim_consistency.stages import build_variants

if __name__ == "__main__":
    raise SystemExit(build_variants.main())
