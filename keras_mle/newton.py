"""Damped Newton's method in float64, on a model's own score and observed information.

Gradient descent in float32 stops near the optimum; Newton's method finishes the job:

```python
step = I(theta)^-1 s(theta)            # s: the score, I: the observed information (user units)
theta <- theta + a * step              # a = 1, halved until the total loss does not increase
```

Newton's method is invariant under affine changes of the parameters, so badly scaled features
(values near 500, say) slow it no more than unit ones. Where `I` is not positive definite (far
from the optimum of a non-convex likelihood), its eigenvalues are replaced by their absolute
values (floored), which keeps the step a descent direction.

- `newton_direction`, `damped_step` and `minimize`: the iteration, over any loss given as a
  function of the components that move (`keras_mle.profile` runs it with one component held);
- `refine`: the iteration on a fitted model, through its public hooks (`check_data`, `params`,
  `likelihood_derivatives`, `set_params`), which writes the refined parameters back (rounded to
  the variables' dtype: use a float64 model, or `adapt`, to keep float64 precision). Fixed
  components (a model's `fixed=`) stay at their values: the steps run over the free components,
  with the blocks of `s` and `I` over them.

This module imports nothing from `keras_mle.models`, so that the model can call `refine`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable

import numpy as np

from keras_mle import data as data_lib
from keras_mle import parameters
from keras_mle.errors import InferenceWarning

__all__ = [
    "Evaluation",
    "Minimum",
    "RefineReport",
    "damped_step",
    "minimize",
    "newton_direction",
    "refine",
]

MAX_HALVINGS = 60  # step halvings before a direction counts as giving no descent


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """The total loss and its derivatives at a point, over the components that move.

    Attributes:
        loss: The total loss `L` (an NLL, or a sum of squared errors).
        score: `-dL / d theta` over the moving components.
        information: `d^2 L / d theta^2` over them.
        payload: Whatever else the caller's evaluation computed (its `LikelihoodDerivatives`,
            say), carried along so that it need not evaluate the optimum twice. Defaults to
            `None`.
    """

    loss: float
    score: np.ndarray
    information: np.ndarray
    payload: object = None


@dataclasses.dataclass(frozen=True)
class Minimum:
    """Where `minimize` stopped.

    Attributes:
        point: The moving components there.
        evaluation: The `Evaluation` there.
        steps: Newton steps taken.
        distance: Largest component of the Newton step left, in units of `scale`.
        converged: Whether `distance <= tol`.
    """

    point: np.ndarray
    evaluation: Evaluation
    steps: int
    distance: float
    converged: bool


@dataclasses.dataclass(frozen=True)
class RefineReport:
    """What `refine` did.

    Attributes:
        steps: Newton steps taken.
        converged: Whether the Newton step left is at most `tol` standard errors.
        gradient_norm: Euclidean norm of the score of the free parameters at the final
            parameters (user units).
        distance_to_optimum: Largest Newton step left, in standard errors.
        loss: The total loss `sum_i w_i l_i` at the final parameters.
    """

    steps: int
    converged: bool
    gradient_norm: float
    distance_to_optimum: float
    loss: float

    def __str__(self) -> str:
        state = "converged" if self.converged else "NOT converged"
        return (
            f"refine: {state} after {self.steps} Newton step(s); score norm "
            f"{self.gradient_norm:.3g}, {self.distance_to_optimum:.3g} se from the optimum."
        )


def newton_direction(information: np.ndarray, score: np.ndarray) -> np.ndarray:
    """`I^-1 s`, with `I`'s eigenvalues floored at a small positive value if it is indefinite.

    Args:
        information: The observed information `I`, `(p, p)` (symmetrised here).
        score: The score `s`, `(p,)`.
    """
    information = 0.5 * (information + information.T)
    try:
        factor = np.linalg.cholesky(information)
        return np.linalg.solve(factor.T, np.linalg.solve(factor, score))
    except np.linalg.LinAlgError:
        values, vectors = np.linalg.eigh(information)
        floor = max(np.max(np.abs(values)) * 1e-8, 1e-300)
        return vectors @ ((vectors.T @ score) / np.maximum(np.abs(values), floor))


def damped_step(
    evaluate: Callable[[np.ndarray], Evaluation | None],
    point: np.ndarray,
    current: Evaluation,
    step: np.ndarray,
) -> tuple[np.ndarray, Evaluation] | None:
    """`point + a * step`, `a = 1` halved until the loss does not increase; `None` if none does.

    A step whose predicted decrease `a * s @ step` is at rounding level is accepted as it is:
    at the optimum the loss can only move by rounding.

    Args:
        evaluate: `point -> Evaluation`, or `None` where the loss is not finite.
        point: The moving components now.
        current: `evaluate(point)`.
        step: The Newton direction from `newton_direction`.
    """
    rounding = 64 * np.finfo(float).eps * max(1.0, abs(current.loss))
    fraction = 1.0
    for _ in range(MAX_HALVINGS):
        trial_point = point + fraction * step
        trial = evaluate(trial_point)
        predicted = fraction * float(current.score @ step)
        if trial is not None and (trial.loss <= current.loss or predicted <= rounding):
            return trial_point, trial
        fraction *= 0.5
    return None


def minimize(
    evaluate: Callable[[np.ndarray], Evaluation | None],
    start: np.ndarray,
    current: Evaluation,
    *,
    max_steps: int,
    tol: float,
    scale: np.ndarray | None = None,
) -> Minimum:
    """Damped Newton steps from `start` until the step left is at most `tol` in units of `scale`.

    Args:
        evaluate: `point -> Evaluation`, or `None` where the loss is not finite.
        start: The moving components to start from.
        current: `evaluate(start)`.
        max_steps: Most Newton steps to take.
        tol: The largest step left, in units of `scale`, at which to stop.
        scale: The unit of each component (standard errors). Defaults to `None`: those of the
            current information, `sqrt(diag(I^-1))`, recomputed at each step.

    Returns:
        A `Minimum`; it is not converged when `max_steps` ran out or no step decreased the loss.
    """
    point, steps = np.asarray(start, np.float64), 0
    while True:
        step = newton_direction(current.information, current.score)
        unit = _standard_errors(current.information) if scale is None else scale
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.abs(step) / unit
            distance = float(np.max(ratios)) if len(ratios) else 0.0
        if distance <= tol:
            return Minimum(point, current, steps, distance, True)
        if steps >= max_steps:
            break
        accepted = damped_step(evaluate, point, current, step)
        if accepted is None:
            break
        (point, current), steps = accepted, steps + 1
    return Minimum(point, current, steps, distance, False)


def refine(model, x, y=None, sample_weight=None, *, max_steps=20, tol=1e-10) -> RefineReport:
    """Float64 Newton steps with step halving to the optimum; writes the parameters back.

    Args:
        model: A built `keras_mle.MaximumLikelihoodModel` (any object with its statistics hooks).
        x: Features (for a model of a sample: the samples).
        y: Targets, or `None` for a model of a sample. Defaults to `None`.
        sample_weight: Frequency weights. Defaults to `None`.
        max_steps: Most Newton steps to take. Defaults to `20`.
        tol: Stop when the Newton step left is at most `tol` standard errors (the square roots
            of the diagonal of `I^-1`). Defaults to `1e-10`.

    Returns:
        A `RefineReport`. When not converged it also warns (`keras_mle.InferenceWarning`).

    Raises:
        ValueError: for bad arguments or data, or non-finite starting parameters.
    """
    name = type(model).__name__
    if not model.built:
        raise ValueError("model is not built: fit it (or call it on a batch) first.")
    max_steps = data_lib.check_positive_int("max_steps", max_steps)
    if isinstance(tol, bool) or not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"tol must be a number > 0, got {tol!r}.")
    x, y, sample_weight = model.check_data(x, y, sample_weight, dtype=np.float64)
    shapes = {key: np.shape(value) for key, value in model.params.items()}
    first = model.likelihood_derivatives(x, y, sample_weight)
    if not math.isfinite(first.total):
        raise ValueError(
            f"{name}: the loss is not finite at the starting parameters; start refine from a "
            "point where the likelihood is defined."
        )
    free, theta = first.free, first.params.copy()

    at = derivatives_at(model, (x, y, sample_weight), theta, free, shapes)

    def evaluate(point):
        derivatives = at(point)
        return None if derivatives is None else _evaluation(derivatives, free)

    minimum = minimize(
        evaluate, theta[free], _evaluation(first, free), max_steps=max_steps, tol=tol
    )
    theta[free] = minimum.point
    model.set_params(parameters.unflatten(theta, shapes))
    report = RefineReport(
        steps=minimum.steps,
        converged=minimum.converged,
        gradient_norm=float(np.linalg.norm(minimum.evaluation.score)),
        distance_to_optimum=minimum.distance,
        loss=minimum.evaluation.loss,
    )
    if not report.converged:
        # stacklevel 3: the caller of `keras_mle.refine` or of `model.refine`, which call this.
        message = f"{name}: {report} Raise max_steps, or start closer."
        warnings.warn(message, InferenceWarning, stacklevel=3)
    return report


def derivatives_at(model, data, template, free, shapes):
    """`point -> LikelihoodDerivatives` of `model` on `data` with the free components at `point`.

    The components not in `free` keep their values in `template` (flat, user units); the
    function returns `None` where the loss or its Hessian is not finite, or the model refuses
    the point.
    """
    x, y, weights = data

    def at(point):
        theta = np.array(template, np.float64)
        theta[free] = point
        try:
            derivatives = model.likelihood_derivatives(
                x, y, weights, params=parameters.unflatten(theta, shapes)
            )
        except ValueError:
            return None
        if not (math.isfinite(derivatives.total) and np.all(np.isfinite(derivatives.hessian))):
            return None
        return derivatives

    return at


def _evaluation(derivatives, free) -> Evaluation:
    """A model's `LikelihoodDerivatives` as an `Evaluation` over the components `free`."""
    return Evaluation(
        loss=derivatives.total,
        score=derivatives.score[free],
        information=derivatives.information[np.ix_(free, free)],
    )


def _standard_errors(information):
    """`sqrt(|diag(I^-1)|)`, through the pseudo-inverse (`I` may be singular far from optimum)."""
    return np.sqrt(np.abs(np.diag(np.linalg.pinv(0.5 * (information + information.T)))))
