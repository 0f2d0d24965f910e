"""The one finite-value check: NumPy and torch inputs, rows named as the file holds them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sim_consistency.errors import DataError, NonFiniteError, SimcError
from sim_consistency.finite import check_finite


def test_finite_values_and_integers_pass():
    check_finite(np.ones((3, 2)), "x")
    check_finite(torch.ones(3, 2), "x")
    check_finite(np.arange(5), "labels")
    check_finite(torch.arange(5), "labels")
    check_finite(2.0, "scalar")


@pytest.mark.parametrize("backend", [np.asarray, torch.as_tensor])
def test_counts_rows_and_names_the_first(backend):
    values = np.ones((6, 2, 2), np.float32)
    values[4, 1, 0] = np.nan
    values[2, 0, 1] = -np.inf
    with pytest.raises(NonFiniteError) as info:
        check_finite(backend(values), "cache.h5: block 'b'", hint="Re-extract.", first_row=10,
                     row_names=[f"k{i}" for i in range(6)])  # fmt: skip
    assert str(info.value) == (
        "cache.h5: block 'b' has NaN/inf values in 2 row(s), the first at row 12 (key 'k2'). "
        "Re-extract."
    )


def test_one_class_a_data_error_of_ours():
    assert issubclass(NonFiniteError, DataError) and issubclass(NonFiniteError, ValueError)
    assert issubclass(NonFiniteError, SimcError)
    with pytest.raises(NonFiniteError, match="at row 0"):
        check_finite(float("nan"), "alpha")
    with pytest.raises(NonFiniteError, match="in 1 row"):
        check_finite(np.array([1.0, np.inf]), "curve")
