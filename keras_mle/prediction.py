"""Predictions of a Gaussian linear model and the numbers read off its rows.

A model is a Gaussian linear model here when it is a least-squares model or its
`least_squares_model()` returns one (`LinearRegression`, `GaussianRegression`). Its residuals
`e_i = y_i - mu_i` and design `d_i = d mu_i / d theta` come from `keras_mle.covariance`'s
`least_squares_terms` (exact, by automatic differentiation), and

```python
rsquared = 1 - RSS / TSS                     # TSS about the weighted mean with an intercept
se_mean^2 = d^T cov d                        # at x_new, cov the coefficients' covariance
se_obs^2 = se_mean^2 + sigma^2               # a new observation
```

as statsmodels' `RegressionResults` and `get_prediction`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from keras_mle import covariance, distributions, parameters
from keras_mle.conventions import n_constant

__all__ = ["LinearTerms", "PredictionResult", "linear_terms", "predict"]


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
class LinearTerms:
    """The least-squares pieces of a Gaussian linear model on a result's rows.

    Attributes:
        model: The least-squares model (the model itself, or its `least_squares_model()`).
        indices: Its components' positions in the result's flattened parameters.
        theta: Its parameters there, flattened.
        fixed: Mask of its fixed components (its `fixed_mask`).
        y: The targets, `(n,)`.
        residuals: `y - mu`, `(n,)`.
        rsquared: `1 - RSS / TSS`.
        k_constant: Its free constant components (the intercept), as statsmodels counts them.
    """

    model: object
    indices: np.ndarray
    theta: np.ndarray
    fixed: np.ndarray
    y: np.ndarray
    residuals: np.ndarray
    rsquared: float
    k_constant: int


def linear_terms(model, params: dict, data) -> LinearTerms | None:
    """The `LinearTerms` of `model` at `params` on `data`, or `None` if it is not linear.

    Args:
        model: The model a result is of.
        params: The result's estimates, a dict keyed like `model.params`.
        data: The float64 `(x, y, weights)` the result was computed from.
    """
    x, y, weights = data
    least = model if model.sample_loss_kind == "squared_error" else model.least_squares_model()
    if least is None or least.sample_loss_kind != "squared_error" or y is None:
        return None
    starts, start = {}, 0
    for name, value in params.items():
        starts[name], start = start, start + np.size(value)
    own = least.params
    if any(name not in params or np.shape(params[name]) != np.shape(v) for name, v in own.items()):
        return None
    indices = np.concatenate([starts[name] + np.arange(np.size(v)) for name, v in own.items()])
    theta = parameters.flatten(params)[indices]
    y = np.reshape(y, -1)
    residuals, _ = covariance.least_squares_terms(least, x, y, theta, columns=[])
    k_constant = n_constant(least)
    centre = (weights @ y) / weights.sum() if k_constant else 0.0
    rss, tss = weights @ residuals**2, weights @ (y - centre) ** 2
    return LinearTerms(
        least, indices, theta, least.fixed_mask, y, residuals, 1.0 - rss / tss, k_constant
    )


def predict(linear: LinearTerms, x_new, cov: np.ndarray, sigma: float, df) -> PredictionResult:
    """Predicted means at `x_new`, with their standard errors (the module docstring).

    Args:
        linear: The result's `LinearTerms`.
        x_new: New features; errors name `x_new`.
        cov: The result's covariance over its flattened parameters (of its `cov_type`).
        sigma: The noise SD of the result's convention.
        df: Degrees of freedom of the t quantiles, or `None` for normal ones.
    """
    model = linear.model
    try:
        x_new, _, _ = model.check_data(x_new, np.zeros(len(np.asarray(x_new))), dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise type(error)(f"x_new: {error}") from None
    residuals, design = covariance.least_squares_terms(
        model, x_new, np.zeros(len(x_new)), linear.theta
    )
    cov = cov[np.ix_(linear.indices, linear.indices)]
    held = linear.fixed
    cov = np.where(held[:, None] | held[None, :], 0.0, cov)  # a fixed term adds no variance
    se_mean = np.sqrt(np.einsum("ij,jk,ik->i", design, cov, design))
    return PredictionResult(
        predicted_mean=-residuals,
        se_mean=se_mean,
        se_obs=np.sqrt(se_mean**2 + sigma**2),
        df=df,
    )
