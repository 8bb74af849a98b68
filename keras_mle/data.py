"""Built-in data sets, the input checks every entry point shares, and the datasets `fit` reads.

The checks run before any work: a bad argument raises a `ValueError` (a `TypeError` for
non-numeric data) whose message starts with the argument's name. They are the package's one
validation vocabulary: `check_array`, `check_xy`, `check_sample_weight`, `check_positive_int`,
`check_optional_positive_int`, `check_finite_scalar`, `check_positive_scalar`,
`check_not_constant`, and `cast_for_model` (which warns with `PrecisionWarning` when a cast to the
model's dtype would lose information).
"""

from __future__ import annotations

import math
import typing
import warnings

import numpy as np
import tensorflow as tf

__all__ = [
    "PrecisionWarning",
    "noisy_line",
    "gaussian_sample",
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
    "array_dataset",
    "stack_batches",
    "epoch_dataset",
    "EpochBatches",
    "epoch_arrays",
    "EpochArrays",
    "held_tensor",
    "csv_dataset",
    "write_shards",
    "shard_dataset",
]

#: Largest shift a cast may give the values of a column, as a fraction of the column's standard
#: deviation, before `cast_for_model` warns. At 1e-4 the slopes fitted to the cast data can be
#: off by about that fraction, far more than the 1e-7 float32 arithmetic itself costs.
PRECISION_TOLERANCE = 1e-4


class PrecisionWarning(UserWarning):
    """Data lose information in the cast to the model's dtype (call `adapt`, or use float64)."""


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
    check_finite_scalar("m", m)
    check_finite_scalar("b", b)
    check_positive_scalar("noise", noise, allow_zero=True)
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
    check_finite_scalar("mu", mu)
    check_positive_scalar("sigma", sigma)
    rng = np.random.default_rng(seed)
    return rng.normal(loc=mu, scale=sigma, size=n).astype(np.float32)


def stack_batches(x, y=None, sample_weight=None, *, batch_size: int, repeats: int = 1):
    """The batches of one epoch as an `EpochBatches`: the full batches stacked, the last apart.

    `x[i]` of the result is full batch `i` (shape `(num_full, batch_size, ...)`), and `last_x`
    the last, shorter batch when `batch_size` does not divide the rows (else `None`): the steps
    are exactly those of `fit(x, y, batch_size=batch_size, shuffle=False)`. Nothing is padded
    or copied `repeats` times: `repeats` is how many passes one `train_batches` call makes.

    The steps of `train_batches` do not check their batches, so the data are checked here,
    once: NaN or Inf anywhere, or a negative weight, raises a `ValueError` naming the argument.

    Args:
        x, y, sample_weight: Arrays in the model's dtype (as from `model.check_data`).
        batch_size: Rows per batch.
        repeats: Epochs per call. Defaults to `1`.
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("repeats", repeats)
    x, y = check_xy(x, y, x_ndim=None if isinstance(x, dict) or np.ndim(x) > 2 else (1, 2))
    n = num_rows(x)
    sample_weight = check_sample_weight(sample_weight, n)
    # A batch larger than the data is the full batch (shapes, hence memory, follow the data).
    batch_size = min(batch_size, n)
    full = n // batch_size * batch_size

    def stack(a):
        return tf.constant(a[:full].reshape(-1, batch_size, *a.shape[1:]))

    def split(a):
        if a is None:
            return None, None
        last = tf.nest.map_structure(lambda a: tf.constant(a[full:]), a) if full < n else None
        return tf.nest.map_structure(stack, a), last

    (x, last_x), (y, last_y), (w, last_w) = split(x), split(y), split(sample_weight)
    return EpochBatches(
        x=x,
        y=y,
        sample_weight=w,
        last_x=last_x,
        last_y=last_y,
        last_sample_weight=last_w,
        repeats=tf.constant(repeats),
    )


def epoch_dataset(x, y=None, sample_weight=None, *, batch_size: int, repeats: int = 1):
    """A `tf.data.Dataset` whose every element is one whole epoch, for the fast `fit()` path.

    `fit(epoch_dataset(x, y, batch_size=B), epochs=E, steps_per_epoch=1)` makes the same optimizer
    steps as `fit(x, y, batch_size=B, epochs=E, shuffle=False)`, but each epoch is one call of the
    compiled `train_step` (an in-graph loop over the batches; compile with `jit_compile=True`),
    so Keras' per-batch and per-epoch overheads are paid once per epoch. For small data, `repeats`
    packs several epochs into one element: one Keras epoch is then `repeats` passes.

    Each element is an `EpochBatches`, the explicit type by which `train_step` recognises it.
    Pass arrays in the model's dtype (`model.check_data(x, y, sample_weight)` gives them);
    `stack_batches` refuses non-finite values and negative weights.
    """
    element = stack_batches(x, y, sample_weight, batch_size=batch_size, repeats=repeats)
    return tf.data.Dataset.from_tensors(element).repeat()


def array_dataset(arrays: tuple, *, batch_size: int, shuffle: bool = False):
    """Batches of in-memory arrays as a `tf.data.Dataset`, in the arrays' own dtype.

    This is what the models' `fit`, `evaluate` and `predict` feed Keras instead of the arrays
    themselves: Keras' array adapter casts every float array to `keras.config.floatx()`, which
    would round float64 data for a float64 or adapted model. Each element is the tuple of the
    batch's rows of every array (the bare array when there is one). The last batch may be
    shorter. With `shuffle`, each pass draws a permutation with `tf.random.shuffle`, as Keras'
    own adapter does (so `keras.utils.set_random_seed` fixes it).

    Args:
        arrays: Checked arrays with the same first dimension, e.g. `(x, y, sample_weight)`;
            `x` may be a dict of arrays (a network's named inputs).
        batch_size: Rows per batch.
        shuffle: Shuffle the rows at each pass. Defaults to `False`.
    """
    check_positive_int("batch_size", batch_size)
    n = num_rows(arrays[0])
    batch_size = min(batch_size, n)  # a batch larger than the data is the full batch
    num_batches = -(-n // batch_size)
    tensors = tf.nest.map_structure(tf.constant, tuple(arrays))
    data = tf.data.Dataset.from_tensors(tensors).repeat()
    if shuffle:

        def batches_of(order):
            return tf.data.Dataset.range(num_batches).map(
                lambda i: order[i * batch_size : (i + 1) * batch_size]
            )

        keys = (
            tf.data.Dataset.range(1)
            .map(lambda _: tf.random.shuffle(tf.range(n, dtype=tf.int64)))
            .flat_map(batches_of)
        )

        def take(rows, arrays):
            return tf.nest.map_structure(lambda a: tf.gather(a, rows), arrays)

    else:
        keys = tf.data.Dataset.range(num_batches)

        def take(i, arrays):
            return tf.nest.map_structure(lambda a: a[i * batch_size : (i + 1) * batch_size], arrays)

    if len(arrays) == 1:
        dataset = tf.data.Dataset.zip((keys, data)).map(lambda key, a: take(key, a)[0])
    else:
        dataset = tf.data.Dataset.zip((keys, data)).map(take)
    # Known cardinality: Keras then makes exactly num_batches steps per epoch.
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(num_batches))
    return dataset.prefetch(1)


#: A model's inputs inside the epoch types: one tensor, or a dict of them (named inputs).
Inputs = typing.Union[tf.Tensor, typing.Mapping[str, tf.Tensor]]  # noqa: UP007


class EpochBatches(tf.experimental.ExtensionType):
    """`repeats` passes over the batches of one epoch (see `stack_batches`).

    The element type of `epoch_dataset`, by which `train_step` knows to run an in-graph loop
    (`train_batches`) rather than one step. `x[i]` is full batch `i`; `last_*` the last,
    shorter batch, or `None`.
    """

    x: Inputs
    y: typing.Optional[tf.Tensor]  # noqa: UP045 (ExtensionType reads typing.Optional)
    sample_weight: typing.Optional[tf.Tensor]  # noqa: UP045
    last_x: typing.Optional[Inputs]  # noqa: UP045
    last_y: typing.Optional[tf.Tensor]  # noqa: UP045
    last_sample_weight: typing.Optional[tf.Tensor]  # noqa: UP045
    repeats: tf.Tensor


class EpochArrays(tf.experimental.ExtensionType):
    """One epoch of in-memory arrays, batched (and shuffled) inside the compiled step.

    The element type of `epoch_arrays`, by which `train_step` knows to run a whole epoch in one
    call (`train_arrays`): batch `i` is rows `order[i * batch_size : (i + 1) * batch_size]`
    (rows in order when `order` is `None`), the last batch shorter when `batch_size` does not
    divide the rows, exactly the batches of Keras' own array adapter.
    """

    x: Inputs
    y: typing.Optional[tf.Tensor]  # noqa: UP045 (ExtensionType reads typing.Optional)
    sample_weight: typing.Optional[tf.Tensor]  # noqa: UP045
    order: typing.Optional[tf.Tensor]  # noqa: UP045
    batch_size: int


def epoch_arrays(
    x, y=None, sample_weight=None, *, batch_size: int, seed: int | None = None, first_epoch=0
):
    """A `tf.data.Dataset` whose every element is one epoch of the arrays (`EpochArrays`).

    What `fit(x, y)` trains on: `fit(epoch_arrays(...), steps_per_epoch=1)` makes the steps of
    `fit(x, y, batch_size=batch_size)` with each epoch one compiled call. The arrays are held once
    (as constants); batches are sliced, or gathered through the epoch's permutation, in the step.

    Args:
        x, y, sample_weight: Checked arrays in the model's dtype (`model.check_data`).
        batch_size: Rows per batch; a batch larger than the data is the full batch.
        seed: `None` (rows in order, the default), or an integer: epoch `e`'s rows are then
            `tf.random.experimental.stateless_shuffle(range(n), [seed, e])`, a new order each
            epoch that depends only on `seed` and `e` (so a resumed run repeats it).
        first_epoch: The epoch of the first element. Defaults to `0`.
    """
    check_positive_int("batch_size", batch_size)
    n = num_rows(x)
    tensors = [
        None if a is None else tf.nest.map_structure(held_tensor, a) for a in (x, y, sample_weight)
    ]
    batch_size = min(batch_size, n)

    def epoch(e):
        order = None
        if seed is not None:
            pair = tf.stack([tf.constant(seed, tf.int64), e])
            order = tf.random.experimental.stateless_shuffle(tf.range(n), seed=pair)
        x, y, w = tensors
        return EpochArrays(x=x, y=y, sample_weight=w, order=order, batch_size=batch_size)

    # The next epoch's order is drawn while this one trains.
    dataset = tf.data.Dataset.range(first_epoch, 2**62).map(epoch).prefetch(1)
    options = tf.data.Options()
    # tf.data's default graph rewrites serialize the pipeline, and with it a copy of the arrays
    # the map captures, at every iterator: a transient second copy of the data.
    options.experimental_optimization.apply_default_optimizations = False
    return dataset.with_options(options)


#: Alignment of the buffers `held_tensor` hands to TensorFlow (that of its own allocations).
_ALIGNMENT = 64


def held_tensor(array: np.ndarray) -> tf.Tensor:
    """A tensor of a copy of `array`, made without a second, transient copy.

    `tf.constant` of a NumPy array holds two copies of it until an op first reads the tensor
    (TensorFlow 2.21): the peak memory of converting 1 GB of data is 2 GB. Here the array is
    copied once into an aligned NumPy buffer that TensorFlow then uses as it is (DLPack, no
    copy), or, where that is not available, converted by `tf.constant`.
    """
    array = np.asarray(array)
    array = array.astype(array.dtype.newbyteorder("="), copy=False)  # DLPack: native order only
    buffer = np.empty(array.nbytes + _ALIGNMENT, np.uint8)
    start = -buffer.ctypes.data % _ALIGNMENT
    copy = buffer[start : start + array.nbytes].view(array.dtype).reshape(array.shape)
    copy[...] = array
    try:
        return tf.experimental.dlpack.from_dlpack(copy.__dlpack__())
    except (AttributeError, BufferError, TypeError, ValueError, tf.errors.OpError):
        return tf.constant(array)


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
        dtype = array.dtype if array.dtype.kind == "f" else np.float64
    array = array.astype(dtype, copy=False)
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{name} contains {bad} NaN or Inf value(s).")
    return array


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

    Returns:
        `(x, y)` as NumPy arrays (`y` is `None` when not given).
    """
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


def check_not_constant(name: str, sample) -> None:
    """Raises unless a 1-D sample takes at least two values: a Gaussian MLE needs spread."""
    if np.ptp(sample) == 0:
        raise ValueError(
            f"{name} are constant: the likelihood grows without bound as sigma -> 0, "
            "so no MLE exists."
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


# Data from files (defined in their own module, which uses the checks above).
from keras_mle._files import csv_dataset, shard_dataset, write_shards  # noqa: E402
