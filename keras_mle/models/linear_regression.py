"""Linear regression `y = x . m + b`, fitted by mean squared error."""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_mle import losses
from keras_mle.models.base import MaximumLikelihoodModel

__all__ = ["LinearRegression"]


@keras.saving.register_keras_serializable(package="keras_mle")
class LinearRegression(MaximumLikelihoodModel):
    """`y = x . m + b` for `x` of shape `(N,)` (one feature) or `(N, k)`, trained by MSE.

    Mathematical details:

    ```python
    y_hat = x @ m + b
    loss = mean((y - y_hat) ** 2)
    ```

    `m` (shape `(k,)`) is the slope of each feature and `b` (a scalar) the intercept. Minimising
    the MSE gives the ordinary least squares estimate, which is also the Gaussian MLE of `m, b`
    (see `GaussianRegression`).

    Args:
        m_initializer: Initializer of the slopes. Defaults to `"random_normal"` (as in the article).
        b_initializer: Initializer of the intercept. Defaults to `"zeros"`.
        **kwargs: Passed to `keras.Model` (e.g. `name`, `dtype`).

    Example:

    ```python
    x, y = keras_mle.data.noisy_line(m=1.0, b=2.0)
    model = keras_mle.LinearRegression()
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    model.fit(x, y, epochs=30, batch_size=100)
    model.params  # {"m": array([...]), "b": array(...)}
    ```
    """

    sample_loss_kind = "squared_error"
    parameter_roles = {"m": "slope", "b": "intercept"}

    def __init__(self, m_initializer="random_normal", b_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.m_initializer = keras.initializers.get(m_initializer)
        self.b_initializer = keras.initializers.get(b_initializer)

    def build(self, input_shape):
        features = 1 if len(input_shape) == 1 else input_shape[-1]
        if len(input_shape) > 2 or features is None:
            raise ValueError(f"x must have shape (N,) or (N, k), got {tuple(input_shape)}.")
        self.add_parameter("m", shape=(features,), initializer=self.m_initializer)
        self.add_parameter("b", initializer=self.b_initializer)

    @property
    def features(self):
        """Number of features `k` (known once built)."""
        return self._m_variable.shape[0] if self.built else None

    def linear_predictor(self, params, x):
        """`x @ m + b`, shape `(N,)`; a 1-D `x` is one feature."""
        x = tf.cast(x, params["m"].dtype)
        if x.shape.rank == 1:
            return x * params["m"][0] + params["b"]
        return tf.linalg.matvec(x, params["m"]) + params["b"]

    def call(self, x):
        return self.linear_predictor(self.user_params_tensors(self.compute_dtype), x)

    def sample_loss(self, params, x, y):
        return losses.mean_squared_error(y, self.linear_predictor(params, x))

    def check_data(self, x, y=None, sample_weight=None):
        x, y, sample_weight = super().check_data(x, y, sample_weight)
        features = 1 if x.ndim == 1 else x.shape[1]
        if self.built and features != self.features:
            raise ValueError(
                f"x has {features} feature(s), but the model was built for {self.features}."
            )
        return x, y, sample_weight

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "m_initializer": keras.initializers.serialize(self.m_initializer),
                "b_initializer": keras.initializers.serialize(self.b_initializer),
            }
        )
        return config
