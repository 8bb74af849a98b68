"""Per-sample losses and the `keras.losses.Loss` classes that wrap them.

Both functions return one value per sample and never reduce over the batch: the models weight,
sum and normalise them (see `keras_mle.models.MaximumLikelihoodModel`).

A Keras model that predicts a Gaussian outputs two columns, `y_pred[..., 0]` the mean and
`y_pred[..., 1]` its scale, read according to `scale` (`GaussianNLL`, `gaussian_nll(y_true,
y_pred)` and the `keras_mle.metrics` share this layout and its names):

- `"sigma"` (the default): the column is the standard deviation itself, which must be > 0
  (e.g. a `softplus` activation). A non-positive value is an error (see `gaussian_scale`).
- `"softplus"`: the column is an unconstrained raw value, as a plain `Dense(2)` outputs it, and
  `sigma = softplus(raw) + floor`, positive by construction (`softplus_scale`).

`keras.losses.get` resolves strings only among Keras' own losses, so pass the class or the
function: `loss=keras_mle.losses.GaussianNLL(scale="softplus")`, or
`loss=keras_mle.losses.gaussian_nll` (the `"sigma"` layout). By its registered name the class is
reached as a config: `loss={"class_name": "keras_mle>GaussianNLL", "config": {"scale":
"softplus"}}`, which is also how saved models refer to it.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "SCALE_FLOOR",
    "SCALES",
    "mean_squared_error",
    "gaussian_nll",
    "gaussian_scale",
    "softplus_scale",
    "split_gaussian_prediction",
    "check_scale",
    "MeanSquaredError",
    "GaussianNLL",
]

_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)

#: Smallest standard deviation the softplus link gives: `sigma = softplus(raw) + SCALE_FLOOR`.
#: It keeps `log(sigma)` and `1 / sigma` finite when `softplus(raw)` underflows to 0 (raw below
#: about -88 in float32), and is far below any noise level float32 data can resolve, whose
#: values carry 7 significant digits: rescale targets of magnitude below 1e-3 before fitting.
SCALE_FLOOR = 1e-6

#: How the second column of a `(..., 2)` prediction is read (see the module docstring).
SCALES = ("sigma", "softplus")


def mean_squared_error(y_true, y_pred):
    """Squared error of each sample.

    Formula:

    ```python
    loss = mean((y_true - y_pred) ** 2, axis=trailing axes)
    ```

    For targets of shape `(N,)` this is `(y_true - y_pred) ** 2`, shape `(N,)`; trailing axes (as
    in `(N, d)`) are averaged. The shapes must be equal: no broadcasting of `(N,)` against `(N, 1)`.

    Args:
        y_true: Targets, shape `(N, ...)`.
        y_pred: Predictions, the same shape.

    Returns:
        Tensor of shape `(N,)`.
    """
    y_pred = tf.convert_to_tensor(y_pred)
    y_true = _as_dtype(y_true, y_pred.dtype)
    _assert_same_shape(y_true, y_pred, "y_true", "y_pred")
    squared_error = tf.square(y_true - y_pred)
    if squared_error.shape.rank > 1:
        squared_error = tf.reduce_mean(squared_error, axis=list(range(1, squared_error.shape.rank)))
    return squared_error


@keras.saving.register_keras_serializable(package="keras_mle")
def gaussian_nll(y, mu, sigma=None):
    """Negative log-density of `y` under `N(mu, sigma^2)`, per sample, with the full constant.

    Formula:

    ```python
    log_normalization = 0.5 * log(2 * pi) + log(sigma)
    squared_z = ((y - mu) / sigma) ** 2
    loss = log_normalization + 0.5 * squared_z
    ```

    `mu` is the mean and `sigma > 0` the standard deviation; both broadcast against `y` (a scalar
    `sigma` is the homoscedastic case). The `0.5 * log(2 * pi)` term is included, so the mean of the
    result over a sample is `-loglik / n` and its sum is the articles' `LL`, equal to
    `-sum(scipy.stats.norm.logpdf(y, mu, sigma))`.

    As a Keras loss (`model.compile(loss=keras_mle.losses.gaussian_nll)`) it is called as
    `gaussian_nll(y_true, y_pred)`: `y_pred` has a last axis of size 2, the mean and `sigma`
    (the `"sigma"` layout of the module docstring), and `y_true` the shape `(N,)` or `(N, 1)`.
    Its `sigma` column is checked (`gaussian_scale`).

    Args:
        y: Observations.
        mu: Means, broadcastable to `y`; or, with `sigma=None`, the `(..., 2)` predictions.
        sigma: Standard deviations (> 0), broadcastable to `y`. Defaults to `None` (read from
            `mu`, as above).

    Returns:
        Tensor with the shape of `y` (with `sigma=None`: of the predictions less their last
        axis).
    """
    if sigma is None:
        y_pred = tf.convert_to_tensor(mu)
        y, mu, sigma = split_gaussian_prediction(y, y_pred, "sigma", SCALE_FLOOR, "gaussian_nll")
    y = tf.convert_to_tensor(y)
    mu = _as_dtype(mu, y.dtype)
    sigma = _as_dtype(sigma, y.dtype)
    log_normalization = _HALF_LOG_TWO_PI + tf.math.log(sigma)
    squared_z = tf.square((y - mu) / sigma)
    return log_normalization + 0.5 * squared_z


def softplus_scale(raw, floor=SCALE_FLOOR):
    """The standard deviation `softplus(raw) + floor`: positive and finite for any finite `raw`.

    Args:
        raw: Unconstrained values (a network's raw scale output).
        floor: Smallest standard deviation, > 0. Defaults to `SCALE_FLOOR`.

    Returns:
        `sigma`, with the shape and dtype of `raw`.
    """
    raw = tf.convert_to_tensor(raw)
    return tf.math.softplus(raw) + tf.cast(floor, raw.dtype)


def gaussian_scale(values, scale="sigma", floor=SCALE_FLOOR, *, name="y_pred[..., 1]"):
    """The standard deviation from the second column of a prediction, read as `scale` says.

    With `scale="sigma"` the values are the standard deviations, and must be > 0: eagerly, a
    non-positive (or NaN) value raises a `ValueError` naming `name`; in a graph, a
    `tf.debugging.assert_positive` raises `InvalidArgumentError` with the same message. Under
    XLA (`jit_compile=True`, Keras' default for a plain model on TensorFlow) assertions are
    compiled out: a non-positive `sigma` then makes the loss NaN, never a finite wrong value.
    With `scale="softplus"` it is `softplus_scale(values, floor)`.

    Args:
        values: The second column of the predictions.
        scale: `"sigma"` or `"softplus"` (see `SCALES`). Defaults to `"sigma"`.
        floor: The softplus link's smallest standard deviation. Defaults to `SCALE_FLOOR`.
        name: How errors name the values. Defaults to `"y_pred[..., 1]"`.

    Returns:
        `sigma`, with the shape and dtype of `values`.
    """
    values = tf.convert_to_tensor(values)
    if scale == "softplus":
        return softplus_scale(values, floor)
    message = (
        f"{name} must be a standard deviation > 0 (scale='sigma'); give the model a positive "
        "output (e.g. a softplus activation), or read a raw output with scale='softplus'."
    )
    if tf.executing_eagerly():
        array = values.numpy()
        if not (array > 0).all():
            raise ValueError(f"{message} Got min {float(array.min())!r}.")
        return values
    check = tf.debugging.assert_positive(values, message=message)
    with tf.control_dependencies([check]):
        return tf.identity(values)


@keras.saving.register_keras_serializable(package="keras_mle")
class MeanSquaredError(keras.losses.Loss):
    """`keras.losses.Loss` wrapping `mean_squared_error`.

    Args:
        reduction: Keras reduction. Defaults to `"sum_over_batch_size"`.
        name: Defaults to `"mean_squared_error"`.
    """

    def __init__(self, reduction="sum_over_batch_size", name="mean_squared_error", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self._given_dtype = None if dtype is None else self.dtype

    def call(self, y_true, y_pred):
        return mean_squared_error(y_true, y_pred)

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction, "dtype": self._given_dtype}


@keras.saving.register_keras_serializable(package="keras_mle")
class GaussianNLL(keras.losses.Loss):
    """Gaussian negative log-likelihood for any Keras model that predicts a mean and a scale.

    The model's output has a last axis of size 2: `y_pred[..., 0]` is the mean `mu` and
    `y_pred[..., 1]` the scale, read as `scale` says: the standard deviation itself
    (`"sigma"`, checked > 0; see `gaussian_scale`), or a raw value mapped to
    `sigma = softplus(raw) + floor` (`"softplus"`, for a plain `Dense(2)` output). `y_true` has
    shape `(N,)` or `(N, 1)`.

    With `reduction="sum_over_batch_size"` (the default) the loss is `-loglik / n`; with
    `reduction="sum"` it is `-loglik`, the articles' `LL`.

    Example:

    >>> import numpy as np
    >>> loss = GaussianNLL(reduction="sum")
    >>> float(loss(np.array([[0.0]]), np.array([[0.0, 1.0]])))  # 0.5 * log(2 * pi)
    0.9189385...

    Args:
        reduction: Keras reduction. Defaults to `"sum_over_batch_size"`.
        name: Defaults to `"gaussian_nll"`.
        dtype: The dtype of the computations, kept by `get_config`. Defaults to `None`
            (Keras' `floatx()`).
        scale: `"sigma"` or `"softplus"`. Defaults to `"sigma"`.
        floor: Smallest standard deviation of the softplus link, > 0. Defaults to
            `SCALE_FLOOR`.
    """

    def __init__(
        self,
        reduction="sum_over_batch_size",
        name="gaussian_nll",
        dtype=None,
        scale="sigma",
        floor=SCALE_FLOOR,
    ):
        self.scale, self.floor = check_scale(scale, floor)
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self._given_dtype = None if dtype is None else self.dtype

    def call(self, y_true, y_pred):
        y, mu, sigma = split_gaussian_prediction(
            y_true, tf.convert_to_tensor(y_pred), self.scale, self.floor, "GaussianNLL"
        )
        return gaussian_nll(y, mu, sigma)

    def get_config(self):
        return {
            "name": self.name,
            "reduction": self.reduction,
            "dtype": self._given_dtype,
            "scale": self.scale,
            "floor": self.floor,
        }


def check_scale(scale, floor):
    """`(scale, floor)` checked: `scale` one of `SCALES`, `floor` a finite number > 0.

    Raises:
        ValueError: naming `scale` or `floor`.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}.")
    if isinstance(floor, bool) or not isinstance(floor, (int, float, np.floating, np.integer)):
        raise ValueError(f"floor must be a number > 0, got {floor!r}.")
    if not (math.isfinite(floor) and floor > 0):
        raise ValueError(f"floor must be a finite number > 0, got {floor!r}.")
    return scale, float(floor)


def split_gaussian_prediction(y_true, y_pred, scale="sigma", floor=SCALE_FLOOR, owner="y_pred"):
    """`(y, mu, sigma)` from targets and `(..., 2)` predictions in the module's layout.

    Targets of shape `(N, 1)` (the predictions' rank) lose their last axis. `owner` names the
    caller in the error for a last axis other than 2.
    """
    if y_pred.shape.rank is None or y_pred.shape.rank < 1 or y_pred.shape[-1] != 2:
        raise ValueError(
            f"{owner}: y_pred must have a last axis of size 2 (mean, scale), "
            f"got shape {y_pred.shape}."
        )
    y = tf.cast(y_true, y_pred.dtype)
    if y.shape.rank == y_pred.shape.rank:
        y = y[..., 0]
    return y, y_pred[..., 0], gaussian_scale(y_pred[..., 1], scale, floor)


def _as_dtype(value, dtype):
    # A Python float given to tf.cast is first made float32: 1.3 would become 1.2999999523 in
    # float64. Converting with the target dtype as a hint keeps it exact.
    return tf.cast(tf.convert_to_tensor(value, dtype_hint=dtype), dtype)


def _assert_same_shape(a, b, a_name, b_name):
    if a.shape.rank is not None and b.shape.rank is not None and a.shape.rank != b.shape.rank:
        raise ValueError(
            f"{a_name} and {b_name} must have the same shape, got {a.shape} and {b.shape}: "
            "refusing to broadcast."
        )
