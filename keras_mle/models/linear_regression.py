"""Linear regression `y = x . m + b`, fitted by mean squared error."""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_mle import closed_form as closed_form_lib
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
    adapt_targets = True

    def __init__(self, m_initializer="random_normal", b_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.m_initializer = keras.initializers.get(m_initializer)
        self.b_initializer = keras.initializers.get(b_initializer)

    def build(self, input_shape):
        self.check_input_shape(input_shape)
        features = 1 if len(input_shape) == 1 else input_shape[-1]
        self.add_parameter("m", shape=(features,), initializer=self.m_initializer)
        self.add_parameter("b", initializer=self.b_initializer)

    @property
    def features(self):
        """Number of features `k` (known once built)."""
        return self.weights[0].shape[0] if self.built else None

    def check_input_shape(self, shape):
        shape = tuple(shape)
        features = 1 if len(shape) == 1 else shape[-1]
        if len(shape) not in (1, 2) or features is None:
            raise ValueError(f"x must have shape (N,) or (N, k), got {shape}.")
        if self.built and features != self.features:
            raise ValueError(
                f"x has {features} feature(s), but the model was built for {self.features}."
            )

    def linear_predictor(self, params, x):
        """`x @ m + b`, shape `(N,)`; a 1-D `x` is one feature."""
        x = tf.cast(x, params["m"].dtype)
        if x.shape.rank == 1:
            return x * params["m"][0] + params["b"]
        return tf.linalg.matvec(x, params["m"]) + params["b"]

    def call(self, x):
        # In float64 once adapted: the fitted line is then applied to the data as given.
        return self.linear_predictor(self.user_params_tensors(self.data_dtype), x)

    def sample_loss(self, params, x, y):
        return losses.mean_squared_error(y, self.linear_predictor(params, x))

    def closed_form(self, x, y=None, sample_weight=None):
        """Ordinary (or weighted) least squares: `{"m", "b"}` (`keras_mle.closed_form.ols`)."""
        ols = closed_form_lib.ols(x, y, sample_weight)
        return {"m": ols["m"], "b": ols["b"]}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "m_initializer": keras.initializers.serialize(self.m_initializer),
                "b_initializer": keras.initializers.serialize(self.b_initializer),
            }
        )
        return config
