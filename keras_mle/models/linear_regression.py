"""Linear regression `y = x . m + b`, fitted by mean squared error."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keras_mle import closed_form as closed_form_lib
from keras_mle import data as data_lib
from keras_mle import losses
from keras_mle.models.base import MaximumLikelihoodModel

__all__ = ["LinearRegression", "constrained_least_squares"]


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
        **kwargs: `feature_names` (names of the columns of `x`, which label the slopes
            `m[name]`; taken from a DataFrame's columns otherwise), `fixed` (parameters held at
            a value, e.g. `{"m": [0.0, None]}`; see `MaximumLikelihoodModel`), and the
            arguments of `keras.Model` (e.g. `name`, `dtype`).

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
        return self._parameters["m"].variable.shape[0] if self.built else None

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

    def mean(self, params, x):
        # (`call` gives the parameters in the data's dtype: float64 once adapted, so the fitted
        # line is applied to the data as given.)
        return self.linear_predictor(params, x)

    def sample_loss(self, params, x, y):
        return losses.mean_squared_error(y, self.linear_predictor(params, x))

    def closed_form(self, x, y=None, sample_weight=None):
        """Ordinary (or weighted) least squares: `{"m", "b"}` (`keras_mle.closed_form.ols`).

        With fixed components, least squares over the free ones (`constrained_least_squares`).
        """
        if self.fixed:
            fit = constrained_least_squares(x, y, sample_weight, self.fixed)
            return {"m": fit["m"], "b": fit["b"]}
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


def constrained_least_squares(x, y, sample_weight, fixed: dict) -> dict:
    """Least squares of `y = x @ m + b` with some of `m`, `b` fixed, in float64.

    The fixed terms move to an offset: `y - x_fixed @ m_fixed (- b)` is regressed on the free
    columns (and a constant when `b` is free).

    Args:
        x: Features, `(N,)` or `(N, k)`.
        y: Targets, `(N,)`.
        sample_weight: Weights, or `None`.
        fixed: `{"m": value or [value or None, ...], "b": value}`, as a model's `fixed`.

    Returns:
        `{"m": (k,), "b": (), "rss": (), "n": ()}` (`n` the sum of the weights).
    """
    x, y = data_lib.check_xy(x, y, dtype=np.float64)
    w = data_lib.check_sample_weight(sample_weight, len(x), dtype=np.float64)
    w = np.ones_like(y) if w is None else w
    x = x.reshape(len(x), -1)
    k = x.shape[1]
    spec = fixed.get("m")
    items = spec if isinstance(spec, list) else [spec] * k
    m_mask = np.array([v is not None for v in items])
    m = np.array([0.0 if v is None else v for v in items])
    b_fixed = fixed.get("b")
    offset = x[:, m_mask] @ m[m_mask] + (0.0 if b_fixed is None else b_fixed)
    design = x[:, ~m_mask]
    if b_fixed is None:
        design = np.column_stack([design, np.ones(len(x))])
    root_w = np.sqrt(w)
    coefficients = np.zeros(design.shape[1])
    if design.shape[1]:
        coefficients, *_ = np.linalg.lstsq(
            root_w[:, None] * design, root_w * (y - offset), rcond=None
        )
    m[~m_mask] = coefficients[: int((~m_mask).sum())]
    b = b_fixed if b_fixed is not None else coefficients[-1]
    residuals = y - x @ m - b
    return {"m": m, "b": np.float64(b), "rss": np.float64(w @ residuals**2), "n": w.sum()}
