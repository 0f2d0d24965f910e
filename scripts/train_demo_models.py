"""Train the demo's own small real models on digits: W0, fine-tuned and branched runs.

Example:
    python scripts/train_demo_models.py --project_root project_root \
        --write_models_config configs/models/demo_trained.json
"""

from sim_consistency.stages import train_demo_models

if __name__ == "__main__":
    raise SystemExit(train_demo_models.main())
