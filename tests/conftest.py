"""Session fixtures shared by the test suite: tiny real data built once per session."""

from __future__ import annotations

import pytest

from sim_consistency.data import build_digits
from sim_consistency.project import ProjectLocation


@pytest.fixture(scope="session")
def digits_root(tmp_path_factory: pytest.TempPathFactory) -> ProjectLocation:
    """A project root with ``wds/digits`` built into it (read-only for tests: copy to modify)."""
    location = ProjectLocation.resolve(tmp_path_factory.mktemp("digits_root"))
    build_digits(location)
    return location
