"""Write this project's similarity matrices in Rep2Rep's layout (similarity_matrix.pt + model_ids.txt).

Example:
    python scripts/export_rep2rep.py --rep2rep_root /data/rep2rep --datasets wds/digits
"""

from _entry import run_main

if __name__ == "__main__":
    raise SystemExit(run_main("sim_consistency.stages.export_rep2rep"))
