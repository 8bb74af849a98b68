"""Gaussian linear regression `y ~ N(x . m + b, sigma^2)`, fitted by maximum likelihood."""

from __future__ import annotations

import keras
import numpy as np

from keras_mle import losses
from keras_mle.models.linear_regression import LinearRegression

__all__ = ["GaussianRegression"]


@keras.saving.register_keras_serializable(package="keras_mle")
class GaussianRegression(LinearRegression):
    """`y ~ N(x . m + b, sigma^2)`: slopes, intercept and noise level learned jointly by NLL.

    Mathematical details:

    ```python
    mu = x @ m + b
    loss = 0.5 * log(2 * pi) + log(sigma) + 0.5 * ((y - mu) / sigma) ** 2
    ```

    For any fixed `sigma` the NLL is `n * MSE / (2 * sigma^2)` plus terms free of `m, b`, so its
    argmin in `m, b` is the least-squares one of `LinearRegression`; `sigma` then converges to the
    MLE `sqrt(RSS / n)`. `sigma` is stored as `log(sigma)` and stays > 0.

    Args:
        sigma: Initial noise standard deviation, > 0. Defaults to `1.0`.
        m_initializer: Defaults to `"random_normal"`.
        b_initializer: Defaults to `"zeros"`.
        **kwargs: Passed to `keras.Model`.
    """

    sample_loss_kind = "nll"
    parameter_roles = {"m": "slope", "b": "intercept", "sigma": "scale"}

    def __init__(self, sigma=1.0, m_initializer="random_normal", b_initializer="zeros", **kwargs):
        sigma = _initial_sigma(sigma)
        super().__init__(m_initializer=m_initializer, b_initializer=b_initializer, **kwargs)
        self.sigma = sigma

    def build(self, input_shape):
        super().build(input_shape)
        self.add_parameter("sigma", initializer=self.sigma, positive=True)

    def sample_loss(self, params, x, y):
        return losses.gaussian_nll(y, self.linear_predictor(params, x), params["sigma"])

    def predict_distribution(self, x, **kwargs):
        """Mean and standard deviation of `y` given `x`: `{"mean": (N,), "sigma": (N,)}`."""
        mean = self.predict(x, **kwargs)
        return {"mean": mean, "sigma": np.full_like(mean, self.params["sigma"])}

    def get_config(self):
        config = super().get_config()
        config["sigma"] = self.sigma
        return config


def _initial_sigma(sigma, name="sigma"):
    try:
        value = float(sigma)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {sigma!r}.") from None
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {sigma!r}.")
    return value
