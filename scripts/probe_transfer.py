"""Score single-model probes trained on one dataset on others through class maps.

Example:
    python scripts/probe_transfer.py --models_config M.json --source_dataset wds/imagenet1k \
        --target_datasets wds/imagenet-a wds/imagenet-r wds/imagenetv2 wds/imagenet_sketch
"""

from _entry import run_main

if __name__ == "__main__":
    raise SystemExit(run_main("sim_consistency.stages.probe_transfer"))
