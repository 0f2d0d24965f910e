"""Where the project root and its sub-folders are; creates them.

Root = ``--project_root`` flag, else the ``SIMC_ROOT`` environment variable, else
``project_root`` in this checkout (the current directory when the package is installed without
one), wherever the process starts — so notebooks started in ``notebooks/`` find the stages'
study. Notebooks do ``from project_location import project_location`` (or use
:class:`sim_consistency.project.ProjectLocation` directly)::

    python project_location.py [--project_root DIR]    # creates and prints the folders
"""

from __future__ import annotations

import argparse
import os
import sys

from sim_consistency.project import DEFAULT_ROOT, ENV_VAR, ProjectLocation, resolve_project_root

__all__ = ["ProjectLocation", "resolve_project_root", "project_location", "main"]


def project_location(project_root: str | os.PathLike | None = None) -> ProjectLocation:
    """Return the project's folders, created on disk, with the documented root precedence."""
    return ProjectLocation.resolve(project_root).create()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=f"Create and print the project folders (root: --project_root > ${ENV_VAR} "
        f"> {DEFAULT_ROOT} in the checkout)."
    )
    parser.add_argument("--project_root", default=None, help="project root folder")
    args = parser.parse_args(argv)
    location = project_location(args.project_root)
    width = max(len(name) for name in location.folders())
    for name, path in location.folders().items():
        print(f"{name:<{width}}  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
