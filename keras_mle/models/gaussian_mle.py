"""Mean and standard deviation of a 1-D sample, fitted by maximum likelihood."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keras_mle import closed_form as closed_form_lib
from keras_mle import data as data_lib
from keras_mle import losses
from keras_mle.models.base import MaximumLikelihoodModel

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
        initial_mu: Initial mean. Defaults to `0.0`.
        initial_sigma: Initial standard deviation, > 0. Defaults to `1.0`.
        **kwargs: `fixed` (e.g. `{"mu": 0.0}`: `mu` held at 0, `sigma` estimated; see
            `MaximumLikelihoodModel`), and the arguments of `keras.Model`.

    Example:

    ```python
    samples = keras_mle.data.gaussian_sample(mu=2.0, sigma=1.0, n=1000)
    model = keras_mle.GaussianMLE(initial_mu=1.4, initial_sigma=1.3)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.fit(samples, epochs=200, batch_size=1000)
    ```
    """

    takes_targets = False
    x_name = "samples"
    parameter_roles = {"mu": "intercept", "sigma": "scale"}
    adapt_targets = True

    def __init__(self, initial_mu=0.0, initial_sigma=1.0, **kwargs):
        initial_mu = data_lib.check_finite_scalar("initial_mu", initial_mu)
        initial_sigma = data_lib.check_positive_scalar("initial_sigma", initial_sigma)
        super().__init__(**kwargs)
        self.initial_mu = initial_mu
        self.initial_sigma = initial_sigma
        self.add_parameter("mu", initializer=initial_mu)
        self.add_parameter("sigma", initializer=initial_sigma, positive=True)
        self.built = True

    def build(self, input_shape):
        self.check_input_shape(input_shape)

    def mean(self, params, x):
        return tf.fill(tf.shape(x)[:1], params["mu"])

    def sample_loss(self, params, x, y):
        if x.shape.rank == 2:
            x = x[:, 0]
        return losses.gaussian_nll(x, params["mu"], params["sigma"])

    def check_input_shape(self, shape):
        shape = tuple(shape)
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] not in (1, None)):
            raise ValueError(f"samples must be 1-D, got shape {shape}.")

    def check_data(self, x, y=None, sample_weight=None, *, dtype=None, whole=True):
        x, y, sample_weight = super().check_data(x, y, sample_weight, dtype=dtype, whole=whole)
        return x.reshape(-1), y, sample_weight

    def check_whole_data(self, x, y, sample_weight):
        data_lib.check_not_constant("samples", x.reshape(-1))

    def closed_form(self, x, y=None, sample_weight=None):
        """The sample mean and divisor-`n` standard deviation (`keras_mle.closed_form`).

        With `mu` fixed, `sigma = sqrt(sum w (x - mu)^2 / sum w)`; a fixed `sigma` is itself.
        """
        fixed = self.fixed
        if not fixed:
            return closed_form_lib.gaussian_mle(np.ravel(x), sample_weight)
        x = data_lib.check_array("samples", np.ravel(x), dtype=np.float64, ndim=(1,))
        w = data_lib.check_sample_weight(sample_weight, len(x), dtype=np.float64)
        w = np.ones_like(x) if w is None else w
        mu = fixed["mu"] if "mu" in fixed else w @ x / w.sum()
        sigma = fixed["sigma"] if "sigma" in fixed else np.sqrt(w @ (x - mu) ** 2 / w.sum())
        return {"mu": np.float64(mu), "sigma": np.float64(sigma)}

    def sample(self, n: int, seed=None) -> np.ndarray:
        """`n` draws from the fitted `N(mu, sigma^2)`."""
        data_lib.check_positive_int("n", n)
        params = self.params
        rng = np.random.default_rng(seed)
        return rng.normal(params["mu"], params["sigma"], size=n).astype(self.dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"initial_mu": self.initial_mu, "initial_sigma": self.initial_sigma})
        return config
