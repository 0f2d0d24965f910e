"""Train the demo's own small real models on digits: W0, fine-tuned and branched runs.

Example:
    python scripts/train_demo_models.py --project_root project_root \
        --write_models_config configs/models/demo_trained.json
"""

from _entry import run_main

if __name__ == "__main__":
    raise SystemExit(run_main("sim_consistency.stages.train_demo_models"))
