"""Calibration metrics of Gaussian predictions: log-likelihood, interval coverage and CRPS.

Each metric reads predictions of shape `(..., 2)`, the mean and the scale, in the layout of
`keras_mle.losses` (`scale="sigma"`: the standard deviation itself; `"softplus"`: a raw value
mapped to `softplus(raw) + floor`), and averages a per-sample value over the epoch, weighted by
the sample weights when given (`weighted_metrics`). They work in any Keras model whose output
has that layout, and in `GaussianNetwork.compile(metrics=[...])`, whose metrics see its mean and
`sigma`:

```python
model.compile(optimizer="adam", metrics=["mae", keras_mle.metrics.IntervalCoverage(0.95)])
```

The NumPy functions `gaussian_crps` and `pit` compute the same quantities on arrays.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from keras_mle import distributions, losses

__all__ = [
    "LossMean",
    "GaussianMetric",
    "GaussianLogLikelihood",
    "IntervalCoverage",
    "GaussianCRPS",
    "crps_tensor",
    "gaussian_crps",
    "pit",
    "check_level",
]

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)
_INV_SQRT_TWO_PI = 1.0 / math.sqrt(2.0 * math.pi)


def check_level(level) -> float:
    """`level` as a float in (0, 1); a `ValueError` naming it otherwise."""
    if isinstance(level, bool) or not isinstance(level, (int, float, np.floating)):
        raise ValueError(f"level must be a number in (0, 1), got {level!r}.")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1) (e.g. 0.95), got {level!r}.")
    return float(level)


def crps_tensor(y, mu, sigma):
    """Continuous ranked probability score of `N(mu, sigma^2)` at `y`, per sample (a tensor).

    Closed form (Gneiting and Raftery, 2007), with `z = (y - mu) / sigma`:

    ```python
    crps = sigma * (z * (2 * Phi(z) - 1) + 2 * phi(z) - 1 / sqrt(pi))
    ```

    It is `integral (F(t) - 1[t >= y])^2 dt`, in the units of `y`; lower is better, and for a
    point forecast (`sigma -> 0`) it is the absolute error.
    """
    y = tf.convert_to_tensor(y)
    mu = tf.cast(mu, y.dtype)
    sigma = tf.cast(sigma, y.dtype)
    z = (y - mu) / sigma
    cdf = 0.5 * tf.math.erfc(-z * _SQRT_HALF)
    density = _INV_SQRT_TWO_PI * tf.exp(-0.5 * tf.square(z))
    return sigma * (z * (2.0 * cdf - 1.0) + 2.0 * density - _INV_SQRT_PI)


def gaussian_crps(y, mu, sigma) -> np.ndarray:
    """`crps_tensor` on arrays, in float64."""
    y, mu, sigma = (np.asarray(a, np.float64) for a in (y, mu, sigma))
    return crps_tensor(y, mu, sigma).numpy()


def pit(y, mu, sigma) -> np.ndarray:
    """Probability integral transform `Phi((y - mu) / sigma)`, in float64.

    Uniform on [0, 1] when `y ~ N(mu, sigma^2)`: a U-shaped histogram means `sigma` is too
    small, a hump too large, a slope a biased mean.
    """
    y, mu, sigma = (np.asarray(a, np.float64) for a in (y, mu, sigma))
    return 1.0 - distributions.normal_sf((y - mu) / sigma)


class LossMean(keras.metrics.Mean):
    """The weighted mean of the per-sample losses of an epoch's accepted steps; NaN for none.

    A `keras.metrics.Mean` reports 0 when nothing was added. An epoch whose every step was
    refused (it diverged at its first batch) has no loss to report, and a 0 would draw a loss
    curve that drops to zero where the fit failed: it reports NaN instead.
    """

    def result(self):
        count = tf.cast(self.count, self.dtype)
        return tf.where(count > 0, super().result(), tf.constant(float("nan"), self.dtype))


class GaussianMetric(keras.metrics.Mean):
    """The weighted mean over samples of `sample_values(y, mu, sigma)`.

    The base of this module's metrics; `GaussianNetwork` gives any `GaussianMetric` among its
    compiled metrics its mean and `sigma`, and the other metrics its mean only.

    Args:
        name: Name in the logs.
        dtype: Dtype of the metric's variables. Defaults to `None` (`floatx()`).
        scale: How `y_pred[..., 1]` is read: `"sigma"` or `"softplus"` (see
            `keras_mle.losses`). Defaults to `"sigma"`.
        floor: Smallest standard deviation of the softplus link. Defaults to
            `keras_mle.losses.SCALE_FLOOR`.
    """

    def __init__(self, name, dtype=None, scale="sigma", floor=losses.SCALE_FLOOR):
        self.scale, self.floor = losses.check_scale(scale, floor)
        super().__init__(name=name, dtype=dtype)

    def sample_values(self, y, mu, sigma):
        """The per-sample values averaged, shape of `y`."""
        raise NotImplementedError(f"{type(self).__name__} must implement sample_values().")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = tf.cast(y_pred, self.dtype)
        y, mu, sigma = losses.split_gaussian_prediction(
            y_true, y_pred, self.scale, self.floor, type(self).__name__
        )
        values = self.sample_values(y, mu, sigma)
        if sample_weight is not None:
            sample_weight = tf.reshape(tf.cast(sample_weight, values.dtype), tf.shape(values))
        return super().update_state(values, sample_weight=sample_weight)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "scale": self.scale, "floor": self.floor}


@keras.saving.register_keras_serializable(package="keras_mle")
class GaussianLogLikelihood(GaussianMetric):
    """Mean log-likelihood per sample, `mean(log N(y; mu, sigma^2))`: higher is better.

    The negative of the Gaussian NLL loss, `-keras_mle.losses.gaussian_nll`, on any data
    (validation data included).

    Args:
        name: Defaults to `"log_likelihood"`.
        dtype, scale, floor: See `GaussianMetric`.
    """

    def __init__(self, name="log_likelihood", dtype=None, scale="sigma", floor=losses.SCALE_FLOOR):
        super().__init__(name=name, dtype=dtype, scale=scale, floor=floor)

    def sample_values(self, y, mu, sigma):
        return -losses.gaussian_nll(y, mu, sigma)


@keras.saving.register_keras_serializable(package="keras_mle")
class IntervalCoverage(GaussianMetric):
    """Fraction of targets inside the central interval `mu -/+ z sigma` of probability `level`.

    `z = Phi^-1((1 + level) / 2)` (1.95996 for 0.95). A calibrated model covers `level` of
    new data; less means `sigma` is too small there.

    Args:
        level: Probability of the interval, in (0, 1). Defaults to `0.95`.
        name: Defaults to `"coverage_95"` for `level=0.95` (the level in percent).
        dtype, scale, floor: See `GaussianMetric`.
    """

    def __init__(self, level=0.95, name=None, dtype=None, scale="sigma", floor=losses.SCALE_FLOOR):
        self.level = check_level(level)
        self.z = float(distributions.normal_ppf(0.5 + 0.5 * self.level))
        name = name or f"coverage_{self.level * 100:g}".replace(".", "_")
        super().__init__(name=name, dtype=dtype, scale=scale, floor=floor)

    def sample_values(self, y, mu, sigma):
        inside = tf.abs(y - mu) <= tf.cast(self.z, sigma.dtype) * sigma
        return tf.cast(inside, y.dtype)

    def get_config(self):
        return {**super().get_config(), "level": self.level}


@keras.saving.register_keras_serializable(package="keras_mle")
class GaussianCRPS(GaussianMetric):
    """Mean continuous ranked probability score (`crps_tensor`), in the units of `y`.

    Lower is better; it rewards a sharp `sigma` only where the mean is accurate.

    Args:
        name: Defaults to `"crps"`.
        dtype, scale, floor: See `GaussianMetric`.
    """

    def __init__(self, name="crps", dtype=None, scale="sigma", floor=losses.SCALE_FLOOR):
        super().__init__(name=name, dtype=dtype, scale=scale, floor=floor)

    def sample_values(self, y, mu, sigma):
        return crps_tensor(y, mu, sigma)
