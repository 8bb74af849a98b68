"""Per-sample losses and the `keras.losses.Loss` classes that wrap them.

Both functions return one value per sample and never reduce over the batch: the models weight,
sum and normalise them (see `keras_mle.models.MaximumLikelihoodModel`).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

__all__ = ["mean_squared_error", "gaussian_nll", "MeanSquaredError", "GaussianNLL"]

_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)


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


def gaussian_nll(y, mu, sigma):
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

    Args:
        y: Observations.
        mu: Means, broadcastable to `y`.
        sigma: Standard deviations (> 0), broadcastable to `y`.

    Returns:
        Tensor with the shape of `y`.
    """
    y = tf.convert_to_tensor(y)
    mu = _as_dtype(mu, y.dtype)
    sigma = _as_dtype(sigma, y.dtype)
    log_normalization = _HALF_LOG_TWO_PI + tf.math.log(sigma)
    squared_z = tf.square((y - mu) / sigma)
    return log_normalization + 0.5 * squared_z


@keras.saving.register_keras_serializable(package="keras_mle")
class MeanSquaredError(keras.losses.Loss):
    """`keras.losses.Loss` wrapping `mean_squared_error`.

    Args:
        reduction: Keras reduction. Defaults to `"sum_over_batch_size"`.
        name: Defaults to `"mean_squared_error"`.
    """

    def __init__(self, reduction="sum_over_batch_size", name="mean_squared_error", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return mean_squared_error(y_true, y_pred)

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction}


@keras.saving.register_keras_serializable(package="keras_mle")
class GaussianNLL(keras.losses.Loss):
    """Gaussian negative log-likelihood for any Keras model that predicts a mean and a scale.

    The model's output has a last axis of size 2: `y_pred[..., 0]` is the mean `mu` and
    `y_pred[..., 1]` the standard deviation `sigma` (make it positive, e.g. with a softplus
    activation). `y_true` has shape `(N,)` or `(N, 1)`.

    With `reduction="sum_over_batch_size"` (the default) the loss is `-loglik / n`; with
    `reduction="sum"` it is `-loglik`, the articles' `LL`.

    Example:

    >>> import numpy as np
    >>> loss = GaussianNLL(reduction="sum")
    >>> float(loss(np.array([[0.0]]), np.array([[0.0, 1.0]])))  # 0.5 * log(2 * pi)
    0.9189385...
    """

    def __init__(self, reduction="sum_over_batch_size", name="gaussian_nll", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        y_pred = tf.convert_to_tensor(y_pred)
        if y_pred.shape[-1] != 2:
            raise ValueError(
                "GaussianNLL: y_pred must have a last axis of size 2 (mu, sigma), "
                f"got shape {y_pred.shape}."
            )
        y = tf.cast(y_true, y_pred.dtype)
        if y.shape.rank == y_pred.shape.rank:
            y = y[..., 0]
        return gaussian_nll(y, y_pred[..., 0], y_pred[..., 1])

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction}


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
