"""Standard errors, intervals, information criteria and likelihood-ratio tests for fitted models.

`inference(model, x, y)` turns a model trained by `fit()` (or `keras_mle.loops`) into the numbers
statsmodels reports: estimates, standard errors from the observed Fisher information,
t or z statistics, p-values, confidence intervals, the log-likelihood, AIC and BIC.

Mathematical details:

```python
H = d^2 L / d theta^2                 # L: the total NLL (or sum of squared errors), at the fit
cov_working = H^-1                    # MLE conventions (NLL models)
cov_working = 2 * s^2 * H^-1          # OLS conventions: s^2 = RSS / (n - p), since H = 2 X'X
cov = J @ cov_working @ J.T           # J = d theta_user / d theta: the delta method
```

`H` is computed with nested `tf.GradientTape`s in float64, from the data cast to float64 (whatever
the model's dtype), in the *natural* parameters that `sample_loss` takes (`sigma`, not the
`log(sigma)` the variable stores). For an adapted model (`model.adapt`) the Hessian is taken in the
well-conditioned working space and mapped to the user's units through the Jacobian `J` of that
affine map, which is exact. Without `adapt`, `J = I`.

Two conventions, because the two kinds of model answer different questions:

- **OLS** (`LinearRegression`, which minimises squared error and has no noise parameter, and
  `GaussianRegression` on request): `s^2 = RSS / (n - p)` is the unbiased noise variance, the
  statistics follow Student's t with `n - p` degrees of freedom, `AIC = -2 loglik + 2 p` with
  `p` coefficients; as `statsmodels.OLS`, whose numbers these are.
- **MLE** (NLL models: `GaussianMLE`, `GaussianRegression`, user subclasses): the inverse observed
  information, normal (z) statistics, `AIC = -2 loglik + 2 k` with `k` all parameters, noise
  included; as `statsmodels.GenericLikelihoodModel`. The MLE of sigma divides by `n`, so its
  standard errors are smaller than the OLS ones by `sqrt((n - p) / n)`: both are right, for their
  estimator.

The result is not silently wrong: the Newton step `H^-1 g` left at the fitted parameters, measured
in standard errors, says how far the fit is from the optimum; when it exceeds `tol`, or `H` is not
positive definite, `inference` warns (`InferenceWarning`), sets `converged` /
`hessian_positive_definite` to `False`, and (for a non-positive-definite `H`) reports NaN standard
errors rather than confident numbers.

Distribution functions use TensorFlow's `betainc`/`igammac` and Python's `statistics.NormalDist`;
SciPy is not needed.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import textwrap
import warnings

import numpy as np
import tensorflow as tf

from keras_mle import data as data_lib
from keras_mle.models.base import MaximumLikelihoodModel

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


# ---------------------------------------------------------------------------- distributions
def _normal_sf(z):
    """`P(Z > z)` for a standard normal `Z`."""
    return np.vectorize(lambda v: 0.5 * math.erfc(v / math.sqrt(2.0)), otypes=[float])(z)


def _normal_ppf(q: float) -> float:
    return statistics.NormalDist().inv_cdf(q)


def _t_sf(t, df: float):
    """`P(T > t)` for Student's t with `df` degrees of freedom (any sign of `t`)."""
    t = np.asarray(t, np.float64)
    if df > 1e7:  # betainc loses accuracy there; the normal is then within ~1e-7
        return _normal_sf(t)
    tail = (
        0.5
        * tf.math.betainc(
            tf.constant(np.full(t.shape, df / 2.0)),
            tf.constant(np.full(t.shape, 0.5)),
            tf.constant(df / (df + t**2)),
        ).numpy()
    )
    return np.where(t >= 0, tail, 1.0 - tail)


def _t_ppf(q: float, df: float) -> float:
    """The `q` quantile of Student's t, `0.5 <= q < 1`, by bisection on `_t_sf` (monotone)."""
    if q == 0.5:
        return 0.0
    target = 1.0 - q
    lo, hi = 0.0, max(1.0, 2.0 * _normal_ppf(q))
    while _t_sf(hi, df) > target:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if _t_sf(mid, df) > target else (lo, mid)
    return 0.5 * (lo + hi)


def _chi2_sf(x: float, df: float) -> float:
    """`P(X > x)` for a chi-square variable with `df` degrees of freedom."""
    half_df, half_x = (tf.constant(v / 2.0, tf.float64) for v in (df, x))
    return float(tf.math.igammac(half_df, half_x))


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
        warnings: The warnings issued, as text.
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
                _t_sf(np.abs(t), self.df_resid)
                if self.convention == "ols"
                else _normal_sf(np.abs(t))
            )
            result[name] = _as_param(np.where(np.isnan(t), np.nan, 2.0 * tail))
        return result

    def critical_value(self, level: float = 0.95) -> float:
        """The `(1 + level) / 2` quantile of the t (OLS) or normal (MLE) distribution."""
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level!r}.")
        q = 0.5 * (1.0 + level)
        return _t_ppf(q, self.df_resid) if self.convention == "ols" else _normal_ppf(q)

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
        width = 78
        stat = "t" if self.convention == "ols" else "z"
        dist = f"OLS (t, df={self.df_resid:g})" if self.convention == "ols" else "MLE (normal z)"
        status = "yes" if self.converged else "NO"
        if math.isfinite(self.distance_to_optimum):
            status += f" ({self.distance_to_optimum:.1e} se)"
        left = [
            ("Convention:", dist),
            ("No. observations:", f"{self.nobs:g}"),
            ("Df residuals:", f"{self.df_resid:g}"),
            ("Residual SD:", "-" if self.sigma is None else f"{self.sigma:#.6g}"),
        ]
        right = [
            ("Log-likelihood:", f"{self.loglik:#.6g}"),
            ("AIC:", f"{self.aic:#.6g}"),
            ("BIC:", f"{self.bic:#.6g}"),
            ("Converged:", status),
        ]
        lower, upper = (0.5 * (1 - level), 0.5 * (1 + level))
        lines = [
            "=" * width,
            f"keras_mle inference: {self.model_name}".center(width),
            "=" * width,
        ]
        for (lk, lv), (rk, rv) in zip(left, right, strict=True):
            lines.append(f"{lk:<18}{lv:>20}   {rk:<17}{rv:>20}")
        header = (
            f"{'':<10}{'coef':>13}{'std err':>13}{stat:>10}{f'P>|{stat}|':>8}"
            f"{f'[{lower:.3g}':>12}{f'{upper:.3g}]':>12}"
        )
        lines += ["=" * width, header, "-" * width]
        flat = _flatten(self.params)
        columns = [
            _flatten(tree)
            for tree in (self.stderr, self.tvalues, self.pvalues, *self._conf_bounds(level))
        ]
        for i, name in enumerate(self.param_names):
            se, t, p, lo, hi = (column[i] for column in columns)
            lines.append(
                f"{name:<10}{_fmt(flat[i]):>13}{_fmt(se):>13}{_fmt_stat(t):>10}"
                f"{_fmt_p(p):>8}{_fmt(lo, 5):>12}{_fmt(hi, 5):>12}"
            )
        lines.append("=" * width)
        notes = [
            "Standard errors from the observed information (float64 Hessian of the total "
            + ("sum of squared errors; s^2 = RSS / (n - p))." if stat == "t" else "NLL).")
        ]
        notes += self.warnings
        lines.append("Notes:")
        for i, note in enumerate(notes, 1):
            lines += textwrap.wrap(f"[{i}] {note}", width, subsequent_indent="    ")
        return "\n".join(lines)

    def _conf_bounds(self, level):
        intervals = self.conf_int(level)
        return (
            {name: value[..., 0] for name, value in intervals.items()},
            {name: value[..., 1] for name, value in intervals.items()},
        )

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
        convention: `"ols"` (t statistics, `s^2 = RSS / (n - p)`; `LinearRegression`, and
            `GaussianRegression` on request), `"mle"` (z statistics, inverse observed
            information; NLL models) or `"auto"`: `"ols"` for squared-error models, else
            `"mle"`. Defaults to `"auto"`.
        tol: Largest Newton step left at the fitted parameters, in standard errors, for the fit
            to count as converged. Defaults to `1e-3`.

    Returns:
        An `InferenceResult`.

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
    convention = _resolve_convention(model, convention)
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"tol must be a number > 0, got {tol!r}.")
    model.check_data(x, y, sample_weight)
    x64, y64 = data_lib.check_xy(x, y, dtype=np.float64, x_name=model.x_name)
    w = data_lib.check_sample_weight(sample_weight, len(x64), dtype=np.float64)
    w = tf.constant(np.ones(len(x64)) if w is None else w)
    nobs = float(tf.reduce_sum(w))
    x_t, y_t = model.working_data(
        tf.constant(x64), None if y64 is None else tf.constant(y64), dtype=tf.float64
    )
    if y_t is not None and y_t.shape.rank == 2:
        y_t = y_t[:, 0]

    working = {k: tf.cast(v, tf.float64) for k, v in model.params_tensors().items()}
    roles = model.parameter_roles or {}
    ols = convention == "ols"
    scale_name = next((n for n in working if roles.get(n) == "scale"), None)
    names = [n for n in working if not (ols and n == scale_name)]
    shapes = [working[n].shape for n in names]
    sizes = [s.num_elements() for s in shapes]

    def unflatten(theta):
        pieces = tf.split(theta, sizes)
        return {
            **working,
            **{n: tf.reshape(v, s) for n, v, s in zip(names, pieces, shapes, strict=True)},
        }

    if ols and model.sample_loss_kind != "squared_error":

        def per_sample(params):
            return tf.square(y_t - model.linear_predictor(params, x_t))

    else:

        def per_sample(params):
            return model.sample_loss(params, x_t, y_t)

    theta = tf.concat([tf.reshape(working[n], [-1]) for n in names], 0)
    with tf.GradientTape(persistent=True) as outer:
        outer.watch(theta)
        with tf.GradientTape() as inner:
            inner.watch(theta)
            sample_losses = per_sample(unflatten(theta))
            total = tf.reduce_sum(w * sample_losses)
        gradient = inner.gradient(total, theta)
    hessian = outer.jacobian(gradient, theta, experimental_use_pfor=False)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(theta)
        user = unflatten(theta)
        if model.adaptation is not None:
            user = model.adaptation.to_user(user, model.parameter_roles)
        user_flat = tf.concat([tf.reshape(user[n], [-1]) for n in names], 0)
    jacobian = tape.jacobian(user_flat, theta, experimental_use_pfor=False).numpy()

    p = len(user_flat)
    h = hessian.numpy()
    h = 0.5 * (h + h.T)
    eigenvalues = np.linalg.eigvalsh(h)
    positive_definite = bool(
        np.all(np.isfinite(h))
        and eigenvalues[-1] > 0
        and eigenvalues[0] > eigenvalues[-1] * p * np.finfo(np.float64).eps
    )
    h_inverse = np.linalg.inv(h) if positive_definite else np.full((p, p), np.nan)
    newton_step = jacobian @ (h_inverse @ gradient.numpy())

    y_scale = 1.0 if model.adaptation is None else model.adaptation.y_scale
    if ols:
        rss = float(total) * y_scale**2
        df_resid = nobs - p
        if df_resid <= 0:
            raise ValueError(f"OLS needs more observations than coefficients: n={nobs:g}, p={p}.")
        cov_working = 2.0 * (float(total) / df_resid) * h_inverse
        loglik = -0.5 * nobs * (math.log(2.0 * math.pi) + math.log(rss / nobs) + 1.0)
        k_criteria, k_likelihood = p, p + 1
        sigma = math.sqrt(rss / df_resid)
    else:
        loglik = -float(tf.reduce_sum(w * model.user_losses(sample_losses)))
        df_resid = nobs - p
        cov_working = h_inverse
        k_criteria = k_likelihood = p
        sigma = None if scale_name is None else float(user[scale_name])
    covariance = jacobian @ cov_working @ jacobian.T
    variances = np.diag(covariance)
    stderr_flat = np.where(variances >= 0, np.sqrt(np.abs(variances)), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = float(np.max(np.abs(newton_step) / stderr_flat))

    messages = []
    if not positive_definite:
        messages.append(
            f"The Hessian is not positive definite (eigenvalues {eigenvalues[0]:.3g} .. "
            f"{eigenvalues[-1]:.3g}): the parameters are not at a minimum, so no standard "
            "errors are reported (NaN)."
        )
    converged = positive_definite and math.isfinite(distance) and distance <= tol
    if positive_definite and not converged:
        messages.append(
            f"Not converged: the optimum is still {distance:.3g} standard errors away "
            f"(tol={tol:g}); train longer (after model.adapt) before trusting these numbers."
        )
    for message in messages:
        warnings.warn(f"{type(model).__name__}: {message}", InferenceWarning, stacklevel=2)

    params = {n: _as_param(user[n].numpy()) for n in names}
    stderr = _unflatten_numpy(stderr_flat, names, shapes)
    param_names = _flat_names(names, shapes)
    if ols and scale_name is not None:
        # GaussianRegression under OLS conventions: sigma is s, with no standard error.
        params[scale_name], stderr[scale_name] = np.float64(sigma), np.float64(np.nan)
        covariance = np.pad(covariance, (0, 1), constant_values=np.nan)
        param_names.append(scale_name)
    return InferenceResult(
        model_name=type(model).__name__,
        convention=convention,
        params=params,
        stderr=stderr,
        covariance=covariance,
        param_names=param_names,
        loglik=loglik,
        aic=-2.0 * loglik + 2.0 * k_criteria,
        bic=-2.0 * loglik + math.log(nobs) * k_criteria,
        nobs=nobs,
        df_resid=df_resid,
        sigma=sigma,
        converged=converged,
        hessian_positive_definite=positive_definite,
        distance_to_optimum=distance,
        warnings=messages,
        n_likelihood_params=k_likelihood,
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
    `sigma` at its MLE, which counts as a parameter).

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
        pvalue=_chi2_sf(max(statistic, 0.0), df),
        loglik_full=results[0].loglik,
        loglik_restricted=results[1].loglik,
        warnings=tuple(messages),
    )


# ---------------------------------------------------------------------------- helpers
def _resolve_convention(model, convention):
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}.")
    squared_error = model.sample_loss_kind == "squared_error"
    if convention == "auto":
        return "ols" if squared_error else "mle"
    if convention == "mle" and squared_error:
        raise ValueError(
            f"{type(model).__name__} minimises squared error and has no noise parameter: use "
            "convention='ols', or GaussianRegression for MLE conventions."
        )
    if convention == "ols" and not squared_error and not hasattr(model, "linear_predictor"):
        raise ValueError(f"convention='ols' needs a linear model, not {type(model).__name__}.")
    return convention


def _data_for(model, x, y):
    if model.takes_targets:
        return x, y
    return (x,) if y is None else (y,)


def _as_param(value):
    value = np.asarray(value, np.float64)
    return np.float64(value) if value.ndim == 0 else value


def _flat_names(names, shapes):
    flat = []
    for name, shape in zip(names, shapes, strict=True):
        size = shape.num_elements()
        flat += [name] if size == 1 else [f"{name}_{i}" for i in range(size)]
    return flat


def _unflatten_numpy(flat, names, shapes):
    result, start = {}, 0
    for name, shape in zip(names, shapes, strict=True):
        size = shape.num_elements()
        result[name] = _as_param(np.reshape(flat[start : start + size], shape))
        start += size
    return result


def _flatten(tree):
    return np.concatenate([np.reshape(np.asarray(v, np.float64), -1) for v in tree.values()])


def _fmt(value, digits=6):
    return "nan" if not np.isfinite(value) else f"{value:#.{digits}g}"


def _fmt_stat(value):
    if not np.isfinite(value):
        return "nan"
    return f"{value:.3f}" if abs(value) < 1e5 else f"{value:.3e}"


def _fmt_p(value):
    return "nan" if not np.isfinite(value) else f"{value:.3f}"
