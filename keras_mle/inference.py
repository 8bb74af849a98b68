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

Fixed components (a model's `fixed=`) are not estimated: the covariance is that of the free
components (the blocks of `H` and `J` over them), a fixed component has no standard error (NaN,
its rows and columns of `covariance` NaN), and the parameter counts (`df_resid`, AIC, BIC,
`df_model`, the degrees of freedom of `likelihood_ratio_test`) count only free components.

The reference distributions are those of `keras_mle.distributions` (SciPy).
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_mle import _summary, covariance, distributions
from keras_mle import profile as profile_lib
from keras_mle.models.base import LikelihoodDerivatives, MaximumLikelihoodModel
from keras_mle.refine import RefineReport, refine

__all__ = [
    "inference",
    "likelihood_ratio_test",
    "refine",
    "InferenceResult",
    "LikelihoodRatioResult",
    "PredictionResult",
    "RefineReport",
    "WaldTestResult",
    "InferenceWarning",
]

CONVENTIONS = ("auto", "ols", "mle")


class InferenceWarning(UserWarning):
    """The fit has not converged, or the Hessian is not positive definite."""


# ---------------------------------------------------------------------------- results
@dataclasses.dataclass(eq=False)
class InferenceResult:
    """Estimates and their uncertainty, in the user's units. Returned by `inference`.

    `params`, `stderr` (alias `bse`), `tvalues`, `pvalues` are dicts keyed like `model.params`
    (a NumPy `float64` for a scalar parameter, an array for a vector one); statsmodels returns
    flat arrays instead, which `to_frame()` gives here. `covariance` (also `cov_params()`) is
    the `(p, p)` matrix over the flattened parameters named in `param_names` (`m_0, m_1, ...`
    for the components of a vector `m`; `m[income], m[age]` for the slopes of named features,
    as the model's own `param_names`). `to_frame()` is indexed by those names. Fixed components
    are listed in `fixed`; their standard errors, statistics and covariance entries are NaN.

    Attributes:
        model_name: Class name of the model.
        convention: `"ols"` (t statistics, `s^2 = RSS / (n - p)`) or `"mle"` (z statistics).
        loglik: Maximised log-likelihood (for OLS: the Gaussian one, with `sigma^2 = RSS / n`);
            also `llf`.
        aic, bic: `-2 loglik + 2 k`, `-2 loglik + log(n) k` (`k`: see the module docstring).
        nobs: Number of observations (the sum of the weights).
        df_resid: `nobs - k`.
        sigma: Residual standard deviation under the convention (`None` for a model without
            one).
        converged: Whether the Newton step left is under `tol` standard errors.
        hessian_positive_definite: Whether the fit is at a strict local minimum.
        distance_to_optimum: Largest Newton step left, in (model-based) standard errors.
        warnings: The warnings raised, as text.
        n_likelihood_params: Free parameters of the likelihood (for OLS: the coefficients and
            sigma), whose differences are the degrees of freedom of `likelihood_ratio_test`.
        cov_type: `"nonrobust"`, `"HC0"`..`"HC3"` or `"cluster"` (see `keras_mle.covariance`).
        df_inference: Degrees of freedom of the t and F distributions: `df_resid`, or, for a
            cluster covariance under OLS conventions, the number of groups minus 1.
        n_groups: Number of clusters (`cov_type="cluster"`), else `None`.
        df_model: Estimated parameters other than intercepts and noise scales (statsmodels'
            `k - k_constant`).
        fixed: Names (in `param_names`) of the components held fixed by the model's `fixed`.
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
    cov_type: str = "nonrobust"
    df_inference: float | None = None
    n_groups: int | None = None
    df_model: float = math.nan
    fixed: tuple = ()
    _context: object = dataclasses.field(default=None, repr=False)

    # ------------------------------------------------------------ statsmodels names
    @property
    def bse(self) -> dict:
        """`stderr` under statsmodels' name."""
        return self.stderr

    @property
    def llf(self) -> float:
        """`loglik` under statsmodels' name."""
        return self.loglik

    def cov_params(self) -> np.ndarray:
        """A copy of `covariance`, ordered like `param_names`."""
        return self.covariance.copy()

    @property
    def distribution(self) -> str:
        """`"t"` (OLS) or `"normal"` (MLE): the reference distribution of `tvalues`."""
        return "t" if self.convention == "ols" else "normal"

    @property
    def _df(self) -> float:
        return self.df_resid if self.df_inference is None else self.df_inference

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
                distributions.t_sf(np.abs(t), self._df)
                if self.convention == "ols"
                else distributions.normal_sf(np.abs(t))
            )
            result[name] = _as_param(np.where(np.isnan(t), np.nan, 2.0 * tail))
        return result

    def critical_value(self, level: float = 0.95) -> float:
        """The `(1 + level) / 2` quantile of the t (OLS) or normal (MLE) distribution."""
        _check_level(level)
        q = 0.5 * (1.0 + level)
        if self.convention == "ols":
            return float(distributions.t_ppf(q, self._df))
        return float(distributions.normal_ppf(q))

    def conf_int(self, level: float = 0.95, method: str = "wald") -> dict:
        """Confidence intervals at `level`, by the Wald or the profile-likelihood method.

        - `"wald"`: `params -/+ q * stderr`, `q` from `critical_value(level)` (with the
          covariance of `cov_type`).
        - `"profile"`: `{t : 2 (llf_max - llf_profile(t)) <= chi2(1).ppf(level)}`, the other
          parameters re-optimised in float64 (`keras_mle.profile`); for least squares the
          log-likelihood is the Gaussian one with the noise variance at its MLE. Only with
          `cov_type="nonrobust"`: a profile likelihood assumes the model is right. A bound
          that cannot be found (the likelihood never falls that far) is NaN, with a warning.

        Returns:
            A dict keyed like `params`; each value has the parameter's shape plus a last axis
            `(lower, upper)`.
        """
        _check_level(level)
        if method == "wald":
            q = self.critical_value(level)
            return {
                name: np.stack([value - q * self.stderr[name], value + q * self.stderr[name]], -1)
                for name, value in self.params.items()
            }
        if method != "profile":
            raise ValueError(f"method must be 'wald' or 'profile', got {method!r}.")
        if self.cov_type != "nonrobust":
            raise ValueError(
                f"method='profile' uses the likelihood, which assumes the model is correctly "
                f"specified; it does not combine with cov_type={self.cov_type!r}. Use "
                "method='wald' for robust intervals."
            )
        if self._context is None:
            raise ValueError("this result has no data attached: profile intervals need them.")
        bounds = self._context.profile(level)
        flat = np.full((len(self.param_names), 2), np.nan)
        flat[: len(bounds)] = bounds
        estimated = ~np.isin(self.param_names[: len(bounds)], self.fixed)
        if np.any(np.isnan(flat[: len(bounds)][estimated])):
            message = (
                "Some profile-likelihood bounds were not found (NaN): the log-likelihood does "
                "not fall by chi2(1).ppf(level) / 2 on that side, or the optimisation failed."
            )
            warnings.warn(message, InferenceWarning, stacklevel=2)
        shapes = {name: np.shape(value) for name, value in self.params.items()}
        lower = _unflatten(flat[:, 0], shapes)
        upper = _unflatten(flat[:, 1], shapes)
        return {name: np.stack([lower[name], upper[name]], -1) for name in self.params}

    # ------------------------------------------------------------ tests
    def wald_test(self, R, q=None) -> WaldTestResult:
        """Wald test of the linear restrictions `R @ theta = q` (statsmodels' `wald_test`).

        ```python
        W = (R theta - q)^T (R cov R^T)^-1 (R theta - q)
        chi2 = W ~ chi2(r)              # MLE conventions (normal statistics)
        F = W / r ~ F(r, df_inference)  # OLS conventions (t statistics)
        ```

        `cov` is this result's covariance (of its `cov_type`).

        Args:
            R: `(r, p)` restriction matrix (or one row of length `p`) over `param_names`.
            q: Right-hand side, a number or `(r,)`. Defaults to `None` (zeros).

        Returns:
            A `WaldTestResult`.
        """
        p = len(self.param_names)
        matrix = _numeric("R", R, f"a ({p},) row or an (r, {p}) matrix of numbers")
        if matrix.ndim == 1:
            matrix = matrix[None, :]
        if matrix.ndim != 2 or matrix.shape[1] != p or matrix.shape[0] == 0:
            raise ValueError(
                f"R must have shape (r, {p}), one column per parameter in param_names "
                f"{self.param_names}, got shape {np.shape(R)}."
            )
        if not np.all(np.isfinite(matrix)):
            raise ValueError("R contains NaN or Inf.")
        r = matrix.shape[0]
        q = np.zeros(r) if q is None else _numeric("q", q, f"a number or ({r},) numbers")
        if q.ndim == 0:
            q = np.full(r, float(q))
        if q.shape != (r,) or not np.all(np.isfinite(q)):
            raise ValueError(f"q must be a finite number or have shape ({r},), got {q.shape}.")
        if np.linalg.matrix_rank(matrix) < r:
            raise ValueError(f"R has linearly dependent rows (rank < {r}): drop the redundant.")
        without = [
            name
            for name, column, variance in zip(
                self.param_names, matrix.T, np.diag(self.covariance), strict=True
            )
            if np.any(column != 0) and np.isnan(variance)
        ]
        if without:
            raise ValueError(
                f"R involves parameter(s) without a standard error (fixed, or not estimated): "
                f"{without}."
            )
        theta = _flatten_tree(self.params)
        diff = matrix @ theta - q
        statistic = float(diff @ np.linalg.solve(matrix @ self.covariance @ matrix.T, diff))
        if self.convention == "ols":
            value = statistic / r
            pvalue = float(distributions.f_sf(value, r, self._df))
            return WaldTestResult(value, r, float(self._df), pvalue, "F")
        return WaldTestResult(
            statistic, r, None, float(distributions.chi2_sf(statistic, r)), "chi2"
        )

    # ------------------------------------------------------------ Gaussian linear models
    @property
    def resid(self) -> np.ndarray:
        """Residuals `y - fitted` of a Gaussian linear model, shape `(n,)`."""
        return self._linear().residuals

    @property
    def fittedvalues(self) -> np.ndarray:
        """Fitted means of a Gaussian linear model, shape `(n,)`."""
        linear = self._linear()
        return linear.y - linear.residuals

    @property
    def rsquared(self) -> float:
        """`1 - RSS / TSS` (TSS about the weighted mean when the model has an intercept)."""
        return self._linear().rsquared

    @property
    def rsquared_adj(self) -> float:
        """`1 - (n - k_constant) / (n - k) * (1 - R^2)`, `k` the mean's coefficients."""
        linear = self._linear()
        k = int(np.sum(~np.isin(np.asarray(self.param_names)[linear.indices], self.fixed)))
        return 1.0 - (self.nobs - linear.k_constant) / (self.nobs - k) * (1.0 - linear.rsquared)

    def get_prediction(self, x_new) -> PredictionResult:
        """Predicted means of a Gaussian linear model at `x_new`, with their uncertainty.

        `se_mean^2 = d^T cov d` (`d = d mu / d theta` at `x_new`, `cov` the coefficients'
        covariance of this result's `cov_type`), `se_obs^2 = se_mean^2 + sigma^2` (`sigma` of
        the convention: `s` for OLS, the MLE for MLE), as statsmodels' `get_prediction`.
        """
        linear = self._linear()
        model = linear.model
        try:
            x_new, _, _ = model.check_data(
                x_new, np.zeros(len(np.asarray(x_new))), dtype=np.float64
            )
        except (TypeError, ValueError) as error:
            raise type(error)(f"x_new: {error}") from None
        residuals, design = covariance.least_squares_terms(
            model, x_new, np.zeros(len(x_new)), linear.theta
        )
        cov = self.covariance[np.ix_(linear.indices, linear.indices)]
        held = np.isin(np.asarray(self.param_names)[linear.indices], self.fixed)
        cov = np.where(held[:, None] | held[None, :], 0.0, cov)  # a fixed term adds no variance
        se_mean = np.sqrt(np.einsum("ij,jk,ik->i", design, cov, design))
        df = float(self._df) if self.convention == "ols" else None
        return PredictionResult(
            predicted_mean=-residuals,
            se_mean=se_mean,
            se_obs=np.sqrt(se_mean**2 + self.sigma**2),
            df=df,
        )

    def _linear(self):
        linear = None if self._context is None else self._context.linear()
        if linear is None:
            raise ValueError(
                f"{self.model_name} is not a Gaussian linear model (no least-squares model): "
                "resid, fittedvalues, rsquared and get_prediction are not defined for it."
            )
        return linear

    # ------------------------------------------------------------ output
    def to_frame(self, level: float = 0.95):
        """The coefficient table as a `pandas.DataFrame` indexed by `param_names`."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_frame() needs pandas: pip install pandas.") from None
        stat = "t" if self.convention == "ols" else "z"
        intervals = self.conf_int(level)
        lower, upper = 0.5 * (1 - level), 0.5 * (1 + level)
        columns = {
            "coef": _flatten_tree(self.params),
            "std err": _flatten_tree(self.stderr),
            stat: _flatten_tree(self.tvalues),
            f"P>|{stat}|": _flatten_tree(self.pvalues),
            f"[{lower:.3g}": _flatten_tree({k: v[..., 0] for k, v in intervals.items()}),
            f"{upper:.3g}]": _flatten_tree({k: v[..., 1] for k, v in intervals.items()}),
        }
        return pd.DataFrame(columns, index=list(self.param_names))

    def to_dict(self, level: float = 0.95) -> dict:
        """Plain Python values (JSON-serializable; NaN stays a float NaN)."""

        def plain(tree):
            return {name: np.asarray(value).tolist() for name, value in tree.items()}

        return {
            "model": self.model_name,
            "convention": self.convention,
            "cov_type": self.cov_type,
            "distribution": self.distribution,
            "params": plain(self.params),
            "stderr": plain(self.stderr),
            "tvalues": plain(self.tvalues),
            "pvalues": plain(self.pvalues),
            "conf_int": {"level": level, **plain(self.conf_int(level))},
            "covariance": self.covariance.tolist(),
            "param_names": list(self.param_names),
            "fixed": list(self.fixed),
            "loglik": self.loglik,
            "aic": self.aic,
            "bic": self.bic,
            "nobs": self.nobs,
            "df_resid": self.df_resid,
            "df_model": self.df_model,
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
class WaldTestResult:
    """`wald_test`: the statistic (F or chi-square), its degrees of freedom and p-value.

    Attributes:
        statistic: `F = W / r` (OLS conventions) or `W` (chi-square).
        df: Number of restrictions `r` (statsmodels' `df_num`).
        df_denom: Denominator degrees of freedom of F, or `None` for chi-square.
        pvalue: `P(F(r, df_denom) > F)` or `P(chi2(r) > W)`.
        distribution: `"F"` or `"chi2"`.
    """

    statistic: float
    df: int
    df_denom: float | None
    pvalue: float
    distribution: str

    def __str__(self) -> str:
        if self.distribution == "F":
            head = f"F({self.df}, {self.df_denom:g})"
            return f"Wald test: {head} = {self.statistic:.6g}, p = {self.pvalue:.4g}"
        return f"Wald test: chi2({self.df}) = {self.statistic:.6g}, p = {self.pvalue:.4g}"


@dataclasses.dataclass(frozen=True)
class PredictionResult:
    """`get_prediction`: predicted means and their standard errors (statsmodels' names).

    Attributes:
        predicted_mean: `mu(x_new)`, `(m,)`.
        se_mean: Standard error of the mean, `(m,)`.
        se_obs: Standard error of a new observation, `(m,)`.
        df: Degrees of freedom of the t quantiles, or `None` for normal ones.
    """

    predicted_mean: np.ndarray
    se_mean: np.ndarray
    se_obs: np.ndarray
    df: float | None

    def conf_int(self, alpha: float = 0.05, obs: bool = False) -> np.ndarray:
        """`(m, 2)` intervals for the mean (`obs=False`) or a new observation (`obs=True`)."""
        if isinstance(alpha, bool) or not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}.")
        q = 1.0 - 0.5 * alpha
        quantile = (
            distributions.normal_ppf(q) if self.df is None else distributions.t_ppf(q, self.df)
        )
        se = self.se_obs if obs else self.se_mean
        return np.stack(
            [self.predicted_mean - quantile * se, self.predicted_mean + quantile * se], 1
        )

    def summary_frame(self, alpha: float = 0.05):
        """A `pandas.DataFrame` with statsmodels' columns (`mean`, `mean_se`, `mean_ci_*`,
        `obs_ci_*`)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("summary_frame() needs pandas: pip install pandas.") from None
        mean, obs = self.conf_int(alpha), self.conf_int(alpha, obs=True)
        return pd.DataFrame(
            {
                "mean": self.predicted_mean,
                "mean_se": self.se_mean,
                "mean_ci_lower": mean[:, 0],
                "mean_ci_upper": mean[:, 1],
                "obs_ci_lower": obs[:, 0],
                "obs_ci_upper": obs[:, 1],
            }
        )


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
    cov_type: str = "nonrobust",
    groups=None,
) -> InferenceResult:
    """Standard errors, tests and information criteria of a fitted `keras_mle` model.

    Args:
        model: A fitted `keras_mle.MaximumLikelihoodModel` (adapted or not, any dtype).
        x: The data it was fitted on (for `GaussianMLE`: the samples); or a batched
            `tf.data.Dataset` of the elements `fit` reads (`(x, y)`, `(x, y, sample_weight)`;
            `samples` or `(samples, sample_weight)`), read batch by batch in float64 and
            never held whole (see `docs/inference.md`, "Data that do not fit in memory").
        y: Targets, or `None` for a model of a sample (and for a dataset). Defaults to `None`.
        sample_weight: Frequency weights, as given to `fit` (`None` for a dataset). Defaults to
            `None`.
        convention: `"ols"` (t statistics, `s^2 = RSS / (n - p)`), `"mle"` (z statistics,
            inverse observed information) or `"auto"`: `"ols"` for squared-error models
            (`sample_loss_kind == "squared_error"`), else `"mle"`. `"ols"` applies to
            squared-error models and to models whose `least_squares_model()` returns one
            (`GaussianRegression`); `"mle"` to NLL models. Defaults to `"auto"`.
        tol: Largest Newton step left at the fitted parameters, in standard errors, for the fit
            to count as converged. Defaults to `1e-3`.
        cov_type: `"nonrobust"` (the inverse observed information, or `s^2 (X'X)^-1` for OLS),
            the sandwich `"HC0"`, `"HC1"` (times `n / (n - k)`), `"HC2"`, `"HC3"` (leverage
            corrections; OLS conventions only), or `"cluster"` (one-way, with `groups`; times
            `G / (G - 1) * (n - 1) / (n - k)`). See `keras_mle.covariance`. Under OLS
            conventions the robust covariances cover the coefficients (sigma has none).
            Defaults to `"nonrobust"`.
        groups: One cluster label per row, for `cov_type="cluster"`. Defaults to `None`.

    Returns:
        An `InferenceResult`.

    Raises:
        TypeError: if `model` is not a `keras_mle.MaximumLikelihoodModel`.
        ValueError: for bad arguments or data, a convention or covariance type the model does
            not support, non-finite parameters, or a `sample_loss` that cannot run in float64.

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
    _check_cov_type(model, convention, cov_type, groups)
    fit_model = model if convention == "mle" else least_squares
    streamed = _is_dataset(x)
    checked = meat = None
    if streamed:
        _check_dataset_arguments(y, sample_weight, cov_type)
        if cov_type in ("HC0", "HC1"):
            meat = _StreamedMeat(fit_model, convention, cov_type)
    else:
        checked = fit_model.check_data(x, y, sample_weight, dtype=np.float64)
    if cov_type == "cluster":
        groups = covariance.check_groups(groups, len(checked[0]))
    if convention == "ols":
        fit = _ols_fit(model, least_squares, x, y, sample_weight, on_batch=meat)
    else:
        fit = _mle_fit(model, x, y, sample_weight, on_batch=meat)

    variances = np.diag(fit.covariance)[fit.free]
    model_stderr = np.where(variances >= 0, np.sqrt(np.abs(variances)), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        steps = np.abs(fit.newton_step) / model_stderr
        distance = float(np.max(steps)) if len(steps) else 0.0
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

    cov, n_groups = fit.covariance, None
    if cov_type != "nonrobust" and streamed:
        cov, n_groups = _streamed_robust(fit, fit_model, convention, x, cov_type, meat)
    elif cov_type != "nonrobust":
        cov, n_groups = _robust(fit, fit_model, convention, checked, cov_type, groups)
    variances = np.diag(cov)
    stderr_flat = np.where(variances >= 0, np.sqrt(np.abs(variances)), np.nan)
    params = _unflatten(fit.derivatives.params, fit.shapes)
    stderr = _unflatten(stderr_flat, fit.shapes)
    param_names = list(fit.derivatives.names)
    fixed_names = [
        name for name, held in zip(param_names, fit.derivatives.fixed, strict=True) if held
    ]
    if fit.unestimated:
        # Parameters outside the least-squares model (the noise scale, reported as s): no
        # standard error, and NaN rows and columns in the covariance.
        shapes = {name: np.shape(value) for name, value in fit.unestimated.items()}
        params.update(fit.unestimated)
        stderr.update(_unflatten(np.full(_size(shapes), np.nan), shapes))
        cov = np.pad(cov, (0, _size(shapes)), constant_values=np.nan)
        param_names += [label for name in shapes for label in model.component_names(name)]
    df_inference = fit.df_resid
    if n_groups is not None and convention == "ols":
        df_inference = float(n_groups - 1)
    return InferenceResult(
        model_name=type(model).__name__,
        convention=convention,
        params=params,
        stderr=stderr,
        covariance=cov,
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
        cov_type=cov_type,
        df_inference=df_inference,
        n_groups=n_groups,
        df_model=float(len(fit.free) - _n_constant(fit_model)),
        fixed=tuple(fixed_names),
        _context=(
            _StreamedContext() if streamed else _Context(model, fit_model, fit, convention, checked)
        ),
    )


# Attached to the function, so that `keras_mle.inference.refine(...)` works whether
# `keras_mle.inference` names this module or (at the package level) this function.
inference.refine = refine


def _check_cov_type(model, convention, cov_type, groups):
    if cov_type not in covariance.COV_TYPES:
        raise ValueError(f"cov_type must be one of {covariance.COV_TYPES}, got {cov_type!r}.")
    if groups is not None and cov_type != "cluster":
        raise ValueError(f"groups is only used with cov_type='cluster', not {cov_type!r}.")
    if cov_type in ("HC2", "HC3") and convention != "ols":
        name = type(model).__name__
        hint = (
            " Pass convention='ols': its least_squares_model() defines them."
            if model.least_squares_model() is not None
            else ""
        )
        raise ValueError(
            f"cov_type={cov_type!r} needs leverages (the hat matrix of a least-squares fit), "
            f"which {name} under MLE conventions does not define; use 'HC0' or 'HC1'.{hint}"
        )


def _robust(fit, fit_model, convention, checked, cov_type, groups):
    """The sandwich covariance (user units) of `fit`, over the parameters of `fit_model`."""
    x, y, w = checked
    w = np.ones(len(x)) if w is None else w
    theta, free = fit.derivatives.params, fit.free
    leverage = None
    if convention == "ols":
        residuals, design = covariance.least_squares_terms(fit_model, x, y, theta, columns=free)
        gradients = -2.0 * residuals[:, None] * design
        leverage = 2.0 * np.einsum("ij,jk,ik->i", design, fit.bread, design)
    else:
        gradients = covariance.per_sample_gradients(fit_model, x, y, theta, columns=free)
    cov, n_groups = covariance.robust_covariance(
        cov_type, fit.bread, gradients, w, leverage=leverage, groups=groups
    )
    return _embed(cov, free, len(theta)), n_groups


# ---------------------------------------------------------------------------- datasets
def _is_dataset(x):
    """Whether `x` is a `tf.data.Dataset`; other streams are refused with a `TypeError`."""
    if isinstance(x, tf.data.Dataset):
        return True
    if isinstance(x, tf.distribute.DistributedDataset):
        raise TypeError(
            "x: inference reads the batches on the host, each once, under any strategy: pass "
            "the tf.data.Dataset itself, not strategy.experimental_distribute_dataset(...)."
        )
    if isinstance(x, keras.utils.PyDataset) or hasattr(x, "__next__"):
        raise TypeError(
            f"x: inference takes arrays or a batched tf.data.Dataset, got "
            f"{type(x).__name__}; wrap a generator in tf.data.Dataset.from_generator(...)."
        )
    return False


def _check_dataset_arguments(y, sample_weight, cov_type):
    """Refuses what a dataset cannot be given with (targets and weights belong in it)."""
    for name, value in (("y", y), ("sample_weight", sample_weight)):
        if value is not None:
            raise ValueError(
                f"{name}: with a dataset, give it inside its elements ((x, y) or "
                "(x, y, sample_weight) batches; samples or (samples, sample_weight)), not as "
                f"{name}."
            )
    if cov_type == "cluster":
        raise ValueError(
            "cov_type='cluster' needs a group label per row (groups=), which a dataset's "
            "elements do not carry: give the data as arrays, or use cov_type='HC0'..'HC3', "
            "which are accumulated batch by batch."
        )


class _StreamedMeat:
    """The sandwich's middle, `sum_i w_i a_i g_i g_i^T`, added up batch by batch.

    `g_i` and `a_i` are those of `keras_mle.covariance` (`a_i = 1` for HC0/HC1; the leverage
    terms of HC2/HC3, which need `bread = H^-1` and so the Hessian of all the data first).
    """

    def __init__(self, fit_model, convention, cov_type, bread=None):
        self.fit_model, self.convention, self.cov_type = fit_model, convention, cov_type
        self.bread = bread
        self.matrix = None
        self.rows = 0

    def __call__(self, x, y, w, derivatives):
        self.add(x, y, w, derivatives.params, derivatives.free)

    def add(self, x, y, w, theta, free):
        if self.convention == "ols":
            residuals, design = covariance.least_squares_terms(
                self.fit_model, x, y, theta, columns=free
            )
            gradients = -2.0 * residuals[:, None] * design
        else:
            gradients = covariance.per_sample_gradients(self.fit_model, x, y, theta, columns=free)
        scale = w
        if self.cov_type in ("HC2", "HC3"):
            room = 1.0 - 2.0 * np.einsum("ij,jk,ik->i", design, self.bread, design)
            if np.any(room[w > 0] <= 1e-12):
                row = self.rows + int(np.argmin(np.where(w > 0, room, np.inf)))
                raise ValueError(
                    f"cov_type={self.cov_type!r}: row {row} of the dataset has leverage 1 (it "
                    "alone determines a coefficient), so its residual is 0 and HC2/HC3 are "
                    "undefined; use HC0 or HC1."
                )
            scale = w / (room if self.cov_type == "HC2" else room**2)
        contribution = (gradients * scale[:, None]).T @ gradients
        self.matrix = contribution if self.matrix is None else self.matrix + contribution
        self.rows += len(x)


def _streamed_robust(fit, fit_model, convention, dataset, cov_type, meat):
    """`_robust` for a dataset: the meat from the first pass (HC0, HC1) or a second (HC2, HC3)."""
    theta, free = fit.derivatives.params, fit.free
    nobs, k = fit.nobs, len(free)
    if not nobs > k:
        raise ValueError(
            f"cov_type={cov_type!r} needs more observations than parameters: n={nobs:g}, k={k}."
        )
    if meat is None:
        # The leverages need H^-1 of all the data: a second pass.
        meat = _StreamedMeat(fit_model, convention, cov_type, fit.bread)
        for x, y, w in fit_model.dataset_batches(dataset):
            if np.any(w > 0):
                meat.add(x, y, w, theta, free)
            else:
                meat.rows += len(x)
    factor = nobs / (nobs - k) if cov_type == "HC1" else 1.0
    cov = factor * fit.bread @ meat.matrix @ fit.bread
    return _embed(0.5 * (cov + cov.T), free, len(theta)), None


class _StreamedContext:
    """Behind a result computed from a dataset: what needs the rows refuses, saying why."""

    def profile(self, level):
        raise ValueError(
            "method='profile' re-optimises the other parameters at each trial value, dozens of "
            "likelihood evaluations on the data; this result was computed from a dataset, batch "
            "by batch, and keeps no rows. Use method='wald', or inference(model, x, y) on "
            "arrays for profile intervals."
        )

    def linear(self):
        raise ValueError(
            "resid, fittedvalues, rsquared, rsquared_adj and get_prediction are read off the "
            "rows and the least-squares pieces kept with them; this result was computed from a "
            "dataset, batch by batch, and keeps none. Use inference(model, x, y) on arrays."
        )


class _Context:
    """The data and models behind a result, for profile intervals and linear-model extras."""

    def __init__(self, model, fit_model, fit, convention, checked):
        self.model = model
        self.fit_model = fit_model
        self.fit = fit
        self.convention = convention
        self.x, self.y, weights = checked
        self.weights = np.ones(len(self.x)) if weights is None else weights
        self._profiles = {}
        self._linear = False

    def profile(self, level):
        """`(p_fit, 2)` profile bounds over the parameters of the fitted model (NaN if fixed)."""
        if level not in self._profiles:
            self._profiles[level] = self._profile(level)
        return self._profiles[level]

    def _profile(self, level):
        fit, model = self.fit, self.fit_model
        x, y, w = self.x, self.y, self.weights
        nobs = fit.nobs
        free, template = fit.free, fit.derivatives.params.copy()

        def evaluate(theta_free):
            # The fixed components stay at their values; the profile runs over the free ones.
            theta = template.copy()
            theta[free] = theta_free
            try:
                d = model.likelihood_derivatives(x, y, w, params=_unflatten(theta, fit.shapes))
            except ValueError:
                return None
            if not (math.isfinite(d.total) and np.all(np.isfinite(d.hessian))):
                return None
            return d.total, d.score[free], d.information[np.ix_(free, free)]

        if self.convention == "ols":

            def loglik(loss):
                return -0.5 * nobs * (math.log(2.0 * math.pi) + math.log(loss / nobs) + 1.0)

            def dloglik(loss):
                return -0.5 * nobs / loss

        else:

            def loglik(loss):
                return -loss

            def dloglik(loss):
                return -1.0

        covariance_matrix = fit.covariance[np.ix_(free, free)]
        problem = profile_lib.ProfileProblem(
            evaluate=evaluate,
            loglik=loglik,
            dloglik=dloglik,
            theta_hat=template[free],
            stderr=np.sqrt(np.abs(np.diag(covariance_matrix))),
            covariance=covariance_matrix,
        )
        bounds = np.full((len(template), 2), np.nan)
        if not fit.positive_definite:
            return bounds
        cutoff = float(distributions.chi2_ppf(level, 1))
        for j, index in enumerate(free):
            bounds[index] = profile_lib.profile_bounds(problem, j, cutoff)
        return bounds

    def linear(self):
        """The least-squares pieces of a Gaussian linear model, or `None` (cached)."""
        if self._linear is False:
            self._linear = self._linear_terms()
        return self._linear

    def _linear_terms(self):
        model = self.model
        least = model if model.sample_loss_kind == "squared_error" else model.least_squares_model()
        if least is None or least.sample_loss_kind != "squared_error" or self.y is None:
            return None
        names = least.param_names
        all_names = list(self.fit.derivatives.names)
        if not set(names) <= set(all_names):
            return None
        indices = [all_names.index(name) for name in names]
        theta = self.fit.derivatives.params[indices]
        y = np.reshape(self.y, -1)
        residuals, design = covariance.least_squares_terms(least, self.x, y, theta)
        w = self.weights
        k_constant = _n_constant(least)
        centre = (w @ y) / w.sum() if k_constant else 0.0
        rss, tss = w @ residuals**2, w @ (y - centre) ** 2
        return _Linear(least, indices, theta, y, residuals, design, 1.0 - rss / tss, k_constant)


@dataclasses.dataclass(frozen=True)
class _Linear:
    model: MaximumLikelihoodModel  # the least-squares model
    indices: list  # its parameters' positions in the result's param_names
    theta: np.ndarray
    y: np.ndarray
    residuals: np.ndarray
    design: np.ndarray
    rsquared: float
    k_constant: int


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
    `sigma` at its MLE, which counts as a parameter), and so are its convergence warnings: a
    restricted model with fixed components (`LinearRegression(fixed={"m": [0.0, None]})`) is
    converged at its constrained optimum, and its fixed components are not counted in `df`.

    Args:
        full: The larger fitted model.
        restricted: The fitted model with fewer free parameters.
        x: Features (or samples, when both models are models of a sample).
        y: Targets. Defaults to `None`.
        df: Degrees of freedom. Defaults to `None`: the difference in the number of free
            parameters (`n_likelihood_params`: fixed components do not count).
        x_restricted: Features of the restricted model, when they differ from `x` (e.g. a
            subset of its columns). Defaults to `None` (the same `x`).
        sample_weight: Frequency weights. Defaults to `None`.

    Returns:
        A `LikelihoodRatioResult`.
    """
    for name, model in (("full", full), ("restricted", restricted)):
        if not isinstance(model, MaximumLikelihoodModel):
            raise TypeError(f"{name} must be a fitted keras_mle model, got {type(model).__name__}.")
        if not model.built:
            raise ValueError(f"{name} is not built: fit it (or call it on a batch) first.")
    if isinstance(x, tf.data.Dataset) and full.takes_targets != restricted.takes_targets:
        # A model of a sample would read the regression's (x, y) elements as (samples, weights).
        raise ValueError(
            "x: a dataset serves both models as they read it; a regression and a model of a "
            "sample read its elements differently. Pass in-memory x and y, or compare two "
            "regressions (e.g. GaussianRegression with fixed={'m': 0.0})."
        )
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
    bread: np.ndarray  # H^-1 in user units over the free components
    free: np.ndarray  # indices of the free components in `derivatives`
    unestimated: dict = dataclasses.field(default_factory=dict)  # reported without stderr


def _mle_fit(model, x, y, sample_weight, on_batch=None) -> _Fit:
    """MLE conventions: `cov = J H^-1 J^T`, `H` the Hessian of the total NLL."""
    derivatives = _derivatives(model, x, y, sample_weight, on_batch)
    free = derivatives.free
    h_inverse, positive_definite, note = _inverse_hessian(derivatives.hessian[np.ix_(free, free)])
    jacobian = derivatives.jacobian[np.ix_(free, free)]
    p = len(free)
    nobs = derivatives.nobs
    shapes = _shapes(model)
    scale = _scale_name(model)
    sigma = None
    if scale is not None and math.prod(shapes[scale]) == 1:
        sigma = float(np.ravel(_unflatten(derivatives.params, shapes)[scale])[0])
    return _Fit(
        derivatives=derivatives,
        shapes=shapes,
        covariance=_embed(jacobian @ h_inverse @ jacobian.T, free, len(derivatives.params)),
        newton_step=jacobian @ (h_inverse @ derivatives.gradient[free]),
        positive_definite=positive_definite,
        hessian_note=note,
        nobs=nobs,
        df_resid=nobs - p,
        loglik=-derivatives.total,
        sigma=sigma,
        k_criteria=p,
        k_likelihood=p,
        bread=jacobian @ h_inverse @ jacobian.T,
        free=free,
    )


def _ols_fit(model, least_squares, x, y, sample_weight, on_batch=None) -> _Fit:
    """OLS conventions: `cov = 2 s^2 J H^-1 J^T`, `H` the Hessian of the RSS (`= 2 X'X`)."""
    if least_squares is model:
        derivatives = _derivatives(model, x, y, sample_weight, on_batch)
    else:
        try:
            derivatives = _derivatives(least_squares, x, y, sample_weight, on_batch)
        except ValueError as error:
            raise ValueError(
                f"{type(model).__name__} (convention='ols', through its least-squares model): "
                f"{error}"
            ) from None
    free = derivatives.free
    h_inverse, positive_definite, note = _inverse_hessian(derivatives.hessian[np.ix_(free, free)])
    jacobian = derivatives.jacobian[np.ix_(free, free)]
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
        covariance=_embed(
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
        bread=jacobian @ h_inverse @ jacobian.T,
        free=free,
        unestimated=unestimated,
    )


def _derivatives(model, x, y, sample_weight, on_batch=None):
    """`likelihood_derivatives` of the arrays, or `accumulate_derivatives` of a dataset."""
    if _is_dataset(x):
        return model.accumulate_derivatives(x, on_batch=on_batch)
    return model.likelihood_derivatives(x, y, sample_weight)


def _inverse_hessian(hessian):
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
    scale = _scale_name(model)
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


def _scale_name(model):
    """The parameter with the role `"scale"` in `parameter_roles` (the noise SD), or `None`."""
    roles = model.parameter_roles or {}
    return next((name for name in model.parameter_names if roles.get(name) == "scale"), None)


_CONSTANT_ROLES = ("intercept", "scale", "log_scale_intercept", "shape")


def _n_constant(model):
    """Free components of the constant terms and the noise's shape (not counted by `df_model`).

    As statsmodels counts `df_model`: the regressors' slopes, not the intercepts, the scale, the
    log-scale's intercept or a shape parameter such as the t's degrees of freedom.
    """
    roles = model.parameter_roles or {}
    free = _free_counts(model)
    return sum(
        free[name] for name, role in roles.items() if role in _CONSTANT_ROLES and name in free
    )


def _free_counts(model):
    """`{name: number of free components}` of the model's parameters."""
    mask, counts, start = model.fixed_mask, {}, 0
    for name, shape in _shapes(model).items():
        size = math.prod(shape)
        counts[name] = size - int(np.sum(mask[start : start + size]))
        start += size
    return counts


def _embed(matrix, free, p):
    """A `(p, p)` matrix holding `matrix` over the free components, NaN elsewhere."""
    full = np.full((p, p), np.nan)
    full[np.ix_(free, free)] = matrix
    return full


def _check_level(level):
    if isinstance(level, bool) or not (isinstance(level, (int, float)) and 0.0 < level < 1.0):
        raise ValueError(f"level must be in (0, 1), got {level!r}.")


def _flatten_tree(tree):
    return np.concatenate([np.reshape(np.asarray(v, np.float64), -1) for v in tree.values()])


def _shapes(model):
    return {name: np.shape(value) for name, value in model.params.items()}


def _numeric(name, value, expected) -> np.ndarray:
    """`value` as a float64 array; a `TypeError` naming `name` if it is not numeric."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        array = np.asarray(None)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be {expected}, got {value!r}.")
    return array.astype(np.float64)


def _data_for(model, x, y):
    if model.takes_targets:
        return x, y
    return (x,) if y is None else (y,)


def _as_param(value):
    value = np.asarray(value, np.float64)
    return np.float64(value) if value.ndim == 0 else value


def _size(shapes):
    return sum(math.prod(shape) for shape in shapes.values())


def _unflatten(flat, shapes):
    result, start = {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        result[name] = _as_param(np.reshape(flat[start : start + size], shape))
        start += size
    return result
