"""Standard errors, intervals, information criteria and likelihood-ratio tests for fitted models.

`inference(model, x, y)` turns a model trained by `fit()` (or `keras_mle.loops`) into the numbers
statsmodels reports: estimates, standard errors from the observed Fisher information,
t or z statistics, p-values, confidence intervals, the log-likelihood, AIC and BIC.

It is linear algebra over the model's statistics hook, `model.likelihood_derivatives`, which
gives the total loss `L` (the NLL, or the sum of squared errors) in the user's units, its
gradient `g` and Hessian `H` in float64 with respect to the estimation coordinates `theta`
(the natural parameters of the working space of `adapt`: the user's parameters when the model
is not adapted), and the constant Jacobian `J = d theta_user / d theta`:

```python
cov_theta = H^-1                      # MLE conventions (NLL models)
cov_theta = 2 * s^2 * H^-1            # OLS conventions: s^2 = RSS / (n - p), since H = 2 X'X
cov = J @ cov_theta @ J.T             # the delta method (exact: adapt is affine)
newton_step = J @ H^-1 @ g            # what is left to the optimum, in the user's units
```

`H` is inverted in the estimation coordinates, where an adapted model's Hessian is close to a
multiple of the identity, and only then mapped to the user's units.

Two conventions, because the two kinds of model answer different questions:

- **OLS** (squared-error models such as `LinearRegression`, which have no noise parameter; and,
  with `convention="ols"`, any model whose `least_squares_model()` returns one, such as
  `GaussianRegression`): `s^2 = RSS / (n - p)` is the unbiased noise variance, the statistics
  follow Student's t with `n - p` degrees of freedom, `AIC = -2 loglik + 2 p` with `p`
  coefficients; as `statsmodels.OLS`, whose numbers these are.
- **MLE** (NLL models: `GaussianMLE`, `GaussianRegression`, user subclasses): the inverse observed
  information, normal (z) statistics, `AIC = -2 loglik + 2 k` with `k` all parameters, noise
  included; as `statsmodels.GenericLikelihoodModel`. The MLE of sigma divides by `n`, so its
  standard errors are smaller than the OLS ones by `sqrt((n - p) / n)`: both are right, for their
  estimator.

The result is not silently wrong: the Newton step left at the fitted parameters, measured in
standard errors, says how far the fit is from the optimum; when it exceeds `tol`, or `H` is not
positive definite, `inference` warns (`InferenceWarning`), sets `converged` /
`hessian_positive_definite` to `False`, and (for a non-positive-definite `H`) reports NaN standard
errors rather than confident numbers. Non-finite parameters, and a `sample_loss` that cannot run
in float64, are `ValueError`s (raised by the model's hook).

The reference distributions are those of `keras_mle.distributions` (SciPy).
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np

from keras_mle import _summary, distributions
from keras_mle.models.base import LikelihoodDerivatives, MaximumLikelihoodModel

__all__ = [
    "inference",
    "likelihood_ratio_test",
    "InferenceResult",
    "LikelihoodRatioResult",
    "InferenceWarning",
]

CONVENTIONS = ("auto", "ols", "mle")


class InferenceWarning(UserWarning):
    """The fit has not converged, or the Hessian is not positive definite."""


# ---------------------------------------------------------------------------- results
@dataclasses.dataclass(eq=False)
class InferenceResult:
    """Estimates and their uncertainty, in the user's units. Returned by `inference`.

    `params`, `stderr`, `tvalues`, `pvalues` are dicts keyed like `model.params` (a NumPy
    `float64` for a scalar parameter, an array for a vector one). `covariance` is the
    `(p, p)` matrix over the flattened parameters named in `param_names` (`m_0, m_1, ...` for
    the components of a vector `m`).

    Attributes:
        model_name: Class name of the model.
        convention: `"ols"` (t statistics, `s^2 = RSS / (n - p)`) or `"mle"` (z statistics).
        loglik: Maximised log-likelihood (for OLS: the Gaussian one, with `sigma^2 = RSS / n`).
        aic, bic: `-2 loglik + 2 k`, `-2 loglik + log(n) k` (`k`: see the module docstring).
        nobs: Number of observations (the sum of the weights).
        df_resid: `nobs - k`.
        sigma: Residual standard deviation under the convention (`None` for a model without
            one).
        converged: Whether the Newton step left is under `tol` standard errors.
        hessian_positive_definite: Whether the fit is at a strict local minimum.
        distance_to_optimum: Largest Newton step left, in standard errors.
        warnings: The warnings raised, as text.
        n_likelihood_params: Free parameters of the likelihood (for OLS: the coefficients and
            sigma), whose differences are the degrees of freedom of `likelihood_ratio_test`.
    """

    model_name: str
    convention: str
    params: dict
    stderr: dict
    covariance: np.ndarray
    param_names: list
    loglik: float
    aic: float
    bic: float
    nobs: float
    df_resid: float
    sigma: float | None
    converged: bool
    hessian_positive_definite: bool
    distance_to_optimum: float
    warnings: list
    n_likelihood_params: int

    @property
    def distribution(self) -> str:
        """`"t"` (OLS) or `"normal"` (MLE): the reference distribution of `tvalues`."""
        return "t" if self.convention == "ols" else "normal"

    @property
    def tvalues(self) -> dict:
        """`params / stderr`: t statistics (OLS) or z statistics (MLE)."""
        return {name: _as_param(self.params[name] / self.stderr[name]) for name in self.params}

    @property
    def pvalues(self) -> dict:
        """Two-sided p-values of `params == 0`, from the t (OLS) or normal (MLE) distribution."""
        result = {}
        for name, t in self.tvalues.items():
            tail = (
                distributions.t_sf(np.abs(t), self.df_resid)
                if self.convention == "ols"
                else distributions.normal_sf(np.abs(t))
            )
            result[name] = _as_param(np.where(np.isnan(t), np.nan, 2.0 * tail))
        return result

    def critical_value(self, level: float = 0.95) -> float:
        """The `(1 + level) / 2` quantile of the t (OLS) or normal (MLE) distribution."""
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level!r}.")
        q = 0.5 * (1.0 + level)
        if self.convention == "ols":
            return float(distributions.t_ppf(q, self.df_resid))
        return float(distributions.normal_ppf(q))

    def conf_int(self, level: float = 0.95) -> dict:
        """Confidence intervals `params -/+ q * stderr`, `q` from `critical_value(level)`.

        Returns:
            A dict keyed like `params`; each value has the parameter's shape plus a last axis
            `(lower, upper)`.
        """
        q = self.critical_value(level)
        return {
            name: np.stack([value - q * self.stderr[name], value + q * self.stderr[name]], -1)
            for name, value in self.params.items()
        }

    def to_dict(self, level: float = 0.95) -> dict:
        """Plain Python values (JSON-serializable; NaN stays a float NaN)."""

        def plain(tree):
            return {name: np.asarray(value).tolist() for name, value in tree.items()}

        return {
            "model": self.model_name,
            "convention": self.convention,
            "distribution": self.distribution,
            "params": plain(self.params),
            "stderr": plain(self.stderr),
            "tvalues": plain(self.tvalues),
            "pvalues": plain(self.pvalues),
            "conf_int": {"level": level, **plain(self.conf_int(level))},
            "covariance": self.covariance.tolist(),
            "param_names": list(self.param_names),
            "loglik": self.loglik,
            "aic": self.aic,
            "bic": self.bic,
            "nobs": self.nobs,
            "df_resid": self.df_resid,
            "sigma": self.sigma,
            "converged": self.converged,
            "hessian_positive_definite": self.hessian_positive_definite,
            "distance_to_optimum": self.distance_to_optimum,
            "warnings": list(self.warnings),
        }

    def summary(self, level: float = 0.95) -> str:
        """A text table in the spirit of statsmodels' `summary()`."""
        return _summary.summary_table(self, level)

    def __str__(self) -> str:
        return self.summary()


@dataclasses.dataclass(frozen=True)
class LikelihoodRatioResult:
    """`statistic = 2 (loglik_full - loglik_restricted)`, chi-square with `df` under H0."""

    statistic: float
    df: int
    pvalue: float
    loglik_full: float
    loglik_restricted: float
    warnings: tuple = ()

    def __str__(self) -> str:
        return (
            f"Likelihood ratio test: chi2({self.df}) = {self.statistic:.6g}, "
            f"p = {self.pvalue:.4g} (loglik {self.loglik_full:.6g} vs "
            f"{self.loglik_restricted:.6g})"
        )


# ---------------------------------------------------------------------------- inference
def inference(
    model: MaximumLikelihoodModel,
    x,
    y=None,
    *,
    sample_weight=None,
    convention: str = "auto",
    tol: float = 1e-3,
) -> InferenceResult:
    """Standard errors, tests and information criteria of a fitted `keras_mle` model.

    Args:
        model: A fitted `keras_mle.MaximumLikelihoodModel` (adapted or not, any dtype).
        x: The data it was fitted on (for `GaussianMLE`: the samples).
        y: Targets, or `None` for a model of a sample. Defaults to `None`.
        sample_weight: Frequency weights, as given to `fit`. Defaults to `None`.
        convention: `"ols"` (t statistics, `s^2 = RSS / (n - p)`), `"mle"` (z statistics,
            inverse observed information) or `"auto"`: `"ols"` for squared-error models
            (`sample_loss_kind == "squared_error"`), else `"mle"`. `"ols"` applies to
            squared-error models and to models whose `least_squares_model()` returns one
            (`GaussianRegression`); `"mle"` to NLL models. Defaults to `"auto"`.
        tol: Largest Newton step left at the fitted parameters, in standard errors, for the fit
            to count as converged. Defaults to `1e-3`.

    Returns:
        An `InferenceResult`.

    Raises:
        TypeError: if `model` is not a `keras_mle.MaximumLikelihoodModel`.
        ValueError: for bad arguments or data, a convention the model does not support,
            non-finite parameters, or a `sample_loss` that cannot run in float64.

    Example:

    ```python
    model = keras_mle.LinearRegression().adapt(x, y)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    model.fit(x, y, epochs=3, batch_size=len(x))
    result = keras_mle.inference(model, x, y)
    result.stderr["m"], result.conf_int()["b"]
    print(result.summary())
    ```
    """
    if not isinstance(model, MaximumLikelihoodModel):
        raise TypeError(f"model must be a keras_mle model, got {type(model).__name__}.")
    if not model.built:
        raise ValueError("model is not built: fit it (or call it on a batch) first.")
    convention, least_squares = _resolve_convention(model, convention)
    if isinstance(tol, bool) or not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"tol must be a number > 0, got {tol!r}.")
    if convention == "ols":
        fit = _ols_fit(model, least_squares, x, y, sample_weight)
    else:
        fit = _mle_fit(model, x, y, sample_weight)

    variances = np.diag(fit.covariance)
    stderr_flat = np.where(variances >= 0, np.sqrt(np.abs(variances)), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = float(np.max(np.abs(fit.newton_step) / stderr_flat))
    messages = []
    if not fit.positive_definite:
        messages.append(
            f"The Hessian is not positive definite ({fit.hessian_note}): the parameters are not "
            "at a minimum, so no standard errors are reported (NaN)."
        )
    converged = fit.positive_definite and math.isfinite(distance) and distance <= tol
    if fit.positive_definite and not converged:
        messages.append(
            f"Not converged: the optimum is still {distance:.3g} standard errors away "
            f"(tol={tol:g}); train longer (after model.adapt) before trusting these numbers."
        )
    for message in messages:
        warnings.warn(f"{type(model).__name__}: {message}", InferenceWarning, stacklevel=2)

    params = _unflatten(fit.derivatives.params, fit.shapes)
    stderr = _unflatten(stderr_flat, fit.shapes)
    param_names = list(fit.derivatives.names)
    covariance = fit.covariance
    if fit.unestimated:
        # Parameters outside the least-squares model (the noise scale, reported as s): no
        # standard error, and NaN rows and columns in the covariance.
        shapes = {name: np.shape(value) for name, value in fit.unestimated.items()}
        params.update(fit.unestimated)
        stderr.update(_unflatten(np.full(_size(shapes), np.nan), shapes))
        covariance = np.pad(covariance, (0, _size(shapes)), constant_values=np.nan)
        param_names += _flat_names(shapes)
    return InferenceResult(
        model_name=type(model).__name__,
        convention=convention,
        params=params,
        stderr=stderr,
        covariance=covariance,
        param_names=param_names,
        loglik=fit.loglik,
        aic=-2.0 * fit.loglik + 2.0 * fit.k_criteria,
        bic=-2.0 * fit.loglik + math.log(fit.nobs) * fit.k_criteria,
        nobs=fit.nobs,
        df_resid=fit.df_resid,
        sigma=fit.sigma,
        converged=converged,
        hessian_positive_definite=fit.positive_definite,
        distance_to_optimum=distance,
        warnings=messages,
        n_likelihood_params=fit.k_likelihood,
    )


def likelihood_ratio_test(
    full: MaximumLikelihoodModel,
    restricted: MaximumLikelihoodModel,
    x,
    y=None,
    df: int | None = None,
    *,
    x_restricted=None,
    sample_weight=None,
) -> LikelihoodRatioResult:
    """Likelihood-ratio test of a restricted model nested in a full one, fitted to the same data.

    Formula:

    ```python
    statistic = 2 * (loglik_full - loglik_restricted)   # ~ chi2(df) when the restriction holds
    pvalue = P(chi2(df) > statistic)
    ```

    A model of a sample (`GaussianMLE`) given with a regression is fitted to the targets `y`: it
    is the regression without slopes (`GaussianRegression` vs `GaussianMLE` tests `m = 0`). The
    log-likelihoods are those of `inference` (for a squared-error model: the Gaussian one with
    `sigma` at its MLE, which counts as a parameter), and so are its convergence warnings.

    Args:
        full: The larger fitted model.
        restricted: The fitted model with fewer free parameters.
        x: Features (or samples, when both models are models of a sample).
        y: Targets. Defaults to `None`.
        df: Degrees of freedom. Defaults to `None`: the difference in the number of free
            parameters.
        x_restricted: Features of the restricted model, when they differ from `x` (e.g. a
            subset of its columns). Defaults to `None` (the same `x`).
        sample_weight: Frequency weights. Defaults to `None`.

    Returns:
        A `LikelihoodRatioResult`.
    """
    x_restricted = x if x_restricted is None else x_restricted
    results = [
        inference(model, *_data_for(model, features, y), sample_weight=sample_weight)
        for model, features in ((full, x), (restricted, x_restricted))
    ]
    if results[0].nobs != results[1].nobs:
        raise ValueError("full and restricted were evaluated on different numbers of rows.")
    if df is None:
        df = results[0].n_likelihood_params - results[1].n_likelihood_params
        if df < 1:
            raise ValueError(
                f"full has {results[0].n_likelihood_params} free parameters and restricted "
                f"{results[1].n_likelihood_params}: not nested that way round; pass df."
            )
    elif isinstance(df, bool) or not isinstance(df, (int, np.integer)) or df < 1:
        raise ValueError(f"df must be a positive integer, got {df!r}.")
    statistic = 2.0 * (results[0].loglik - results[1].loglik)
    messages = [m for r in results for m in r.warnings]
    if statistic < -1e-8 * max(1.0, abs(results[0].loglik)):
        message = (
            f"The restricted model fits better (statistic {statistic:.4g} < 0): the models are "
            "not nested, or the full model has not converged."
        )
        warnings.warn(message, InferenceWarning, stacklevel=2)
        messages.append(message)
    return LikelihoodRatioResult(
        statistic=statistic,
        df=int(df),
        pvalue=float(distributions.chi2_sf(max(statistic, 0.0), df)),
        loglik_full=results[0].loglik,
        loglik_restricted=results[1].loglik,
        warnings=tuple(messages),
    )


# ---------------------------------------------------------------------------- the linear algebra
@dataclasses.dataclass(frozen=True)
class _Fit:
    """What `inference` reports, before the per-parameter bookkeeping (flat, user units)."""

    derivatives: LikelihoodDerivatives  # of the model whose covariance this is
    shapes: dict  # name -> shape of each parameter in `derivatives`, in order
    covariance: np.ndarray
    newton_step: np.ndarray
    positive_definite: bool
    hessian_note: str
    nobs: float
    df_resid: float
    loglik: float
    sigma: float | None
    k_criteria: int  # parameters counted by AIC and BIC
    k_likelihood: int  # free parameters of the likelihood (likelihood-ratio degrees of freedom)
    unestimated: dict = dataclasses.field(default_factory=dict)  # reported without stderr


def _mle_fit(model, x, y, sample_weight) -> _Fit:
    """MLE conventions: `cov = J H^-1 J^T`, `H` the Hessian of the total NLL."""
    derivatives = model.likelihood_derivatives(x, y, sample_weight)
    h_inverse, positive_definite, note = _inverse_hessian(derivatives.hessian)
    jacobian = derivatives.jacobian
    p = len(derivatives.params)
    nobs = float(np.sum(derivatives.weights))
    shapes = _shapes(model)
    scale = _scale_name(model)
    sigma = None
    if scale is not None and math.prod(shapes[scale]) == 1:
        sigma = float(np.ravel(_unflatten(derivatives.params, shapes)[scale])[0])
    return _Fit(
        derivatives=derivatives,
        shapes=shapes,
        covariance=jacobian @ h_inverse @ jacobian.T,
        newton_step=jacobian @ (h_inverse @ derivatives.gradient),
        positive_definite=positive_definite,
        hessian_note=note,
        nobs=nobs,
        df_resid=nobs - p,
        loglik=-derivatives.total,
        sigma=sigma,
        k_criteria=p,
        k_likelihood=p,
    )


def _ols_fit(model, least_squares, x, y, sample_weight) -> _Fit:
    """OLS conventions: `cov = 2 s^2 J H^-1 J^T`, `H` the Hessian of the RSS (`= 2 X'X`)."""
    if least_squares is model:
        derivatives = model.likelihood_derivatives(x, y, sample_weight)
    else:
        try:
            derivatives = least_squares.likelihood_derivatives(x, y, sample_weight)
        except ValueError as error:
            raise ValueError(
                f"{type(model).__name__} (convention='ols', through its least-squares model): "
                f"{error}"
            ) from None
    h_inverse, positive_definite, note = _inverse_hessian(derivatives.hessian)
    jacobian = derivatives.jacobian
    p = len(derivatives.params)
    nobs = float(np.sum(derivatives.weights))
    df_resid = nobs - p
    if df_resid <= 0:
        raise ValueError(f"OLS needs more observations than coefficients: n={nobs:g}, p={p}.")
    rss = derivatives.total
    if not rss > 0:
        raise ValueError(
            f"{type(model).__name__}: the residual sum of squares is {rss!r}, so the noise "
            "variance, the OLS standard errors and the Gaussian log-likelihood are undefined."
        )
    s2 = rss / df_resid
    unestimated = {}
    if least_squares is not model:
        shared = set(least_squares.parameter_names)
        scale = _scale_name(model)
        current = model.params
        for name in model.parameter_names:
            if name not in shared:
                value = math.sqrt(s2) if name == scale else current[name]
                unestimated[name] = _as_param(value)
    return _Fit(
        derivatives=derivatives,
        shapes=_shapes(least_squares),
        covariance=jacobian @ (2.0 * s2 * h_inverse) @ jacobian.T,
        newton_step=jacobian @ (h_inverse @ derivatives.gradient),
        positive_definite=positive_definite,
        hessian_note=note,
        nobs=nobs,
        df_resid=df_resid,
        loglik=-0.5 * nobs * (math.log(2.0 * math.pi) + math.log(rss / nobs) + 1.0),
        sigma=math.sqrt(s2),
        k_criteria=p,
        k_likelihood=p + 1,
        unestimated=unestimated,
    )


def _inverse_hessian(hessian):
    """`(H^-1, positive_definite, note)`; `H^-1` is NaN unless `H` is safely positive definite.

    `H` counts as positive definite when its smallest eigenvalue exceeds `p * eps` times its
    largest (below that, `H^-1` would be dominated by rounding).
    """
    h = 0.5 * (hessian + hessian.T)
    p = len(h)
    nan = np.full((p, p), np.nan)
    if not np.all(np.isfinite(h)):
        return nan, False, "it has NaN or Inf entries"
    eigenvalues = np.linalg.eigvalsh(h)
    positive_definite = bool(
        eigenvalues[-1] > 0 and eigenvalues[0] > eigenvalues[-1] * p * np.finfo(np.float64).eps
    )
    note = f"eigenvalues {eigenvalues[0]:.3g} .. {eigenvalues[-1]:.3g}"
    return (np.linalg.inv(h) if positive_definite else nan), positive_definite, note


# ---------------------------------------------------------------------------- helpers
def _resolve_convention(model, convention):
    """`(convention, least_squares)`: the model whose squared errors OLS uses, or `None`."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}.")
    name = type(model).__name__
    if model.sample_loss_kind == "squared_error":
        if convention == "mle":
            raise ValueError(
                f"{name} minimises squared error and has no noise parameter: use "
                "convention='ols', or a Gaussian likelihood model (GaussianRegression) for MLE "
                "conventions."
            )
        return "ols", model
    if convention in ("auto", "mle"):
        return "mle", None
    least_squares = model.least_squares_model()
    if least_squares is None:
        raise ValueError(
            f"convention='ols' applies to squared-error models and to models whose "
            f"least_squares_model() returns one; {name}.least_squares_model() returns None. "
            "Use convention='mle'."
        )
    if (
        not isinstance(least_squares, MaximumLikelihoodModel)
        or least_squares.sample_loss_kind != "squared_error"
    ):
        raise ValueError(
            f"{name}.least_squares_model() must return a keras_mle model with "
            f"sample_loss_kind='squared_error', got {type(least_squares).__name__}."
        )
    return "ols", least_squares


def _scale_name(model):
    """The parameter with the role `"scale"` in `parameter_roles` (the noise SD), or `None`."""
    roles = model.parameter_roles or {}
    return next((name for name in model.parameter_names if roles.get(name) == "scale"), None)


def _shapes(model):
    return {name: np.shape(value) for name, value in model.params.items()}


def _data_for(model, x, y):
    if model.takes_targets:
        return x, y
    return (x,) if y is None else (y,)


def _as_param(value):
    value = np.asarray(value, np.float64)
    return np.float64(value) if value.ndim == 0 else value


def _size(shapes):
    return sum(math.prod(shape) for shape in shapes.values())


def _flat_names(shapes):
    """`name` for a one-element parameter, `name_0, name_1, ...` for the others."""
    flat = []
    for name, shape in shapes.items():
        size = math.prod(shape)
        flat += [name] if size == 1 else [f"{name}_{i}" for i in range(size)]
    return flat


def _unflatten(flat, shapes):
    result, start = {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        result[name] = _as_param(np.reshape(flat[start : start + size], shape))
        start += size
    return result
