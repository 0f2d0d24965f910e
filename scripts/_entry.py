"""Start a script: find the package, run its ``main``, or say in one line how to set things up.

Every ``scripts/*.py`` is ``run_main("<module>")``. Run from any directory
(``cd scripts && python feature_extraction.py``): when the running Python cannot import
``sim_consistency`` but this checkout holds it, the checkout is put on ``sys.path`` (a Python
with the dependencies, e.g. a conda environment, then works without installing the package).
When the package or one of its dependencies is still missing, the script prints one line naming
the module and how to set up the environment (``make sync``, then ``uv run python scripts/…``)
and exits with 2, instead of a ``ModuleNotFoundError`` traceback. Standard library only: this
runs before anything is known to be importable.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

__all__ = ["run_main", "missing_environment_hint"]

PACKAGE = "sim_consistency"
CHECKOUT = Path(__file__).resolve().parents[1]


def _script_name() -> str:
    """The running script, relative to the checkout when it lies inside it."""
    script = Path(sys.argv[0]).resolve()
    try:
        return script.relative_to(CHECKOUT).as_posix()
    except ValueError:
        return str(script)


def missing_environment_hint(missing: str) -> str:
    """Return the one-line message for a module this Python cannot import."""
    return (
        f"error: {_script_name()}: this Python ({sys.executable}) cannot import '{missing}': "
        f"the project's environment is not set up or not active. Run `make sync` once in "
        f"{CHECKOUT}, then `uv run python {_script_name()} …` (or activate {CHECKOUT / '.venv'})."
    )


def run_main(module: str) -> int:
    """Import ``module`` and return its ``main()``; a missing environment returns 2 with a hint."""
    if importlib.util.find_spec(PACKAGE) is None and (CHECKOUT / PACKAGE / "__init__.py").is_file():
        sys.path.insert(1, str(CHECKOUT))
    try:
        return importlib.import_module(module).main()
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if not missing or (missing.startswith(f"{PACKAGE}.") and importlib.util.find_spec(PACKAGE)):
            raise  # a module of the package itself is missing: a bug, not the environment
        print(missing_environment_hint(missing.split(".")[0]), file=sys.stderr)
        return 2
