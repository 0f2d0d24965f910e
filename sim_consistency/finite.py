"""The one finite-value check: NaN/inf in features, logits, weights or curves, named precisely.

Every check of the package goes through :func:`check_finite` and raises
:class:`~sim_consistency.errors.NonFiniteError`, so callers catch one class and users read one
message shape: what holds the values, how many rows are affected, the first one (and its key
when the rows have names), and what to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sim_consistency.errors import NonFiniteError

__all__ = ["check_finite"]


def _bad_rows(values: Any) -> np.ndarray | None:
    """Return the indices of rows (first axis) holding NaN/inf, or None when all are finite."""
    if hasattr(values, "is_floating_point") and hasattr(values, "isfinite"):  # a torch tensor
        if not values.is_floating_point() and not values.is_complex():
            return None
        finite = values.isfinite()
        if bool(finite.all()):
            return None
        rows = finite.reshape(finite.shape[0], -1).all(dim=1) if finite.ndim else finite[None]
        return np.flatnonzero(~rows.cpu().numpy())
    array = np.asarray(values)
    if not np.issubdtype(array.dtype, np.inexact):
        return None
    finite = np.isfinite(array)
    if finite.all():
        return None
    rows = finite.reshape(finite.shape[0], -1).all(axis=1) if finite.ndim else finite[None]
    return np.flatnonzero(~rows)


def check_finite(
    values: Any,
    what: str,
    *,
    hint: str = "",
    first_row: int = 0,
    row_names: Sequence[Any] | np.ndarray | None = None,
) -> None:
    """Raise :class:`NonFiniteError` if ``values`` hold NaN or inf; otherwise do nothing.

    Args:
        values: a NumPy array, a torch tensor (checked on its device) or an array-like; rows are
            its first axis (a scalar is one row). Integer and boolean values are always finite.
        what: where the values come from, as the message's subject
            (``"features/…/vit.h5: block 'blocks.3'"``).
        hint: what to do about it, appended to the message.
        first_row: index of ``values``' first row in the file it belongs to (a batch at an
            offset), so the message names the row of the file.
        row_names: names (keys) of the rows; the first bad row's name is added to the message.

    Raises:
        NonFiniteError: ``"<what> has NaN/inf values in <k> row(s), the first at row <i>
            [(key <name>)]. <hint>"``.
    """
    bad = _bad_rows(values)
    if bad is None:
        return
    first = int(bad[0])
    name = f" (key {row_names[first]!r})" if row_names is not None else ""
    message = (
        f"{what} has NaN/inf values in {bad.size} row(s), the first at row {first_row + first}"
        f"{name}."
    )
    raise NonFiniteError(f"{message} {hint}".rstrip())
