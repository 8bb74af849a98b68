"""`InferenceResult`: a fit's estimates and covariance, and every number derived from them.

As statsmodels' `LikelihoodModelResults`, the result holds what `inference` computed (`params`,
`covariance`, the log-likelihood and the counts of parameters and observations) and derives the
rest on demand from them:

```python
stderr = sqrt(diag(covariance))              # statsmodels' bse
tvalues = params / stderr                    # t (OLS) or z (MLE) statistics
pvalues = 2 * P(T > |tvalues|)               # T ~ t(df_inference) or N(0, 1)
conf_int = params -/+ q * stderr             # q the (1 + level) / 2 quantile of T
```

What needs the rows (profile-likelihood intervals, residuals, R-squared, predictions) reads the
result's public `model`, `likelihood_model` and `data`, through `keras_mle.profile` and
`keras_mle.prediction`; tests go through `keras_mle.hypothesis_tests`, the table through
`keras_mle.summary`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings

import numpy as np

from keras_mle import distributions, hypothesis_tests, parameters, prediction, summary
from keras_mle import profile as profile_lib
from keras_mle.errors import InferenceWarning

__all__ = ["InferenceResult"]

NO_ROWS = (
    "this result was computed from a dataset, batch by batch, and keeps no rows (data is None)"
)


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
    `stderr`, `tvalues`, `pvalues` and the intervals are computed from `params` and
    `covariance` when asked for.

    Attributes:
        model_name: Class name of the model.
        convention: `"ols"` (t statistics, `s^2 = RSS / (n - p)`) or `"mle"` (z statistics).
        params: The estimates.
        covariance: Their covariance, NaN for components without a standard error.
        param_names: The names of the flattened components.
        loglik: Maximised log-likelihood (for OLS: the Gaussian one, with `sigma^2 = RSS / n`);
            also `llf`.
        aic, bic: `-2 loglik + 2 k`, `-2 loglik + log(n) k` (`k`: see `keras_mle.inference`).
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
        model: The model given to `inference`, or `None`.
        likelihood_model: The model whose loss the covariance is of: `model`, or under OLS
            conventions its `least_squares_model()`; `None` with `model`.
        data: The float64 `(x, y, weights)` the result was computed from, as the model
            checked them (weights of 1 filled in); `None` for a dataset, read batch by batch.
    """

    model_name: str
    convention: str
    params: dict
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
    model: object = dataclasses.field(default=None, repr=False)
    likelihood_model: object = dataclasses.field(default=None, repr=False)
    data: tuple | None = dataclasses.field(default=None, repr=False)
    # Profile bounds by level: each costs dozens of likelihood evaluations on the data.
    _profiles: dict = dataclasses.field(default_factory=dict, init=False, repr=False)

    # ------------------------------------------------------------ derived numbers
    @functools.cached_property
    def stderr(self) -> dict:
        """`sqrt(diag(covariance))`, keyed like `params` (NaN where the variance is NaN).

        Computed once, on first use, as statsmodels' `bse` (`cache_readonly`).
        """
        variances = np.diag(self.covariance)
        flat = np.where(variances >= 0, np.sqrt(np.abs(variances)), np.nan)
        return parameters.unflatten(flat, self._shapes)

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
    def tvalues(self) -> dict:
        """`params / stderr`: t statistics (OLS) or z statistics (MLE)."""
        stderr = self.stderr
        return {
            name: parameters.as_value(value / stderr[name]) for name, value in self.params.items()
        }

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
            result[name] = parameters.as_value(np.where(np.isnan(t), np.nan, 2.0 * tail))
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
            stderr = self.stderr
            return {
                name: np.stack([value - q * stderr[name], value + q * stderr[name]], -1)
                for name, value in self.params.items()
            }
        if method != "profile":
            raise ValueError(f"method must be 'wald' or 'profile', got {method!r}.")
        table = self._profile_table(level)
        if np.any(np.isnan(table.bounds[table.searched])):
            message = (
                "Some profile-likelihood bounds were not found (NaN): the log-likelihood does "
                "not fall by chi2(1).ppf(level) / 2 on that side, or the optimisation failed."
            )
            warnings.warn(message, InferenceWarning, stacklevel=2)
        lower = parameters.unflatten(table.bounds[:, 0], self._shapes)
        upper = parameters.unflatten(table.bounds[:, 1], self._shapes)
        return {name: np.stack([lower[name], upper[name]], -1) for name in self.params}

    def _profile_table(self, level):
        if self.cov_type != "nonrobust":
            raise ValueError(
                f"method='profile' uses the likelihood, which assumes the model is correctly "
                f"specified; it does not combine with cov_type={self.cov_type!r}. Use "
                "method='wald' for robust intervals."
            )
        if self.data is None or self.likelihood_model is None:
            raise ValueError(
                "method='profile' re-optimises the other parameters at each trial value, dozens "
                f"of likelihood evaluations on the data; {NO_ROWS}. Use method='wald', or "
                "inference(model, x, y) on arrays for profile intervals."
            )
        if level not in self._profiles:
            self._profiles[level] = profile_lib.profile_table(self, level)
        return self._profiles[level]

    # ------------------------------------------------------------ tests
    def wald_test(self, R, q=None) -> hypothesis_tests.WaldTestResult:
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
        return hypothesis_tests.wald_test(
            parameters.flatten(self.params),
            self.covariance,
            self.param_names,
            R,
            q,
            df_denom=self._df if self.convention == "ols" else None,
        )

    # ------------------------------------------------------------ Gaussian linear models
    @property
    def resid(self) -> np.ndarray:
        """Residuals `y - fitted` of a Gaussian linear model, shape `(n,)`."""
        return self._linear.residuals

    @property
    def fittedvalues(self) -> np.ndarray:
        """Fitted means of a Gaussian linear model, shape `(n,)`."""
        linear = self._linear
        return linear.y - linear.residuals

    @property
    def rsquared(self) -> float:
        """`1 - RSS / TSS` (TSS about the weighted mean when the model has an intercept)."""
        return self._linear.rsquared

    @property
    def rsquared_adj(self) -> float:
        """`1 - (n - k_constant) / (n - k) * (1 - R^2)`, `k` the mean's free coefficients."""
        linear = self._linear
        k = int(np.sum(~linear.fixed))
        return 1.0 - (self.nobs - linear.k_constant) / (self.nobs - k) * (1.0 - linear.rsquared)

    def get_prediction(self, x_new) -> prediction.PredictionResult:
        """Predicted means of a Gaussian linear model at `x_new`, with their uncertainty.

        `se_mean^2 = d^T cov d` (`d = d mu / d theta` at `x_new`, `cov` the coefficients'
        covariance of this result's `cov_type`), `se_obs^2 = se_mean^2 + sigma^2` (`sigma` of
        the convention: `s` for OLS, the MLE for MLE), as statsmodels' `get_prediction`.
        """
        df = float(self._df) if self.convention == "ols" else None
        return prediction.predict(self._linear, x_new, self.covariance, self.sigma, df)

    @functools.cached_property
    def _linear_terms(self):
        return prediction.linear_terms(self.model, self.params, self.data)

    @property
    def _linear(self) -> prediction.LinearTerms:
        if self.data is None or self.model is None:
            raise ValueError(
                "resid, fittedvalues, rsquared, rsquared_adj and get_prediction are read off "
                f"the rows; {NO_ROWS}. Use inference(model, x, y) on arrays."
            )
        if self._linear_terms is None:
            raise ValueError(
                f"{self.model_name} is not a Gaussian linear model (no least-squares model): "
                "resid, fittedvalues, rsquared and get_prediction are not defined for it."
            )
        return self._linear_terms

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
        flatten = parameters.flatten
        columns = {
            "coef": flatten(self.params),
            "std err": flatten(self.stderr),
            stat: flatten(self.tvalues),
            f"P>|{stat}|": flatten(self.pvalues),
            f"[{lower:.3g}": flatten({k: v[..., 0] for k, v in intervals.items()}),
            f"{upper:.3g}]": flatten({k: v[..., 1] for k, v in intervals.items()}),
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
        return summary.summary_table(self, level)

    def __str__(self) -> str:
        return self.summary()

    # ------------------------------------------------------------ helpers
    @property
    def _shapes(self) -> dict:
        return {name: np.shape(value) for name, value in self.params.items()}

    @property
    def _df(self) -> float:
        return self.df_resid if self.df_inference is None else self.df_inference


def _check_level(level):
    if isinstance(level, bool) or not (isinstance(level, (int, float)) and 0.0 < level < 1.0):
        raise ValueError(f"level must be in (0, 1), got {level!r}.")
