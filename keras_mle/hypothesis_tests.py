"""Wald and likelihood-ratio tests: their statistics, p-values and result objects.

```python
W = (R theta - q)^T (R cov R^T)^-1 (R theta - q)   # Wald: chi2(r), or F = W / r ~ F(r, df)
LR = 2 * (loglik_full - loglik_restricted)          # likelihood ratio: chi2(df) under H0
```

`InferenceResult.wald_test` and `keras_mle.inference.likelihood_ratio_test` call these with the
numbers of their fits; the reference distributions are those of `keras_mle.distributions`.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from keras_mle import distributions
from keras_mle.errors import InferenceWarning

__all__ = ["LikelihoodRatioResult", "WaldTestResult", "likelihood_ratio", "wald_test"]


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


def wald_test(
    theta: np.ndarray,
    covariance: np.ndarray,
    param_names,
    R,
    q=None,
    *,
    df_denom: float | None = None,
) -> WaldTestResult:
    """Wald test of the linear restrictions `R @ theta = q` (statsmodels' `wald_test`).

    Args:
        theta: The estimates, flattened like `param_names`.
        covariance: Their `(p, p)` covariance; a NaN variance marks a component without a
            standard error, which `R` may not involve.
        param_names: The components' names, for the errors.
        R: `(r, p)` restriction matrix (or one row of length `p`).
        q: Right-hand side, a number or `(r,)`. Defaults to `None` (zeros).
        df_denom: The denominator degrees of freedom of an F test (OLS conventions); `None`
            for the chi-square test. Defaults to `None`.

    Returns:
        A `WaldTestResult`: `F = W / r ~ F(r, df_denom)`, or `W ~ chi2(r)`.
    """
    matrix = _restrictions(R, list(param_names))
    r = matrix.shape[0]
    q = np.zeros(r) if q is None else _numeric("q", q, f"a number or ({r},) numbers")
    if q.ndim == 0:
        q = np.full(r, float(q))
    if q.shape != (r,) or not np.all(np.isfinite(q)):
        raise ValueError(f"q must be a finite number or have shape ({r},), got {q.shape}.")
    without = [
        name
        for name, column, variance in zip(param_names, matrix.T, np.diag(covariance), strict=True)
        if np.any(column != 0) and np.isnan(variance)
    ]
    if without:
        raise ValueError(
            f"R involves parameter(s) without a standard error (fixed, or not estimated): "
            f"{without}."
        )
    diff = matrix @ theta - q
    statistic = float(diff @ np.linalg.solve(matrix @ covariance @ matrix.T, diff))
    if df_denom is not None:
        value = statistic / r
        pvalue = float(distributions.f_sf(value, r, df_denom))
        return WaldTestResult(value, r, float(df_denom), pvalue, "F")
    return WaldTestResult(statistic, r, None, float(distributions.chi2_sf(statistic, r)), "chi2")


def likelihood_ratio(full, restricted, df=None) -> LikelihoodRatioResult:
    """The likelihood-ratio test between two `InferenceResult`s of nested models.

    Args:
        full: The larger model's result.
        restricted: The restricted model's result, on the same rows.
        df: Degrees of freedom. Defaults to `None`: the difference in `n_likelihood_params`.

    Returns:
        A `LikelihoodRatioResult`, whose `warnings` hold both fits' and its own. It warns
        (`InferenceWarning`) when the restricted model fits better.
    """
    if full.nobs != restricted.nobs:
        raise ValueError("full and restricted were evaluated on different numbers of rows.")
    if df is None:
        df = full.n_likelihood_params - restricted.n_likelihood_params
        if df < 1:
            raise ValueError(
                f"full has {full.n_likelihood_params} free parameters and restricted "
                f"{restricted.n_likelihood_params}: not nested that way round; pass df."
            )
    elif isinstance(df, bool) or not isinstance(df, (int, np.integer)) or df < 1:
        raise ValueError(f"df must be a positive integer, got {df!r}.")
    statistic = 2.0 * (full.loglik - restricted.loglik)
    messages = [*full.warnings, *restricted.warnings]
    if statistic < -1e-8 * max(1.0, abs(full.loglik)):
        message = (
            f"The restricted model fits better (statistic {statistic:.4g} < 0): the models are "
            "not nested, or the full model has not converged."
        )
        # stacklevel 3: the caller of `likelihood_ratio_test`, which calls this.
        warnings.warn(message, InferenceWarning, stacklevel=3)
        messages.append(message)
    return LikelihoodRatioResult(
        statistic=statistic,
        df=int(df),
        pvalue=float(distributions.chi2_sf(max(statistic, 0.0), df)),
        loglik_full=full.loglik,
        loglik_restricted=restricted.loglik,
        warnings=tuple(messages),
    )


def _restrictions(R, param_names):
    """`R` as a float64 `(r, p)` matrix of full row rank; errors name `R`."""
    p = len(param_names)
    matrix = _numeric("R", R, f"a ({p},) row or an (r, {p}) matrix of numbers")
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2 or matrix.shape[1] != p or matrix.shape[0] == 0:
        raise ValueError(
            f"R must have shape (r, {p}), one column per parameter in param_names "
            f"{param_names}, got shape {np.shape(R)}."
        )
    if not np.all(np.isfinite(matrix)):
        raise ValueError("R contains NaN or Inf.")
    r = matrix.shape[0]
    if np.linalg.matrix_rank(matrix) < r:
        raise ValueError(f"R has linearly dependent rows (rank < {r}): drop the redundant.")
    return matrix


def _numeric(name, value, expected) -> np.ndarray:
    """`value` as a float64 array; a `TypeError` naming `name` if it is not numeric."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        array = np.asarray(None)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be {expected}, got {value!r}.")
    return array.astype(np.float64)
