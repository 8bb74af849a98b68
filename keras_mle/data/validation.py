"""The one validation vocabulary: the input checks every entry point shares.

The checks run before any work: a bad argument raises a `ValueError` (a `TypeError` for
non-numeric data) whose message starts with the argument's name: `check_array`, `check_xy`,
`check_inputs`, `check_sample_weight`, `check_positive_int`, `check_optional_positive_int`,
`check_finite_scalar`, `check_positive_scalar`, `check_not_constant`, and `cast_for_model`
(which warns with `PrecisionWarning` when a cast to the model's dtype would lose information).
`num_rows`, `inputs_shape` and `take_rows` read checked inputs, one array or a dict of them.
"""

from __future__ import annotations

import math
import typing
import warnings

import numpy as np
import tensorflow as tf

__all__ = [
    "PRECISION_TOLERANCE",
    "PrecisionWarning",
    "check_array",
    "check_xy",
    "check_inputs",
    "num_rows",
    "inputs_shape",
    "take_rows",
    "check_sample_weight",
    "check_positive_int",
    "check_optional_positive_int",
    "check_finite_scalar",
    "check_positive_scalar",
    "check_not_constant",
    "cast_for_model",
]

#: Largest shift a cast may give the values of a column, as a fraction of the column's standard
#: deviation, before `cast_for_model` warns. At 1e-4 the slopes fitted to the cast data can be
#: off by about that fraction, far more than the 1e-7 float32 arithmetic itself costs.
PRECISION_TOLERANCE = 1e-4


class PrecisionWarning(UserWarning):
    """Data lose information in the cast to the model's dtype (call `adapt`, or use float64)."""


def check_array(name: str, value, *, dtype=None, ndim: tuple[int, ...] = (1, 2)) -> np.ndarray:
    """Returns `value` as a finite, non-empty, numeric NumPy array, or raises.

    Args:
        name: Argument name used in error messages.
        value: Array-like (NumPy array, list, `tf.Tensor`, pandas object).
        dtype: If given, the float dtype of the result. Defaults to `None` (keep floats, cast
            integers and booleans to float64, which holds them exactly).
        ndim: Allowed numbers of dimensions. Defaults to `(1, 2)`.

    Raises:
        TypeError: if `value` is `None` or not numeric.
        ValueError: if it is empty, has a disallowed rank, holds NaN or Inf, or is a
            `numpy.ma.MaskedArray` with masked cells (whose hidden values would be used).
    """
    if value is None:
        raise TypeError(f"{name} is required, got None.")
    if isinstance(value, np.ma.MaskedArray):
        value = _unmasked(name, value)
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.numpy()
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as error:
        raise TypeError(f"{name} must be a numeric array: {error}") from None
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {array.dtype}.")
    if array.ndim not in ndim:
        allowed = " or ".join(str(d) for d in ndim)
        raise ValueError(f"{name} must have {allowed} dimensions, got shape {array.shape}.")
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}).")
    if dtype is None:
        dtype = array.dtype if array.dtype.kind == "f" else np.float64
    array = array.astype(dtype, copy=False)
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{name} contains {bad} NaN or Inf value(s).")
    return array


def _unmasked(name: str, value: np.ma.MaskedArray) -> np.ndarray:
    # np.asarray drops a mask and keeps the values under it: refuse those cells, never use them.
    masked = int(np.ma.count_masked(value))
    if masked:
        raise ValueError(
            f"{name} is a masked array with {masked} masked cell(s) of {value.size}: their "
            f"hidden values would be used as data. Fill them ({name}.filled(value)) or drop "
            "their rows (from x, y and sample_weight alike) before fitting."
        )
    return np.ma.getdata(value)


def _is_pandas(value) -> bool:
    return hasattr(value, "iloc") and hasattr(value, "index")


def _check_aligned(first: tuple[str, object], second: tuple[str, object]) -> None:
    """Raises unless two pandas objects (if both are) have the same index, in the same order.

    Rows are paired by position once the data are arrays, so indexes that differ (`y` sorted
    after a split, or taken from another frame) would pair the wrong rows, silently. As in
    statsmodels, the same labels in another order are refused too rather than realigned: the
    other arrays of the call (and the rows' order) are positional, so a silent reorder of one
    argument would not be what was given.
    """
    (first_name, first_value), (second_name, second_value) = first, second
    if not (_is_pandas(first_value) and _is_pandas(second_value)):
        return
    first_index, second_index = first_value.index, second_value.index
    if len(first_index) != len(second_index) or first_index.equals(second_index):
        return  # (different lengths are refused, with the lengths, by the caller)
    if first_index.sort_values().equals(second_index.sort_values()):
        problem = "hold the same labels in a different order"
    else:
        position = int(np.flatnonzero(np.asarray(first_index != second_index))[0])
        problem = (
            f"differ (at position {position}: {_label(first_index, position)!r} and "
            f"{_label(second_index, position)!r})"
        )
    raise ValueError(
        f"{first_name} and {second_name} are pandas objects whose indexes {problem}: their rows "
        "would be paired by position, not by label. Align them first, e.g. "
        f"{second_name} = {second_name}.loc[{first_name}.index], or call "
        f".reset_index(drop=True) on both if the positions are the pairs you mean."
    )


def _label(index, position: int):
    return index[position : position + 1].tolist()[0]  # a Python value, not np.int64(...)


_ANY_RANK = tuple(range(1, 9))


def check_inputs(name: str, x, *, dtype=None, ndim=(1, 2)):
    """Checks the inputs `x` of a model: one array, or (with `ndim=None`) a dict of arrays.

    Args:
        name: Argument name used in error messages (a dict's entries are `name['key']`).
        x: Array-like, or a dict of them for a network with several named inputs.
        dtype: As for `check_array`.
        ndim: Allowed numbers of dimensions, or `None`: any array of one dimension or more
            (images, sequences), or a dict of such arrays with string keys and equal lengths:
            whatever a network accepts. Defaults to `(1, 2)`.

    Returns:
        The checked array, or a dict of checked arrays.
    """
    if isinstance(x, typing.Mapping) and not hasattr(x, "iloc"):
        if ndim is not None:
            raise TypeError(
                f"{name} must be one array of shape (N,) or (N, k), got a dict of "
                f"{len(x)} input(s): this model takes one feature matrix."
            )
        if not x or not all(isinstance(key, str) for key in x):
            raise ValueError(
                f"{name} must be a non-empty dict with string keys, got keys {list(x)}."
            )
        arrays = {
            key: check_array(f"{name}[{key!r}]", x[key], dtype=dtype, ndim=_ANY_RANK) for key in x
        }
        lengths = {key: len(array) for key, array in arrays.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"{name}: the inputs have different numbers of rows: {lengths}.")
        return arrays
    return check_array(name, x, dtype=dtype, ndim=_ANY_RANK if ndim is None else ndim)


def num_rows(x) -> int:
    """The number of rows of checked inputs (an array or a dict of arrays)."""
    return len(tf.nest.flatten(x)[0])


def inputs_shape(x):
    """The shape of checked inputs: a tuple, or a dict of tuples for named inputs."""
    return tf.nest.map_structure(lambda a: tuple(a.shape), x) if isinstance(x, dict) else x.shape


def take_rows(x, index):
    """`x[index]` for an array, a dict of arrays (named inputs) or `None`."""
    return None if x is None else tf.nest.map_structure(lambda a: a[index], x)


def check_xy(x, y=None, *, dtype=None, x_name: str = "x", y_name: str = "y", x_ndim=(1, 2)):
    """Checks features `x` of shape `(N,)` or `(N, k)` and targets `y` of shape `(N,)`.

    A `y` of shape `(N, 1)` is flattened to `(N,)`; any other second dimension is refused, so the
    loss can never broadcast `(N,)` predictions against `(N, 1)` targets into an `(N, N)` matrix.
    `x_ndim` is `check_inputs`' `ndim` (`None` for a network's images or dict of inputs).

    Pandas `x` and `y` must have the same index (see `_check_aligned`): rows are paired by
    position.

    Returns:
        `(x, y)` as NumPy arrays (`y` is `None` when not given).
    """
    _check_aligned((x_name, x), (y_name, y))
    x = check_inputs(x_name, x, dtype=dtype, ndim=x_ndim)
    if y is None:
        return x, None
    y = check_array(y_name, y, dtype=dtype)
    if y.ndim == 2:
        if y.shape[1] != 1:
            raise ValueError(
                f"{y_name} must have shape (N,) or (N, 1), got {y.shape}: one target per row."
            )
        y = y[:, 0]
    if len(y) != num_rows(x):
        raise ValueError(
            f"{x_name} and {y_name} have different lengths: {num_rows(x)} and {len(y)}."
        )
    return x, y


def check_sample_weight(
    sample_weight, n: int, *, dtype=None, name: str = "sample_weight", aligned_with=None
):
    """Checks per-sample weights: shape `(n,)`, finite, >= 0, not all zero. `None` passes.

    `aligned_with` is `(name, data)`, the data as given: a pandas `sample_weight` must then
    have the same index as pandas data (as `check_xy` checks `x` and `y`). Defaults to `None`.
    """
    if sample_weight is None:
        return None
    if aligned_with is not None:
        _check_aligned(aligned_with, (name, sample_weight))
    w = check_array(name, sample_weight, dtype=dtype, ndim=(1, 2))
    if w.ndim == 2:
        if w.shape[1] != 1:
            raise ValueError(f"{name} must have shape (N,), got {w.shape}.")
        w = w[:, 0]
    if len(w) != n:
        raise ValueError(f"{name} has length {len(w)}, but the data have {n} rows.")
    if np.any(w < 0):
        raise ValueError(f"{name} must be >= 0; got {int(np.sum(w < 0))} negative value(s).")
    if not np.any(w > 0):
        raise ValueError(f"{name} is zero everywhere: no data left to fit.")
    return w


def check_positive_int(name: str, value) -> int:
    """Raises `ValueError` naming `name` unless `value` is an integer >= 1 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def check_optional_positive_int(name: str, value) -> int | None:
    """`None`, or an integer >= 1 (see `check_positive_int`)."""
    return None if value is None else check_positive_int(name, value)


def check_finite_scalar(name: str, value) -> float:
    """Returns `value` as a finite Python float, or raises naming `name`."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}.") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}.")
    return number


def check_positive_scalar(name: str, value, *, allow_zero: bool = False) -> float:
    """Returns `value` as a finite float `> 0` (`>= 0` with `allow_zero`), or raises."""
    number = check_finite_scalar(name, value)
    if number < 0 or (number == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}.")
    return number


def check_not_constant(name: str, sample, *, hint: str = "") -> None:
    """Raises unless a 1-D sample takes at least two values: a Gaussian MLE needs spread.

    `hint` ends the message (what to do instead). Defaults to `""`.
    """
    if np.ptp(sample) == 0:
        verb = "are" if name == "samples" else "is"
        raise ValueError(
            f"{name} {verb} constant: the likelihood grows without bound as sigma -> 0, "
            f"so no MLE exists.{hint}"
        )


def cast_for_model(name: str, array: np.ndarray, dtype) -> np.ndarray:
    """`array` (checked, finite) cast to the model's `dtype`, warning if that loses information.

    A `PrecisionWarning` is issued when the cast shifts some value of a column by more than
    `PRECISION_TOLERANCE` of that column's standard deviation: distinct values then merge, or
    the spread of the data nears the dtype's resolution at their offset (e.g. x near 1e8 with a
    spread of 100 in float32, whose values there are 8 apart).
    """
    if isinstance(array, dict):  # a network's named inputs
        return {key: cast_for_model(f"{name}[{key!r}]", a, dtype) for key, a in array.items()}
    dtype = np.dtype(dtype)
    if array.dtype == dtype:
        return array
    cast = array.astype(dtype)
    if np.finfo(dtype).eps > np.finfo(array.dtype).eps and array.size > 1:
        columns = array.reshape(len(array), -1)
        shift = np.max(np.abs(cast.reshape(columns.shape) - columns), axis=0)
        spread = np.std(columns, axis=0)
        lossy = np.flatnonzero(shift > PRECISION_TOLERANCE * spread)
        if len(lossy):
            where = "" if columns.shape[1] == 1 else f" (column(s) {lossy.tolist()})"
            warnings.warn(
                f"{name}{where}: casting the {array.dtype} data to the model's {dtype} moves "
                f"values by up to {shift[lossy].max():.3g}, more than "
                f"{PRECISION_TOLERANCE:g} of their spread: the fit will not see the data as "
                "given. Call model.adapt(x, y) first (it centres the data in float64), or build "
                'the model with dtype="float64".',
                PrecisionWarning,
                stacklevel=3,
            )
    return cast
