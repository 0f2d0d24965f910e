"""sim_consistency.training exports what it lists, each name documented."""

from __future__ import annotations

import inspect

import sim_consistency.training as training


def test_every_exported_name_exists_and_is_documented():
    assert training.__doc__
    for name in training.__all__:
        obj = getattr(training, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert inspect.getdoc(obj), f"sim_consistency.training.{name} has no docstring"
