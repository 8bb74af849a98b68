"""The OLS and MLE conventions of `keras_mle.inference`: which loss, and what follows from it.

From a model's `LikelihoodDerivatives` (the total loss `L`, its gradient `g` and Hessian `H` in
the estimation coordinates, and the Jacobian `J = d theta_user / d theta`), over the free
components:

```python
cov = J H^-1 J^T                   # MLE: H the Hessian of the total NLL; loglik = -L
cov = 2 s^2 J H^-1 J^T             # OLS: H = 2 X'X, s^2 = RSS / (n - p); loglik Gaussian at RSS / n
newton_step = J H^-1 g             # what is left to the optimum, in the user's units
```

`H` is inverted in the estimation coordinates, where an adapted model's Hessian is close to a
multiple of the identity, and only then mapped to the user's units. The module also counts the
parameters (`k` of AIC and BIC, the likelihood-ratio degrees of freedom, statsmodels'
`k_constant`) from the model's `parameter_roles` and `fixed_mask`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from keras_mle import covariance, parameters
from keras_mle.models import MaximumLikelihoodModel

__all__ = [
    "CONVENTIONS",
    "LikelihoodFit",
    "inverse_hessian",
    "mle_fit",
    "n_constant",
    "ols_fit",
    "resolve_convention",
    "scale_name",
]

CONVENTIONS = ("auto", "ols", "mle")
CONSTANT_ROLES = ("intercept", "scale", "log_scale_intercept", "shape")


@dataclasses.dataclass(frozen=True)
class LikelihoodFit:
    """The model-based numbers of one fit under one convention (flat, user units).

    Attributes:
        derivatives: The `LikelihoodDerivatives` of the model whose covariance this is.
        shapes: `name -> shape` of each parameter in `derivatives`, in order.
        covariance: `(p, p)` model-based covariance, NaN over the fixed components.
        newton_step: `J H^-1 g` over the free components.
        positive_definite: Whether `H` (over the free components) is safely positive definite.
        hessian_note: `H`'s eigenvalue range, or why it has none, for the warning.
        nobs: The sum of the weights.
        df_resid: `nobs` minus the free components.
        loglik: The maximised log-likelihood.
        sigma: The residual standard deviation under the convention, or `None`.
        k_criteria: Parameters counted by AIC and BIC.
        k_likelihood: Free parameters of the likelihood (likelihood-ratio degrees of freedom).
        bread: `J H^-1 J^T`, the inverse Hessian in user units over the free components.
        free: Indices of the free components in `derivatives`.
        step_stderr: The standard errors, over the free components, in which the Newton step
            left is measured: the model-based ones, except under OLS, where they are taken with
            `s^2` at the optimum the step reaches (the RSS is quadratic: the step is exact, and
            `s^2` at the current point would be inflated by the misfit).
        unestimated: Parameters reported without a standard error (the noise scale beside a
            least-squares fit, as `s`), `name -> value`.
    """

    derivatives: object
    shapes: dict
    covariance: np.ndarray
    newton_step: np.ndarray
    positive_definite: bool
    hessian_note: str
    nobs: float
    df_resid: float
    loglik: float
    sigma: float | None
    k_criteria: int
    k_likelihood: int
    bread: np.ndarray
    free: np.ndarray
    step_stderr: np.ndarray | None = None
    unestimated: dict = dataclasses.field(default_factory=dict)


def resolve_convention(model, convention: str):
    """`(convention, least_squares)`: `"ols"` or `"mle"`, and the model whose squared errors OLS
    uses (the model itself, or its `least_squares_model()`), or `None` under MLE conventions."""
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
    scale = scale_name(model)
    if scale is not None and scale in getattr(model, "fixed", {}):
        raise ValueError(
            f"convention='ols' estimates the noise level by s^2 = RSS / (n - p), but {name} "
            f"has {scale!r} fixed (fixed={model.fixed}): use convention='mle', whose standard "
            f"errors use the fixed {scale}."
        )
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


def mle_fit(model, derivatives) -> LikelihoodFit:
    """MLE conventions: `cov = J H^-1 J^T`, `H` the Hessian of the total NLL of `model`."""
    free = derivatives.free
    jacobian, h_inverse, positive_definite, note = _inverted(derivatives)
    bread = jacobian @ h_inverse @ jacobian.T
    p = len(free)
    shapes = _shapes(model)
    scale = scale_name(model)
    sigma = None
    if scale is not None and math.prod(shapes[scale]) == 1:
        sigma = float(np.ravel(parameters.unflatten(derivatives.params, shapes)[scale])[0])
    return LikelihoodFit(
        derivatives=derivatives,
        shapes=shapes,
        covariance=covariance.embed(bread, free, len(derivatives.params)),
        newton_step=jacobian @ (h_inverse @ derivatives.gradient[free]),
        positive_definite=positive_definite,
        hessian_note=note,
        nobs=derivatives.nobs,
        df_resid=derivatives.nobs - p,
        loglik=-derivatives.total,
        sigma=sigma,
        k_criteria=p,
        k_likelihood=p,
        bread=bread,
        free=free,
    )


def ols_fit(model, least_squares, derivatives) -> LikelihoodFit:
    """OLS conventions: `cov = 2 s^2 J H^-1 J^T`, `H` the Hessian of the RSS (`= 2 X'X`).

    Args:
        model: The model `inference` was given.
        least_squares: The model whose squared errors these are: `model`, or its
            `least_squares_model()`.
        derivatives: `least_squares`'s `LikelihoodDerivatives` on the data.
    """
    free = derivatives.free
    jacobian, h_inverse, positive_definite, note = _inverted(derivatives)
    p = len(free)
    nobs = derivatives.nobs
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
    gradient = derivatives.gradient[free]
    # RSS(theta + step) = RSS(theta) - g' H^-1 g / 2 exactly, the RSS being quadratic.
    rss_at_optimum = max(rss - 0.5 * float(gradient @ h_inverse @ gradient), 0.0)
    s2_at_optimum = rss_at_optimum / df_resid
    bread = jacobian @ h_inverse @ jacobian.T
    return LikelihoodFit(
        derivatives=derivatives,
        shapes=_shapes(least_squares),
        covariance=covariance.embed(
            jacobian @ (2.0 * s2 * h_inverse) @ jacobian.T, free, len(derivatives.params)
        ),
        newton_step=jacobian @ (h_inverse @ derivatives.gradient[free]),
        positive_definite=positive_definite,
        hessian_note=note,
        nobs=nobs,
        df_resid=df_resid,
        loglik=-0.5 * nobs * (math.log(2.0 * math.pi) + math.log(rss / nobs) + 1.0),
        sigma=math.sqrt(s2),
        k_criteria=p,
        k_likelihood=p + 1,
        bread=bread,
        free=free,
        step_stderr=np.sqrt(np.abs(2.0 * s2_at_optimum * np.diag(bread))),
        unestimated=_unestimated(model, least_squares, math.sqrt(s2)),
    )


def inverse_hessian(hessian: np.ndarray) -> tuple[np.ndarray, bool, str]:
    """`(H^-1, positive_definite, note)`; `H^-1` is NaN unless `H` is safely positive definite.

    `H` counts as positive definite when its smallest eigenvalue exceeds `p * eps` times its
    largest (below that, `H^-1` would be dominated by rounding).
    """
    h = 0.5 * (hessian + hessian.T)
    p = len(h)
    if p == 0:
        return np.zeros((0, 0)), True, "no free parameters"
    nan = np.full((p, p), np.nan)
    if not np.all(np.isfinite(h)):
        return nan, False, "it has NaN or Inf entries"
    eigenvalues = np.linalg.eigvalsh(h)
    positive_definite = bool(
        eigenvalues[-1] > 0 and eigenvalues[0] > eigenvalues[-1] * p * np.finfo(np.float64).eps
    )
    note = f"eigenvalues {eigenvalues[0]:.3g} .. {eigenvalues[-1]:.3g}"
    return (np.linalg.inv(h) if positive_definite else nan), positive_definite, note


def scale_name(model) -> str | None:
    """The parameter with the role `"scale"` in `parameter_roles` (the noise SD), or `None`."""
    roles = model.parameter_roles or {}
    return next((name for name in model.parameter_names if roles.get(name) == "scale"), None)


def n_constant(model) -> int:
    """Free components of the constant terms and the noise's shape (not counted by `df_model`).

    As statsmodels counts `df_model`: the regressors' slopes, not the intercepts, the scale, the
    log-scale's intercept or a shape parameter such as the t's degrees of freedom.
    """
    roles = model.parameter_roles or {}
    mask, free, start = model.fixed_mask, {}, 0
    for name, shape in _shapes(model).items():
        size = math.prod(shape)
        free[name] = size - int(np.sum(mask[start : start + size]))
        start += size
    return sum(
        free[name] for name, role in roles.items() if role in CONSTANT_ROLES and name in free
    )


def _inverted(derivatives):
    """`(J, H^-1, positive_definite, note)` over the free components."""
    free = derivatives.free
    h_inverse, positive_definite, note = inverse_hessian(derivatives.hessian[np.ix_(free, free)])
    return derivatives.jacobian[np.ix_(free, free)], h_inverse, positive_definite, note


def _unestimated(model, least_squares, s):
    """The parameters of `model` outside its least-squares model: the noise scale as `s`."""
    if least_squares is model:
        return {}
    shared = set(least_squares.parameter_names)
    scale, current = scale_name(model), model.params
    return {
        name: parameters.as_value(s if name == scale else current[name])
        for name in model.parameter_names
        if name not in shared
    }


def _shapes(model):
    return {name: np.shape(value) for name, value in model.params.items()}
