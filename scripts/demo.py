"""Run the demo pipeline on the embedded digits data (what ``make demo`` runs)."""

from _entry import run_main

if __name__ == "__main__":
    raise SystemExit(run_main("sim_consistency.stages.demo"))
