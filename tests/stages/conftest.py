"""Fixtures for stage tests: a fresh project root that shares the session's digits shards."""

from __future__ import annotations

import json
import os

import pytest

from sim_consistency.project import ProjectLocation


@pytest.fixture
def project(tmp_path, digits_root) -> ProjectLocation:
    """A new project root whose ``wds/digits`` is a symlink to the session-built shards."""
    location = ProjectLocation.resolve(tmp_path / "root").create()
    os.symlink(digits_root.wds_dataset_dir("digits"), location.wds_dataset_dir("digits"))
    return location


@pytest.fixture
def models_config(tmp_path):
    """Write a models config and return its path: ``models_config({...})``."""

    def write(entries: dict, name: str = "models.json"):
        path = tmp_path / name
        path.write_text(json.dumps(entries))
        return path

    return write
