"""Robust linear regression with Student-t noise, `y = x . m + b + scale * t_df`, by MLE."""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from keras_mle import data as data_lib
from keras_mle.models.gaussian_regression import NoiseScaleMixin
from keras_mle.models.heteroscedastic_regression import ExtendedAdaptMixin
from keras_mle.models.linear_regression import LinearRegression

__all__ = ["StudentTRegression"]

_HALF_LOG_PI = 0.5 * math.log(math.pi)


@keras.saving.register_keras_serializable(package="keras_mle")
class StudentTRegression(ExtendedAdaptMixin, NoiseScaleMixin, LinearRegression):
    """`(y - x . m - b) / scale ~ t(df)`: linear regression with heavy-tailed noise.

    Mathematical details (the standard t density, as `scipy.stats.t` and statsmodels'
    `TLinearModel`):

    ```python
    loc = x @ m + b
    z = (y - loc) / scale
    loss = (lgamma(df / 2) - lgamma((df + 1) / 2) + 0.5 * log(df * pi) + log(scale)
            + (df + 1) / 2 * log1p(z ** 2 / df))
    ```

    `scale > 0` is the t scale, not the standard deviation (which is
    `scale * sqrt(df / (df - 2))`, finite only for `df > 2`). The degrees of freedom `df > 0` are
    learned (`df=None`, a parameter `"df"` stored as its log) or fixed (`df=4.0`, a constant
    that is not a parameter; `fixed={"df": 4.0}` with `df=None` fixes the parameter instead,
    and `inference` then lists it as fixed). A gross outlier adds only `O(log z^2)` to the loss,
    so the fit follows the bulk of the data (robust regression); as `df -> infinity` the model
    becomes `GaussianRegression`. On Gaussian data the MLE of `df` may be infinite: `df` then
    drifts upwards in training and `inference` reports a Hessian that is not positive definite
    (fix `df`, or use `GaussianRegression`). There is no closed form (`closed_form` returns
    `None`).

    `adapt` whitens `x` and centres and scales `y` as for `GaussianRegression` (`scale` maps as
    a noise scale, `df` is unchanged: role `"shape"`). Recommended fitting: `adapt`, full-batch
    Adam (`learning_rate=0.05`, a few hundred steps), then `refine`; see `docs/models.md`.

    Args:
        df: Fixed degrees of freedom (> 0), or `None` to learn them. Defaults to `None`.
        initial_scale: Initial scale, > 0. Defaults to `1.0`.
        initial_df: Initial degrees of freedom when learned, > 0. Defaults to `5.0` (as
            statsmodels' `TLinearModel`).
        m_initializer: Defaults to `"random_normal"`.
        b_initializer: Defaults to `"zeros"`.
        **kwargs: `feature_names`, `fixed` and the arguments of `keras.Model`; see
            `LinearRegression`.
    """

    sample_loss_kind = "nll"
    parameter_roles = {"m": "slope", "b": "intercept", "scale": "scale", "df": "shape"}
    adapt_targets = True

    def __init__(
        self,
        df=None,
        initial_scale=1.0,
        initial_df=5.0,
        m_initializer="random_normal",
        b_initializer="zeros",
        **kwargs,
    ):
        if df is not None:
            df = data_lib.check_positive_scalar("df", df)
            if "df" in (kwargs.get("fixed") or {}):
                raise ValueError("fixed: 'df' is not a parameter when df is given; drop one.")
        initial_scale = data_lib.check_positive_scalar("initial_scale", initial_scale)
        initial_df = data_lib.check_positive_scalar("initial_df", initial_df)
        super().__init__(m_initializer=m_initializer, b_initializer=b_initializer, **kwargs)
        self.df = df
        self.initial_scale = initial_scale
        self.initial_df = initial_df

    def build(self, input_shape):
        super().build(input_shape)
        self.add_parameter("scale", initializer=self.initial_scale, positive=True)
        if self.df is None:
            self.add_parameter("df", initializer=self.initial_df, positive=True)

    @property
    def features(self):
        """Number of features `k` (known once built), read from `m` even when `m` is fixed."""
        parameter = self._parameters.get("m")
        return None if parameter is None or not self.built else parameter.variable.shape[0]

    def _degrees_of_freedom(self, params, dtype):
        if self.df is None:
            return params["df"]
        return tf.constant(self.df, dtype)

    def sample_loss(self, params, x, y):
        loc = self.linear_predictor(params, x)
        scale = params["scale"]
        df = self._degrees_of_freedom(params, loc.dtype)
        z = (tf.cast(y, loc.dtype) - loc) / scale
        normalization = (
            tf.math.lgamma(0.5 * df)
            - tf.math.lgamma(0.5 * (df + 1.0))
            + 0.5 * tf.math.log(df)
            + _HALF_LOG_PI
            + tf.math.log(scale)
        )
        return normalization + 0.5 * (df + 1.0) * tf.math.log1p(tf.square(z) / df)

    def closed_form(self, x, y=None, sample_weight=None):
        """`None`: the Student-t MLE has no closed form."""
        return None

    def predict_distribution(self, x, **kwargs):
        """The t distribution of `y` given `x`: `{"loc", "scale", "df", "sigma"}`, each `(N,)`.

        `loc` is the centre (`x . m + b`, also the mean when `df > 1`), `sigma` the standard
        deviation `scale * sqrt(df / (df - 2))` (`inf` when `df <= 2`). `kwargs` go to
        `predict` (e.g. `batch_size`).
        """
        loc = self.predict(x, **kwargs)
        params = self.params
        df = self.degrees_of_freedom
        scale = float(params["scale"])
        sigma = scale * math.sqrt(df / (df - 2.0)) if df > 2.0 else math.inf
        return {
            "loc": loc,
            "scale": np.full_like(loc, scale),
            "df": np.full_like(loc, df),
            "sigma": np.full_like(loc, sigma),
        }

    @property
    def degrees_of_freedom(self) -> float:
        """`df`: the fixed value, or the learned one (known once built)."""
        if self.df is not None:
            return self.df
        return float(self.params["df"])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "df": self.df,
                "initial_scale": self.initial_scale,
                "initial_df": self.initial_df,
            }
        )
        return config
