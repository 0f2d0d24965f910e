"""The training loop: bitwise determinism, seeds that matter, schedules, validation."""

from __future__ import annotations

import math
import re

import pytest
import torch

from sim_consistency.config.models import parse_models_config
from sim_consistency.errors import ConfigError
from sim_consistency.merging.evaluate import PreprocessedSplit
from sim_consistency.models import create_model, state_dict_sha256
from sim_consistency.training import (
    FitOptions,
    fit,
    learning_rate,
    load_training_data,
    torch_threads,
    train_rows,
)


@pytest.fixture(scope="module")
def tiny_data(digits_root):
    """test_resnet (BatchNorm) at 16 px, 10 % of the digits train rows, 120 val rows."""
    specs = parse_models_config(
        {"r": {"source": "timm", "model_name": "test_resnet", "num_classes": 10, "img_size": 16}}
    )
    with torch_threads(1):
        loaded = create_model(specs["r"], specs)
    data = load_training_data("wds/digits", loaded.transform, location=digits_root)
    rows = torch.from_numpy(train_rows(data.train.labels.numpy(), 0.1))
    train = PreprocessedSplit(data.train.images[rows], data.train.labels[rows], 64)
    heldout = PreprocessedSplit(data.val.images[:120], data.val.labels[:120], 120)
    return specs, train, heldout


OPTIONS = FitOptions(epochs=2, lr=3e-3, schedule="cosine", seed=3, batch_size=32)


def _train(specs, train, heldout, options):
    with torch_threads(1):
        model = create_model(specs["r"], specs).model
    curve = fit(model, train, options, heldout=heldout, progress=False)
    return model.state_dict(), curve


@pytest.fixture(scope="module")
def first_run(tiny_data):
    """One training run under :data:`OPTIONS`, with the global RNG's next draw recorded."""
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    state, curve = _train(*tiny_data, OPTIONS)
    return state, curve, torch.equal(torch.rand(3), expected_next)


@pytest.mark.slow
def test_same_seed_gives_bitwise_identical_weights(tiny_data, first_run):
    first, curve_a, _ = first_run
    second, curve_b = _train(*tiny_data, OPTIONS)
    assert state_dict_sha256(first) == state_dict_sha256(second)
    assert curve_a == curve_b


@pytest.mark.slow
def test_another_seed_gives_other_weights_and_global_rng_is_untouched(tiny_data, first_run):
    first, _, rng_untouched = first_run
    assert rng_untouched
    assert not torch.are_deterministic_algorithms_enabled()
    other, _ = _train(*tiny_data, FitOptions(**{**OPTIONS.to_json(), "seed": 4}))
    assert state_dict_sha256(first) != state_dict_sha256(other)


@pytest.mark.slow
def test_curve_records_each_epoch_and_training_learns(first_run):
    _, curve, _ = first_run
    assert [r["epoch"] for r in curve] == [1, 2]
    assert all(0.0 <= r["heldout_acc"] <= 1.0 and r["train_loss"] > 0 for r in curve)
    assert curve[-1]["lr"] < OPTIONS.lr  # cosine decayed by the last step
    assert curve[-1]["train_loss"] < curve[0]["train_loss"]
    assert curve[-1]["train_acc"] > 0.2  # chance is 0.1


def test_learning_rate_schedules():
    constant = FitOptions(epochs=2, lr=0.01)
    assert learning_rate(constant, 0, 10) == learning_rate(constant, 9, 10) == 0.01
    cosine = FitOptions(epochs=2, lr=0.01, schedule="cosine")
    assert learning_rate(cosine, 0, 10) == pytest.approx(0.01)
    assert learning_rate(cosine, 5, 10) == pytest.approx(0.005)
    assert learning_rate(cosine, 10, 10) == pytest.approx(0.0, abs=1e-12)
    assert math.isclose(learning_rate(cosine, 9, 10), 0.01 * 0.5 * (1 + math.cos(0.9 * math.pi)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0, "lr": 0.1}, "epochs must be a positive integer (got 0)"),
        ({"epochs": 1, "lr": -1.0}, "lr must be a positive number (got -1.0)"),
        ({"epochs": 1, "lr": 0.1, "schedule": "step"}, "unknown schedule 'step'"),
        ({"epochs": 1, "lr": 0.1, "batch_size": 1}, "batch_size must be an integer >= 2"),
    ],
)
def test_fit_options_are_validated(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        FitOptions(**kwargs)
