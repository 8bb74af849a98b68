"""Mean and standard deviation of a 1-D sample, fitted by maximum likelihood."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keras_mle import data as data_lib
from keras_mle import losses
from keras_mle.models.base import MaximumLikelihoodModel
from keras_mle.models.gaussian_regression import _initial_sigma

__all__ = ["GaussianMLE"]


@keras.saving.register_keras_serializable(package="keras_mle")
class GaussianMLE(MaximumLikelihoodModel):
    """`mu` and `sigma` of a sample `x_1..x_n ~ N(mu, sigma^2)`, by minimising the NLL.

    Mathematical details:

    ```python
    loss = 0.5 * log(2 * pi) + log(sigma) + 0.5 * ((x - mu) / sigma) ** 2
    ```

    The MLE is the sample mean and the standard deviation with divisor `n` (`np.std(x)`).
    `sigma` is stored as `log(sigma)`, so it stays > 0 under any step. `fit(samples)` takes no
    targets; a constant sample is refused, since its likelihood grows without bound as
    `sigma -> 0` and no MLE exists.

    Args:
        mu: Initial mean. Defaults to `0.0`.
        sigma: Initial standard deviation, > 0. Defaults to `1.0`.
        **kwargs: Passed to `keras.Model`.

    Example:

    ```python
    samples = keras_mle.data.gaussian_sample(mu=2.0, sigma=1.0, n=1000)
    model = keras_mle.GaussianMLE(mu=1.4, sigma=1.3)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.fit(samples, epochs=200, batch_size=1000)
    ```
    """

    takes_targets = False
    x_name = "samples"
    parameter_roles = {"mu": "intercept", "sigma": "scale"}

    def __init__(self, mu=0.0, sigma=1.0, **kwargs):
        try:
            mu = float(mu)
        except (TypeError, ValueError):
            raise TypeError(f"mu must be a number, got {mu!r}.") from None
        if not np.isfinite(mu):
            raise ValueError(f"mu must be finite, got {mu!r}.")
        sigma = _initial_sigma(sigma)
        super().__init__(**kwargs)
        self.mu = mu
        self.sigma = sigma
        self.add_parameter("mu", initializer=mu)
        self.add_parameter("sigma", initializer=sigma, positive=True)
        self.built = True

    def build(self, input_shape):
        self.built = True

    def call(self, x):
        mu = self.user_params_tensors()["mu"]
        return tf.fill(tf.shape(x)[:1], tf.cast(mu, self.compute_dtype))

    def sample_loss(self, params, x, y):
        if x.shape.rank == 2:
            x = x[:, 0]
        return losses.gaussian_nll(x, params["mu"], params["sigma"])

    def check_data(self, x, y=None, sample_weight=None):
        x, y, sample_weight = super().check_data(x, y, sample_weight)
        if x.ndim == 2:
            if x.shape[1] != 1:
                raise ValueError(f"samples must be 1-D, got shape {x.shape}.")
            x = x[:, 0]
        if np.ptp(x) == 0:
            raise ValueError(
                "samples are constant: the likelihood grows without bound as sigma -> 0, "
                "so no MLE exists."
            )
        return x, y, sample_weight

    def sample(self, n: int, seed=None) -> np.ndarray:
        """`n` draws from the fitted `N(mu, sigma^2)`."""
        data_lib.check_positive_int("n", n)
        params = self.params
        rng = np.random.default_rng(seed)
        return rng.normal(params["mu"], params["sigma"], size=n).astype(self.dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"mu": self.mu, "sigma": self.sigma})
        return config
