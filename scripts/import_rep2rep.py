"""Import Rep2Rep's stored features or similarity matrices into this project.

Example:
    python scripts/import_rep2rep.py features --rep2rep_root /data/rep2rep \
        --datasets wds/vtab/cifar10 --splits train test
    python scripts/import_rep2rep.py similarities --rep2rep_root /data/rep2rep \
        --datasets configs/datasets/rep2rep_vtab.txt
"""

from _entry import run_main

if __name__ == "__main__":
    raise SystemExit(run_main("sim_consistency.stages.import_rep2rep"))
