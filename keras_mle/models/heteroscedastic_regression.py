"""Heteroscedastic linear regression `y ~ N(x . m + b, exp(x . g + c)^2)`, by maximum likelihood.

Also `ExtendedAdaptation` and `ExtendedAdaptMixin`: `adapt` for models with parameter roles
beyond the slope, intercept and scale of `keras_mle.models.adaptation` (a linear predictor of
`log(sigma)`, and shape parameters such as a t distribution's degrees of freedom).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from keras_mle import data as data_lib
from keras_mle.models.adaptation import Adaptation
from keras_mle.models.gaussian_regression import NoiseScaleMixin
from keras_mle.models.linear_regression import LinearRegression

__all__ = ["HeteroscedasticRegression", "ExtendedAdaptation", "ExtendedAdaptMixin"]

_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)

#: Roles that `ExtendedAdaptation` adds to `keras_mle.models.adaptation.ROLES`.
EXTENDED_ROLES = ("log_scale_slope", "log_scale_intercept", "shape")


class ExtendedAdaptation(Adaptation):
    """`Adaptation` with three more parameter roles, for scale models and shape parameters.

    With `z = (x - x_shift) @ x_matrix` and `t = (y - y_shift) / y_scale` (see
    `keras_mle.models.adaptation`), a log-linear scale `log(sigma_t) = z . gamma + kappa` in the
    working space is, in the user's units, `log(sigma) = x . g + c` with

    ```python
    g = x_matrix @ gamma                                  # "log_scale_slope"
    c = kappa + log(y_scale) - x_shift @ g                # "log_scale_intercept"
    ```

    (`sigma = y_scale * sigma_t`). A `"shape"` parameter (a t distribution's degrees of
    freedom) is unchanged by the affine map of `y`, so its working value is its user value.
    The other roles map as in `Adaptation`; the per-sample NLL changes by `log(y_scale)`, as for
    any location-scale family in `y`.
    """

    def check_roles(self, roles: dict, names) -> None:
        """`Adaptation.check_roles`, plus at most one of each log-scale role, with features."""
        extra = {name for name, role in roles.items() if role in EXTENDED_ROLES}
        super().check_roles(
            {name: role for name, role in roles.items() if name not in extra},
            [name for name in names if name not in extra],
        )
        for role in ("log_scale_slope", "log_scale_intercept"):
            if sum(r == role for r in roles.values()) > 1:
                raise NotImplementedError(f"adapt() supports one {role!r} parameter.")
        if "log_scale_slope" in roles.values() and not self.has_features:
            raise ValueError("a log_scale_slope needs features x to adapt to.")

    def fixed_to_working(self, role: str, values, mask) -> np.ndarray:
        """`Adaptation.fixed_to_working`, for the roles of `EXTENDED_ROLES` too."""
        values = np.asarray(values, np.float64)
        mask = np.asarray(mask, bool)
        redo = "call model.adapt() again, which holds fixed components out of the whitening."
        if role == "shape":
            return values
        if role == "log_scale_intercept":
            if np.any(self.x_shift != 0):
                raise ValueError(
                    "fixed: this adaptation centres x, which makes the log-scale intercept "
                    f"depend on the log-scale slopes; {redo}"
                )
            return values - math.log(self.y_scale)
        if role == "log_scale_slope":
            if np.all(mask):
                # Wholly fixed: gamma = x_matrix^-1 g is fixed whatever the whitening mixes.
                return np.linalg.solve(self.x_matrix, values.reshape(-1)).reshape(values.shape)
            flat = mask.reshape(-1)
            off = self.x_matrix - np.diag(np.diag(self.x_matrix))
            if np.any(off[flat, :] != 0) or np.any(off[:, flat] != 0):
                raise ValueError(
                    "fixed: this adaptation whitens fixed log-scale slope columns together "
                    f"with free ones; {redo}"
                )
            return values / np.diag(self.x_matrix).reshape(values.shape)
        return super().fixed_to_working(role, values, mask)

    def to_user(self, params: dict, roles: dict) -> dict:
        """Natural working-space values -> natural user-unit values (float64 tensors)."""
        result = super().to_user(params, _base_roles(roles))
        log_slope = None
        for name, role in roles.items():
            if role == "log_scale_slope":
                log_slope = tf.linalg.matvec(tf.constant(self.x_matrix), result[name])
                result[name] = log_slope
        for name, role in roles.items():
            if role == "log_scale_intercept":
                intercept = result[name] + math.log(self.y_scale)
                if log_slope is not None:
                    intercept -= tf.reduce_sum(tf.constant(self.x_shift) * log_slope)
                result[name] = intercept
        return result

    def to_working(self, params: dict, roles: dict) -> dict:
        """The inverse of `to_user` (float64 tensors)."""
        result = super().to_working(params, _base_roles(roles))
        log_slope = None
        for name, role in roles.items():
            if role == "log_scale_slope":
                log_slope = result[name]
                gamma = tf.linalg.triangular_solve(
                    tf.constant(self.x_matrix), log_slope[:, None], lower=False
                )
                result[name] = gamma[:, 0]
        for name, role in roles.items():
            if role == "log_scale_intercept":
                intercept = result[name] - math.log(self.y_scale)
                if log_slope is not None:
                    intercept += tf.reduce_sum(tf.constant(self.x_shift) * log_slope)
                result[name] = intercept
        return result


def _base_roles(roles: dict) -> dict:
    return {name: role for name, role in roles.items() if role not in EXTENDED_ROLES}


class ExtendedAdaptMixin:
    """`adapt` through `ExtendedAdaptation`, for models with roles of `EXTENDED_ROLES`.

    Put it before the `MaximumLikelihoodModel` subclass in the bases. `MaximumLikelihoodModel.adapt`
    then builds an `ExtendedAdaptation` (its `adaptation_class`), and fixed components stay fixed
    working coordinates: fixed log-scale slope columns are held out of the whitening (unless
    all of them are fixed), and a fixed log-scale intercept leaves `x` uncentred.
    """

    adaptation_class = ExtendedAdaptation

    def _adapt_constraints(self):
        fixed_columns, center = super()._adapt_constraints()
        for name, role in self.parameter_roles.items():
            parameter = self._parameters.get(name)
            if parameter is None or not parameter.is_fixed:
                continue
            if role == "log_scale_slope" and not np.all(parameter.fixed_mask):
                mask = np.reshape(parameter.fixed_mask, -1)
                fixed_columns = mask if fixed_columns is None else fixed_columns | mask
            elif role == "log_scale_intercept":
                center = False
        return fixed_columns, center

    def component_names(self, name: str) -> list:
        """As `MaximumLikelihoodModel.component_names`; log-scale slopes are named by feature."""
        features = self.feature_names
        if features and self.parameter_roles.get(name) == "log_scale_slope":
            if int(np.prod(self._parameters[name].variable.shape)) == len(features):
                return [f"{name}[{feature}]" for feature in features]
        return super().component_names(name)


@keras.saving.register_keras_serializable(package="keras_mle")
class HeteroscedasticRegression(ExtendedAdaptMixin, NoiseScaleMixin, LinearRegression):
    """`y ~ N(x . m + b, sigma(x)^2)` with `log sigma(x) = x . g + c`: the noise level varies.

    Mathematical details:

    ```python
    mu = x @ m + b
    log_sigma = x @ g + c
    loss = 0.5 * log(2 * pi) + log_sigma + 0.5 * ((y - mu) * exp(-log_sigma)) ** 2
    ```

    `m` and `g` (shape `(k,)`) are the slopes of the mean and of `log(sigma)`, `b` and `c` their
    intercepts; `g = 0` is `GaussianRegression` with `sigma = exp(c)`, so
    `keras_mle.likelihood_ratio_test(model, GaussianRegression(...), x, y)` tests constant
    variance on `k` degrees of freedom. There is no closed form in general (`closed_form`
    returns `None`): for fixed `g, c` the mean is weighted least squares with weights
    `exp(-2 (x . g + c))`, and for a fixed mean `g, c` solve a gamma-type GLM, so the MLE is
    found by iteration.

    `adapt` whitens `x` for both linear predictors and centres and scales `y`
    (`ExtendedAdaptation`): the mean maps as in `GaussianRegression`, and
    `g = x_matrix @ gamma`, `c = kappa + log(y_scale) - x_shift @ g`. After `adapt` the default
    start is the constant-variance model with `sigma = std(y)`.

    Recommended fitting (see `docs/models.md`): `adapt`, then 300 full-batch steps of
    `keras.optimizers.Adam(0.05)`, then `refine` (float64 Newton steps) to the optimum. Plain
    SGD is fragile here, even after `adapt`: the NLL couples the mean and the log-scale, and its
    curvature in `m` grows as `exp(-2 log_sigma)` where the noise is small, so a step size that
    suits the noisy rows overshoots on the quiet ones.

    Args:
        initial_sigma: Initial noise level `exp(c)`, > 0 (with `g = 0`). Defaults to `1.0`.
        m_initializer: Defaults to `"random_normal"`.
        b_initializer: Defaults to `"zeros"`.
        g_initializer: Initializer of the log-scale slopes. Defaults to `"zeros"`.
        **kwargs: `feature_names`, `fixed` (e.g. `{"g": 0.0}`: the constant-variance model) and
            the arguments of `keras.Model`; see `LinearRegression`.
    """

    sample_loss_kind = "nll"
    parameter_roles = {
        "m": "slope",
        "b": "intercept",
        "g": "log_scale_slope",
        "c": "log_scale_intercept",
    }
    adapt_targets = True

    def __init__(
        self,
        initial_sigma=1.0,
        m_initializer="random_normal",
        b_initializer="zeros",
        g_initializer="zeros",
        **kwargs,
    ):
        initial_sigma = data_lib.check_positive_scalar("initial_sigma", initial_sigma)
        super().__init__(m_initializer=m_initializer, b_initializer=b_initializer, **kwargs)
        self.initial_sigma = initial_sigma
        self.g_initializer = keras.initializers.get(g_initializer)

    def build(self, input_shape):
        super().build(input_shape)
        features = self._parameters["m"].variable.shape[0]
        self.add_parameter("g", shape=(features,), initializer=self.g_initializer)
        self.add_parameter("c", initializer=math.log(self.initial_sigma))

    @property
    def features(self):
        """Number of features `k` (known once built), read from `m` even when `m` is fixed."""
        parameter = self._parameters.get("m")
        return None if parameter is None or not self.built else parameter.variable.shape[0]

    def log_sigma_predictor(self, params, x):
        """`x @ g + c`, shape `(N,)`: the log of the noise level; a 1-D `x` is one feature."""
        return self.linear_predictor({"m": params["g"], "b": params["c"]}, x)

    def sample_loss(self, params, x, y):
        mean = self.linear_predictor(params, x)
        log_sigma = self.log_sigma_predictor(params, x)
        z = (tf.cast(y, mean.dtype) - mean) * tf.exp(-log_sigma)
        return _HALF_LOG_TWO_PI + log_sigma + 0.5 * tf.square(z)

    def closed_form(self, x, y=None, sample_weight=None):
        """`None`: the heteroscedastic MLE has no closed form (see the class docstring)."""
        return None

    def start_from_ols(self, x, y, sample_weight=None):
        """Sets the constant-variance MLE as the starting point: OLS `m, b`, `g = 0`, `c`.

        `c = log(sqrt(RSS / n))`, the log of `GaussianRegression`'s `sigma`. Fixed components
        keep their values. From here `refine(x, y)` (float64 Newton steps) usually reaches the
        heteroscedastic optimum in a few steps.

        Returns:
            The model.
        """
        from keras_mle.models.linear_regression import constrained_least_squares

        x64, y64, w = self.check_data(x, y, sample_weight, dtype=np.float64)
        self._build_from_shape(x64.shape)
        fixed = self.fixed
        fit = constrained_least_squares(
            x64, y64, w, {name: v for name, v in fixed.items() if name in ("m", "b")}
        )
        start = {"m": fit["m"], "b": fit["b"], "g": np.zeros(self.features)}
        start["c"] = np.log(np.sqrt(fit["rss"] / fit["n"]))
        self.set_params({name: _keep_fixed(v, fixed.get(name)) for name, v in start.items()})
        return self

    def predict_distribution(self, x, **kwargs):
        """Mean and standard deviation of `y` given `x`: `{"mean": (N,), "sigma": (N,)}`.

        `kwargs` go to `predict` (e.g. `batch_size`).
        """
        mean = self.predict(x, **kwargs)
        params = self.user_params_tensors(tf.float64)
        x64 = tf.constant(np.asarray(x, np.float64))
        sigma = np.exp(self.log_sigma_predictor(params, x64).numpy())
        return {"mean": mean, "sigma": sigma.astype(mean.dtype)}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "initial_sigma": self.initial_sigma,
                "g_initializer": keras.initializers.serialize(self.g_initializer),
            }
        )
        return config


def _keep_fixed(value, fixed):
    """`value` with the components given in `fixed` (a number, or a list with None) set."""
    if fixed is None:
        return value
    value = np.array(value, np.float64)
    items = fixed if isinstance(fixed, list) else [fixed] * value.size
    flat = value.reshape(-1)
    for i, item in enumerate(items):
        if item is not None:
            flat[i] = item
    return flat.reshape(value.shape)
