"""Profile-likelihood confidence intervals, in float64, for `InferenceResult.conf_int`.

For a parameter component `theta_j`, the profile log-likelihood is the log-likelihood maximised
over all the other parameters with `theta_j = t` fixed; the interval at `level` is

```python
{t : 2 * (llf_max - llf_profile(t)) <= chi2(1).ppf(level)}
```

found on each side of the estimate as the root of the signed root deviance
`r(t) = sqrt(2 * (llf_max - llf_profile(t))) = sqrt(chi2(1).ppf(level))`. The inner maximisation
is `keras_mle.newton.minimize` (Newton's method with step halving) on the model's own float64
score and observed information (`likelihood_derivatives`, user units); the outer root is
Newton's method on `r(t)`, whose slope is known from the score at the inner optimum
(`d llf_profile / dt = d llf / d theta_j` there), kept inside a bracket by bisection. A point
where the loss is not finite (a scale parameter at or below 0) lies outside the interval.

- `ProfileProblem` and `profile_bounds`: the search, over any likelihood given as a function;
- `profile_table`: the problem of an `InferenceResult` (its likelihood model, data, estimates and
  covariance, read from its public attributes) and the bounds of each of its free components.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from keras_mle import distributions, newton, parameters

__all__ = ["ProfileProblem", "ProfileTable", "profile_bounds", "profile_table"]

_INNER_TOL = 1e-11  # Newton step left in the free parameters, in standard errors
_OUTER_TOL = 1e-10  # |r(t) - r_target|
_MAX_INNER = 60
_MAX_OUTER = 100


@dataclasses.dataclass(frozen=True)
class ProfileProblem:
    """What the profile needs from a fit.

    Attributes:
        evaluate: `theta -> (L, score, information)` in user units (`L` the total loss), or
            `None` where the loss is not finite there.
        loglik: `L -> log-likelihood` (for an NLL `-L`; for least squares, the Gaussian
            log-likelihood with the noise variance at its MLE `L / n`).
        dloglik: `L -> d loglik / d L`.
        theta_hat: The estimates (flat, user units).
        stderr: Their Wald standard errors (the scale of the steps).
        covariance: Their covariance (starting points of the free parameters along the profile).
    """

    evaluate: object
    loglik: object
    dloglik: object
    theta_hat: np.ndarray
    stderr: np.ndarray
    covariance: np.ndarray


def profile_bounds(problem: ProfileProblem, index: int, cutoff: float) -> tuple[float, float]:
    """`(lower, upper)` of the profile interval of component `index`; NaN where not found.

    Args:
        problem: The fit.
        index: The component of `theta` to profile.
        cutoff: `chi2(1).ppf(level)`.
    """
    at_hat = problem.evaluate(problem.theta_hat)
    if at_hat is None:
        return math.nan, math.nan
    llf_max = problem.loglik(at_hat[0])
    target = math.sqrt(cutoff)
    return tuple(_one_side(problem, index, side, target, llf_max) for side in (-1.0, 1.0))  # type: ignore[return-value]


def _one_side(problem, j, side, target, llf_max):
    theta_hat, se = problem.theta_hat, problem.stderr
    free = np.arange(len(theta_hat)) != j
    cov = problem.covariance
    slope = cov[free, j] / cov[j, j] if cov[j, j] > 0 else np.zeros(int(free.sum()))
    inside, outside = 0.0, math.inf  # distances from the estimate, in se_j, bracketing the root
    d = target
    previous = (0.0, theta_hat[free])
    for _ in range(_MAX_OUTER):
        t = theta_hat[j] + side * d * se[j]
        start = previous[1] + slope * (t - theta_hat[j] - previous[0])
        solved = _inner(problem, j, t, start, se[free])
        if solved is None:
            r, drdd = math.inf, None
        else:
            loss, score, free_values = solved
            deviance = max(2.0 * (llf_max - problem.loglik(loss)), 0.0)
            r = math.sqrt(deviance)
            # d llf / d theta_j = dloglik/dL * dL/dtheta_j = dloglik/dL * (-score_j)
            dllf_dt = problem.dloglik(loss) * -score[j]
            drdd = -dllf_dt * side * se[j] / r if r > 0 else None
            if abs(r - target) <= _OUTER_TOL:
                return t
            previous = (t - theta_hat[j], free_values)
        if r < target:
            inside = max(inside, d)
        else:
            outside = min(outside, d)
        step = None if drdd is None or not drdd > 0 else d + (target - r) / drdd
        if step is None or not inside < step < outside:
            step = 0.5 * (inside + outside) if math.isfinite(outside) else 2.0 * max(d, inside)
        if math.isfinite(outside) and outside - inside <= 1e-13 * max(1.0, outside):
            return theta_hat[j] + side * step * se[j]
        d = step
    return math.nan


def _inner(problem, j, t, start, se_free):
    """Maximises the log-likelihood over the other parameters with `theta_j = t`.

    Returns `(L, score, free_values)` at the optimum, or `None` if the loss is not finite there.
    """
    free = np.arange(len(problem.theta_hat)) != j
    theta = problem.theta_hat.copy()
    theta[j] = t

    def evaluate(point):
        trial = theta.copy()
        trial[free] = point
        value = problem.evaluate(trial)
        if value is None:
            return None
        loss, score, information = value
        return newton.Evaluation(loss, score[free], information[np.ix_(free, free)], score)

    current = evaluate(start)
    if current is None:
        start = problem.theta_hat[free]
        current = evaluate(start)
        if current is None:
            return None
    minimum = newton.minimize(
        evaluate, start, current, max_steps=_MAX_INNER, tol=_INNER_TOL, scale=se_free
    )
    return minimum.evaluation.loss, minimum.evaluation.payload, minimum.point


@dataclasses.dataclass(frozen=True)
class ProfileTable:
    """The profile bounds of every component of an `InferenceResult`.

    Attributes:
        bounds: `(p, 2)` `(lower, upper)` over the result's `param_names`; NaN where not found,
            and for the components that were not searched.
        searched: `(p,)` mask of the components profiled: the free components of the model
            whose likelihood the result is of (not the fixed ones, nor a noise scale reported
            beside a least-squares fit).
    """

    bounds: np.ndarray
    searched: np.ndarray


def profile_table(result, level: float) -> ProfileTable:
    """The profile intervals at `level` of the free components of `result`.

    The log-likelihood is that of `result.likelihood_model` on `result.data` (for least squares:
    the Gaussian one with the noise variance at its MLE `L / n`), about `result.params`.

    Args:
        result: An `InferenceResult` computed from arrays, with `cov_type="nonrobust"`.
        level: The confidence level, in (0, 1).
    """
    model = result.likelihood_model
    shapes = {name: np.shape(result.params[name]) for name in model.parameter_names}
    template = parameters.flatten({name: result.params[name] for name in shapes})
    free = np.flatnonzero(~model.fixed_mask)
    searched = np.zeros(len(result.param_names), bool)
    searched[free] = True
    bounds = np.full((len(result.param_names), 2), np.nan)
    if not result.hessian_positive_definite:
        return ProfileTable(bounds, searched)
    covariance = result.covariance[np.ix_(free, free)]
    problem = ProfileProblem(
        evaluate=_evaluator(model, result.data, template, free, shapes),
        loglik=_loglik(result.convention, result.nobs),
        dloglik=_dloglik(result.convention, result.nobs),
        theta_hat=template[free],
        stderr=np.sqrt(np.abs(np.diag(covariance))),
        covariance=covariance,
    )
    cutoff = float(distributions.chi2_ppf(level, 1))
    for j, index in enumerate(free):
        bounds[index] = profile_bounds(problem, j, cutoff)
    return ProfileTable(bounds, searched)


def _evaluator(model, data, template, free, shapes):
    """`ProfileProblem.evaluate` over the free components; the fixed ones keep their values."""
    at = newton.derivatives_at(model, data, template, free, shapes)

    def evaluate(theta_free):
        d = at(theta_free)
        if d is None:
            return None
        return d.total, d.score[free], d.information[np.ix_(free, free)]

    return evaluate


def _loglik(convention, nobs):
    """`L -> log-likelihood`: `-L` for an NLL, the Gaussian one at `sigma^2 = L / n` for OLS."""
    if convention == "ols":
        return lambda loss: -0.5 * nobs * (math.log(2.0 * math.pi) + math.log(loss / nobs) + 1.0)
    return lambda loss: -loss


def _dloglik(convention, nobs):
    """`L -> d loglik / d L`."""
    if convention == "ols":
        return lambda loss: -0.5 * nobs / loss
    return lambda loss: -1.0
