"""Gaussian linear regression `y ~ N(x . m + b, sigma^2)`, fitted by maximum likelihood."""

from __future__ import annotations

import keras
import numpy as np

from keras_mle import closed_form as closed_form_lib
from keras_mle import data as data_lib
from keras_mle import losses
from keras_mle.models.linear_regression import LinearRegression, constrained_least_squares

__all__ = ["GaussianRegression", "NoiseScaleMixin"]


class NoiseScaleMixin:
    """For a regression with a noise-scale parameter: refuses targets `y` that are all equal.

    With every target equal, `y = b` fits every row exactly, and the likelihood grows without
    bound as the scale goes to 0 (for a Gaussian, a t or a log-linear scale alike): no MLE
    exists. Least squares (`LinearRegression`) has no scale and keeps such targets. Rows of
    zero weight are left out. Checked on the whole data (`check_whole_data`), not on each
    batch of a stream, whose batches may each be constant when the data are sorted.

    Put it before the `LinearRegression` subclass in the bases.
    """

    def check_whole_data(self, x, y, sample_weight):
        super().check_whole_data(x, y, sample_weight)
        if y is not None:
            rows = y if sample_weight is None else y[sample_weight > 0]
            data_lib.check_not_constant(
                "y",
                rows,
                hint=f" ({type(self).__name__} fits a noise scale; LinearRegression, "
                "least squares, fits constant targets.)",
            )


@keras.saving.register_keras_serializable(package="keras_mle")
class GaussianRegression(NoiseScaleMixin, LinearRegression):
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
        initial_sigma: Initial noise standard deviation, > 0. Defaults to `1.0`.
        m_initializer: Defaults to `"random_normal"`.
        b_initializer: Defaults to `"zeros"`.
        **kwargs: `feature_names`, `fixed` (e.g. `{"sigma": 1.0}`, a known noise level) and
            the arguments of `keras.Model`; see `LinearRegression`.
    """

    sample_loss_kind = "nll"
    parameter_roles = {"m": "slope", "b": "intercept", "sigma": "scale"}

    def __init__(
        self, initial_sigma=1.0, m_initializer="random_normal", b_initializer="zeros", **kwargs
    ):
        initial_sigma = data_lib.check_positive_scalar("initial_sigma", initial_sigma)
        super().__init__(m_initializer=m_initializer, b_initializer=b_initializer, **kwargs)
        self.initial_sigma = initial_sigma

    def build(self, input_shape):
        super().build(input_shape)
        self.add_parameter("sigma", initializer=self.initial_sigma, positive=True)

    def sample_loss(self, params, x, y):
        return losses.gaussian_nll(y, self.linear_predictor(params, x), params["sigma"])

    def closed_form(self, x, y=None, sample_weight=None):
        """OLS `m`, `b` and the MLE `sigma = sqrt(RSS / n)` (`keras_mle.closed_form.ols`).

        With fixed components: least squares over the free ones (`LinearRegression`), and
        `sigma` fixed or `sqrt(RSS / n)` of that fit.
        """
        if not self.fixed:
            ols = closed_form_lib.ols(x, y, sample_weight)
            return {"m": ols["m"], "b": ols["b"], "sigma": ols["sigma"]}
        fit = constrained_least_squares(x, y, sample_weight, self.fixed)
        sigma = self.fixed.get("sigma", np.sqrt(fit["rss"] / fit["n"]))
        return {"m": fit["m"], "b": fit["b"], "sigma": np.float64(sigma)}

    def least_squares_model(self) -> LinearRegression:
        """The `LinearRegression` with this model's `m` and `b` (and `adapt`), for OLS conventions.

        `keras_mle.inference(model, ..., convention="ols")` reports its OLS standard errors.
        """
        adaptation = None if self.adaptation is None else self.adaptation.get_config()
        model = LinearRegression(
            dtype=self.dtype_policy,
            adaptation=adaptation,
            feature_names=self.feature_names,
            fixed={name: v for name, v in self.fixed.items() if name in ("m", "b")},
        )
        model.build((None, self.features))
        for name in ("m", "b"):
            model.parameter(name).variable.assign(self.parameter(name).variable)
        return model

    def predict_distribution(self, x, **kwargs):
        """Mean and standard deviation of `y` given `x`: `{"mean": (N,), "sigma": (N,)}`."""
        mean = self.predict(x, **kwargs)
        return {"mean": mean, "sigma": np.full_like(mean, self.params["sigma"])}

    def get_config(self):
        config = super().get_config()
        config["initial_sigma"] = self.initial_sigma
        return config
