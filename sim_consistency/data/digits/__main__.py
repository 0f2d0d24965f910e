"""``python -m sim_consistency.data.digits --project_root DIR [--force]``: build ``wds/digits``."""

from sim_consistency.data.digits.builder import main

raise SystemExit(main())
