"""Built-in data sets of the two articles, and the input checks every entry point shares.

The checks run before any work: a bad argument raises a `ValueError` (a `TypeError` for
non-numeric data) whose message starts with the argument's name.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "noisy_line",
    "gaussian_sample",
    "check_array",
    "check_xy",
    "check_sample_weight",
    "check_positive_int",
    "stack_batches",
    "epoch_dataset",
]

#: Key of a data element that holds a whole epoch of stacked batches (see `epoch_dataset`).
STACKED_KEY = "stacked_batches"


def noisy_line(
    m: float = 1.0,
    b: float = 2.0,
    *,
    n: int = 100,
    noise: float = 0.15,
    seed: int | None = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Points along `y = m * x + b` with Gaussian noise in `y`.

    `x` is uniform on [0, 1) and the noise has standard deviation `noise`, as in the first article.

    Args:
        m: Slope. Defaults to `1.0`.
        b: Intercept. Defaults to `2.0`.
        n: Number of points. Defaults to `100`.
        noise: Standard deviation of the noise added to `y`. Defaults to `0.15`.
        seed: Seed of the NumPy generator. Defaults to `0`.

    Returns:
        `(x, y)`, two float32 arrays of shape `(n,)`.
    """
    check_positive_int("n", n)
    _check_finite_scalar("m", m)
    _check_finite_scalar("b", b)
    _check_positive("noise", noise, allow_zero=True)
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=n)
    y = m * x + b + rng.normal(scale=noise, size=n)
    return x.astype(np.float32), y.astype(np.float32)


def gaussian_sample(
    mu: float = 2.0,
    sigma: float = 1.0,
    *,
    n: int = 1000,
    seed: int | None = 0,
) -> np.ndarray:
    """A sample of `n` draws from `N(mu, sigma^2)`, as in the second article.

    Args:
        mu: Mean. Defaults to `2.0`.
        sigma: Standard deviation, > 0. Defaults to `1.0`.
        n: Sample size. Defaults to `1000`.
        seed: Seed of the NumPy generator. Defaults to `0`.

    Returns:
        A float32 array of shape `(n,)`.
    """
    check_positive_int("n", n)
    _check_finite_scalar("mu", mu)
    _check_positive("sigma", sigma)
    rng = np.random.default_rng(seed)
    return rng.normal(loc=mu, scale=sigma, size=n).astype(np.float32)


def stack_batches(x, y=None, sample_weight=None, *, batch_size: int, repeats: int = 1):
    """Stacks the batches of one epoch into arrays of shape `(num_batches, batch_size, ...)`.

    A last partial batch is padded with copies of the first rows given weight 0, which leaves
    every step's weighted loss and gradient unchanged (the weights then always exist).
    `repeats > 1` tiles the epoch: one pass over the result is `repeats` epochs.

    Args:
        x, y, sample_weight: Checked arrays (as from `model.check_data`).
        batch_size: Rows per batch.
        repeats: Epochs per pass. Defaults to `1`.

    Returns:
        `(x, y, sample_weight)` stacked; `y` is `None` when not given.
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("repeats", repeats)
    n = len(x)
    pad = -n % batch_size
    if pad or repeats > 1:
        if sample_weight is None:
            sample_weight = np.ones(n, dtype=x.dtype)
        index = np.concatenate([np.arange(n), np.arange(pad) % n])
        weight = np.concatenate([sample_weight, np.zeros(pad, sample_weight.dtype)])
        x, y, sample_weight = x[index], None if y is None else y[index], weight
    arrays = []
    for a in (x, y, sample_weight):
        if a is not None:
            a = a.reshape(-1, batch_size, *a.shape[1:])
            a = np.concatenate([a] * repeats) if repeats > 1 else a
        arrays.append(a)
    return tuple(arrays)


def epoch_dataset(x, y=None, sample_weight=None, *, batch_size: int, repeats: int = 1):
    """A `tf.data.Dataset` whose every element is one whole epoch, for the fast `fit()` path.

    `fit(epoch_dataset(x, y, batch_size=B), epochs=E, steps_per_epoch=1)` makes the same optimizer
    steps as `fit(x, y, batch_size=B, epochs=E, shuffle=False)`, but each epoch is one call of the
    compiled `train_step` (an in-graph loop over the batches; compile with `jit_compile=True`),
    so Keras' per-batch and per-epoch overheads are paid once per epoch. For small data, `repeats`
    packs several epochs into one element: one Keras epoch is then `repeats` passes.

    Inputs must already be checked (`model.check_data(x, y, sample_weight)`).
    """
    import tensorflow as tf

    stacked = stack_batches(x, y, sample_weight, batch_size=batch_size, repeats=repeats)
    element = {
        k: v for k, v in zip(("x", "y", "sample_weight"), stacked, strict=True) if v is not None
    }
    return tf.data.Dataset.from_tensors({STACKED_KEY: element}).repeat()


def check_array(name: str, value, *, dtype=None, ndim: tuple[int, ...] = (1, 2)) -> np.ndarray:
    """Returns `value` as a finite, non-empty, numeric NumPy array, or raises.

    Args:
        name: Argument name used in error messages.
        value: Array-like (NumPy array, list, `tf.Tensor`).
        dtype: If given, the float dtype of the result. Defaults to `None` (keep floats, cast
            integers and booleans to float32).
        ndim: Allowed numbers of dimensions. Defaults to `(1, 2)`.

    Raises:
        TypeError: if `value` is `None` or not numeric.
        ValueError: if it is empty, has a disallowed rank, or holds NaN or Inf.
    """
    if value is None:
        raise TypeError(f"{name} is required, got None.")
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
        dtype = array.dtype if array.dtype.kind == "f" else np.float32
    array = array.astype(dtype, copy=False)
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{name} contains {bad} NaN or Inf value(s).")
    return array


def check_xy(x, y=None, *, dtype=None, x_name: str = "x", y_name: str = "y"):
    """Checks features `x` of shape `(N,)` or `(N, k)` and targets `y` of shape `(N,)`.

    A `y` of shape `(N, 1)` is flattened to `(N,)`; any other second dimension is refused, so the
    loss can never broadcast `(N,)` predictions against `(N, 1)` targets into an `(N, N)` matrix.

    Returns:
        `(x, y)` as NumPy arrays (`y` is `None` when not given).
    """
    x = check_array(x_name, x, dtype=dtype)
    if y is None:
        return x, None
    y = check_array(y_name, y, dtype=dtype)
    if y.ndim == 2:
        if y.shape[1] != 1:
            raise ValueError(
                f"{y_name} must have shape (N,) or (N, 1), got {y.shape}: one target per row."
            )
        y = y[:, 0]
    if len(y) != len(x):
        raise ValueError(f"{x_name} and {y_name} have different lengths: {len(x)} and {len(y)}.")
    return x, y


def check_sample_weight(sample_weight, n: int, *, dtype=None, name: str = "sample_weight"):
    """Checks per-sample weights: shape `(n,)`, finite, >= 0, not all zero. `None` passes."""
    if sample_weight is None:
        return None
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


def check_positive_int(name: str, value) -> None:
    """Raises `ValueError` naming `name` unless `value` is an integer >= 1 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def _check_finite_scalar(name, value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}.") from None
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}.")
    return value


def _check_positive(name, value, allow_zero=False):
    value = _check_finite_scalar(name, value)
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}.")
    return value
