"""Run the demo pipeline on the embedded digits data (what ``make demo`` runs)."""

from sim_consistency.stages import demo

if __name__ == "__main__":
    raise SystemExit(demo.main())
