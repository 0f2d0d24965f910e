"""Probes of model sets: concatenated features (concat, concat_pca) and ensembles.

Example:
    python scripts/combined_probe.py --models_config configs/models/demo.json \
        --model_sets sets.json --datasets wds/digits --combiners concat concat_pca ensemble
"""

from _entry import run_main

if __name__ == "__main__":
    raise SystemExit(run_main("sim_consistency.stages.combined_probe"))
