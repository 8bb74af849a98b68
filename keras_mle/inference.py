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

This module is the entry point: it checks the arguments, has the model compute its derivatives
(from arrays, or summed over a dataset's batches), and assembles the `InferenceResult`
(`keras_mle.results`) from the conventions' numbers (`keras_mle.conventions`) and, for a robust
`cov_type`, a sandwich (`keras_mle.covariance`). The tests live in `keras_mle.hypothesis_tests`,
predictions in `keras_mle.prediction`, profile intervals in `keras_mle.profile`, and refinement
in `keras_mle.refine` (`keras_mle.newton`); their public names are importable from here too.
"""

from __future__ import annotations

import math
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_mle import conventions, covariance, parameters
from keras_mle.conventions import CONVENTIONS  # noqa: F401 (importable from here, as before)
from keras_mle.errors import InferenceWarning
from keras_mle.hypothesis_tests import LikelihoodRatioResult, WaldTestResult, likelihood_ratio
from keras_mle.models import MaximumLikelihoodModel
from keras_mle.prediction import PredictionResult
from keras_mle.refine import RefineReport, refine
from keras_mle.results import InferenceResult

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
    _check_model("model", model)
    convention, least_squares = conventions.resolve_convention(model, convention)
    if isinstance(tol, bool) or not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"tol must be a number > 0, got {tol!r}.")
    covariance.check_cov_type(model, convention, cov_type, groups)
    fit_model = model if convention == "mle" else least_squares
    streamed = _is_dataset(x)
    data = meat = None
    if streamed:
        _check_dataset_arguments(y, sample_weight, cov_type)
        if cov_type in ("HC0", "HC1"):
            meat = covariance.StreamedMeat(fit_model, cov_type, least_squares=convention == "ols")
    else:
        x64, y64, w64 = fit_model.check_data(x, y, sample_weight, dtype=np.float64)
        data = (x64, y64, np.ones(len(x64)) if w64 is None else w64)
    if cov_type == "cluster":
        groups = covariance.check_groups(groups, len(data[0]))
    fit = _fit(model, least_squares, x, y, sample_weight, meat)
    status = _convergence(fit, tol)
    for message in status[2]:
        warnings.warn(f"{type(model).__name__}: {message}", InferenceWarning, stacklevel=2)
    cov, n_groups = fit.covariance, None
    if cov_type != "nonrobust":
        source = x if streamed else data
        cov, n_groups = _robust(fit, fit_model, convention, cov_type, source, groups, meat)
    return _result(model, fit_model, convention, fit, cov, cov_type, n_groups, data, status)


# Attached to the function, so that `keras_mle.inference.refine(...)` works whether
# `keras_mle.inference` names this module or (at the package level) this function.
inference.refine = refine


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
        A `LikelihoodRatioResult` (`keras_mle.hypothesis_tests`).
    """
    for name, model in (("full", full), ("restricted", restricted)):
        _check_model(name, model, "a fitted keras_mle model")
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
    return likelihood_ratio(*results, df=df)


# ---------------------------------------------------------------------------- assembly
def _fit(model, least_squares, x, y, sample_weight, on_batch):
    """The `LikelihoodFit` of the convention: `least_squares` is `None` under MLE conventions."""
    if least_squares is None:
        return conventions.mle_fit(model, _derivatives(model, x, y, sample_weight, on_batch))
    try:
        derivatives = _derivatives(least_squares, x, y, sample_weight, on_batch)
    except ValueError as error:
        if least_squares is model:
            raise
        raise ValueError(
            f"{type(model).__name__} (convention='ols', through its least-squares model): {error}"
        ) from None
    return conventions.ols_fit(model, least_squares, derivatives)


def _derivatives(model, x, y, sample_weight, on_batch):
    """`likelihood_derivatives` of the arrays, or `accumulate_derivatives` of a dataset."""
    if isinstance(x, tf.data.Dataset):
        return model.accumulate_derivatives(x, on_batch=on_batch)
    return model.likelihood_derivatives(x, y, sample_weight)


def _robust(fit, fit_model, convention, cov_type, source, groups, meat):
    """`(cov, n_groups)`: the sandwich of `cov_type` on the arrays `(x, y, w)` or a dataset."""
    least_squares = convention == "ols"
    theta, free = fit.derivatives.params, fit.free
    if isinstance(source, tf.data.Dataset):
        return covariance.streamed_sandwich(
            cov_type,
            fit_model,
            source,
            theta,
            free,
            fit.bread,
            fit.nobs,
            least_squares=least_squares,
            meat=meat,
        )
    return covariance.sandwich(
        cov_type,
        fit_model,
        source,
        theta,
        free,
        fit.bread,
        least_squares=least_squares,
        groups=groups,
    )


def _convergence(fit, tol):
    """`(distance, converged, messages)`: the Newton step left in model-based standard errors."""
    if fit.step_stderr is not None:
        model_stderr = fit.step_stderr
    else:
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
    return distance, converged, messages


def _result(model, fit_model, convention, fit, cov, cov_type, n_groups, data, status):
    """The `InferenceResult`: per-parameter dicts, the noise scale beside least squares.

    `status` is `_convergence`'s `(distance, converged, messages)`.
    """
    distance, converged, messages = status
    params = parameters.unflatten(fit.derivatives.params, fit.shapes)
    param_names = list(fit.derivatives.names)
    fixed = [name for name, held in zip(param_names, fit.derivatives.fixed, strict=True) if held]
    if fit.unestimated:
        # Parameters outside the least-squares model (the noise scale, reported as s): no
        # standard error, and NaN rows and columns in the covariance.
        params.update(fit.unestimated)
        extra = parameters.size({n: np.shape(v) for n, v in fit.unestimated.items()})
        cov = np.pad(cov, (0, extra), constant_values=np.nan)
        param_names += [label for name in fit.unestimated for label in model.component_names(name)]
    df_inference = fit.df_resid
    if n_groups is not None and convention == "ols":
        df_inference = float(n_groups - 1)
    return InferenceResult(
        model_name=type(model).__name__,
        convention=convention,
        params=params,
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
        df_model=float(len(fit.free) - conventions.n_constant(fit_model)),
        fixed=tuple(fixed),
        model=model,
        likelihood_model=fit_model,
        data=data,
    )


# ---------------------------------------------------------------------------- arguments
def _check_model(name, model, what="a keras_mle model"):
    if not isinstance(model, MaximumLikelihoodModel):
        raise TypeError(f"{name} must be {what}, got {type(model).__name__}.")
    if not model.built:
        raise ValueError(f"{name} is not built: fit it (or call it on a batch) first.")


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


def _data_for(model, x, y):
    if model.takes_targets:
        return x, y
    return (x,) if y is None else (y,)
