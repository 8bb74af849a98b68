"""Profile-likelihood confidence intervals, in float64, for `InferenceResult.conf_int`.

For a parameter component `theta_j`, the profile log-likelihood is the log-likelihood maximised
over all the other parameters with `theta_j = t` fixed; the interval at `level` is

```python
{t : 2 * (llf_max - llf_profile(t)) <= chi2(1).ppf(level)}
```

found on each side of the estimate as the root of the signed root deviance
`r(t) = sqrt(2 * (llf_max - llf_profile(t))) = sqrt(chi2(1).ppf(level))`. The inner maximisation
is Newton's method with step halving on the model's own float64 score and observed information
(`likelihood_derivatives`, user units); the outer root is Newton's method on `r(t)`, whose slope
is known from the score at the inner optimum (`d llf_profile / dt = d llf / d theta_j` there),
kept inside a bracket by bisection. A point where the loss is not finite (a scale parameter at or
below 0) lies outside the interval.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

__all__ = ["ProfileProblem", "profile_bounds"]

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
    theta[free] = start
    current = problem.evaluate(theta)
    if current is None:
        theta[free] = problem.theta_hat[free]
        current = problem.evaluate(theta)
        if current is None:
            return None
    for _ in range(_MAX_INNER):
        loss, score, information = current
        if not free.any():
            break
        step = _newton_direction(information[np.ix_(free, free)], score[free])
        if np.max(np.abs(step) / se_free) <= _INNER_TOL:
            break
        accepted = None
        fraction = 1.0
        for _ in range(60):
            candidate = theta.copy()
            candidate[free] += fraction * step
            trial = problem.evaluate(candidate)
            predicted = fraction * float(score[free] @ step)
            if trial is not None and (
                trial[0] <= loss or predicted <= 64 * np.finfo(float).eps * max(1.0, abs(loss))
            ):
                accepted = candidate, trial
                break
            fraction *= 0.5
        if accepted is None:
            break
        theta, current = accepted
    return current[0], current[1], theta[free]


def _newton_direction(information, score):
    """`I^-1 s`, with `I`'s eigenvalues floored at a small positive value if it is indefinite."""
    information = 0.5 * (information + information.T)
    try:
        factor = np.linalg.cholesky(information)
        return np.linalg.solve(factor.T, np.linalg.solve(factor, score))
    except np.linalg.LinAlgError:
        values, vectors = np.linalg.eigh(information)
        floor = max(np.max(np.abs(values)) * 1e-8, 1e-300)
        return vectors @ ((vectors.T @ score) / np.maximum(np.abs(values), floor))
