"""Newton refinement of a fitted model, in float64, on its own score and observed information.

Gradient descent in float32 stops near the optimum; `refine` finishes the job:

```python
step = I(theta)^-1 s(theta)            # s: the score, I: the observed information (user units)
theta <- theta + a * step              # a = 1, halved until the total loss does not increase
```

Newton's method is invariant under affine changes of the parameters, so badly scaled features
(values near 500, say) slow it no more than unit ones. Where `I` is not positive definite (far
from the optimum of a non-convex likelihood), its eigenvalues are replaced by their absolute
values (floored), which keeps the step a descent direction. The refined parameters are written
back with `model.set_params` (rounded to the variables' dtype: use a float64 model, or `adapt`,
to keep float64 precision). Fixed components (a model's `fixed=`) stay at their values: the
steps run over the free components, with the blocks of `s` and `I` over them.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np

from keras_mle import data as data_lib
from keras_mle.models.base import MaximumLikelihoodModel
from keras_mle.profile import _newton_direction

__all__ = ["refine", "RefineReport"]


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


def refine(
    model: MaximumLikelihoodModel,
    x,
    y=None,
    sample_weight=None,
    *,
    max_steps: int = 20,
    tol: float = 1e-10,
) -> RefineReport:
    """Float64 Newton steps with step halving to the optimum; writes the parameters back.

    Args:
        model: A built `keras_mle.MaximumLikelihoodModel`.
        x: Features (for a model of a sample: the samples).
        y: Targets, or `None` for a model of a sample. Defaults to `None`.
        sample_weight: Frequency weights. Defaults to `None`.
        max_steps: Most Newton steps to take. Defaults to `20`.
        tol: Stop when the Newton step left is at most `tol` standard errors (the square roots
            of the diagonal of `I^-1`). Defaults to `1e-10`.

    Returns:
        A `RefineReport`. When not converged it also warns (`keras_mle.InferenceWarning`).

    Raises:
        TypeError: if `model` is not a `keras_mle.MaximumLikelihoodModel`.
        ValueError: for bad arguments or data, or non-finite starting parameters.

    Example:

    ```python
    report = keras_mle.inference.refine(model, x, y)
    report.converged, report.steps
    ```
    """
    if not isinstance(model, MaximumLikelihoodModel):
        raise TypeError(f"model must be a keras_mle model, got {type(model).__name__}.")
    if not model.built:
        raise ValueError("model is not built: fit it (or call it on a batch) first.")
    max_steps = data_lib.check_positive_int("max_steps", max_steps)
    if isinstance(tol, bool) or not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"tol must be a number > 0, got {tol!r}.")
    x, y, sample_weight = model.check_data(x, y, sample_weight, dtype=np.float64)
    shapes = {name: np.shape(value) for name, value in model.params.items()}

    def evaluate(theta):
        # Only free components move: the fixed ones keep their values in `theta`.
        try:
            derivatives = model.likelihood_derivatives(
                x, y, sample_weight, params=_unflatten(theta, shapes)
            )
        except ValueError:
            return None
        if not (math.isfinite(derivatives.total) and np.all(np.isfinite(derivatives.hessian))):
            return None
        return derivatives

    current = model.likelihood_derivatives(x, y, sample_weight)
    theta = current.params.copy()
    free = current.free
    if not math.isfinite(current.total):
        raise ValueError(
            f"{type(model).__name__}: the loss is not finite at the starting parameters; "
            "start refine from a point where the likelihood is defined."
        )
    steps, distance, converged = 0, math.inf, False
    while True:
        information = current.information[np.ix_(free, free)]
        score = current.score[free]
        step = np.zeros_like(theta)
        step[free] = _newton_direction(information, score)
        stderr = np.sqrt(np.abs(np.diag(np.linalg.pinv(0.5 * (information + information.T)))))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.abs(step[free]) / stderr
            distance = float(np.max(ratios)) if len(ratios) else 0.0
        if distance <= tol:
            converged = True
            break
        if steps >= max_steps:
            break
        accepted = None
        fraction = 1.0
        for _ in range(60):
            trial = evaluate(theta + fraction * step)
            predicted = fraction * float(score @ step[free])
            if trial is not None and (
                trial.total <= current.total
                or predicted <= 64 * np.finfo(float).eps * max(1.0, abs(current.total))
            ):
                accepted = trial
                break
            fraction *= 0.5
        if accepted is None:
            break
        theta, current = theta + fraction * step, accepted
        steps += 1
    model.set_params(_unflatten(theta, shapes))
    report = RefineReport(
        steps=steps,
        converged=converged,
        gradient_norm=float(np.linalg.norm(current.score[free])),
        distance_to_optimum=distance,
        loss=current.total,
    )
    if not converged:
        from keras_mle.inference import InferenceWarning

        warnings.warn(
            f"{type(model).__name__}: {report} Raise max_steps, or start closer.",
            InferenceWarning,
            stacklevel=2,
        )
    return report


def _unflatten(flat, shapes):
    result, start = {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        result[name] = np.reshape(flat[start : start + size], shape)
        start += size
    return result
