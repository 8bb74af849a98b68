"""Newton refinement of a fitted model, in float64, on its own score and observed information.

Gradient descent in float32 stops near the optimum; `refine` finishes the job:

```python
step = I(theta)^-1 s(theta)            # s: the score, I: the observed information (user units)
theta <- theta + a * step              # a = 1, halved until the total loss does not increase
```

The iteration is `keras_mle.newton`'s (which `MaximumLikelihoodModel.refine` calls too); this
module is the public entry point that checks its model first. The refined parameters are written
back with `model.set_params` (rounded to the variables' dtype: use a float64 model, or `adapt`,
to keep float64 precision). Fixed components (a model's `fixed=`) stay at their values.
"""

from __future__ import annotations

from keras_mle import newton
from keras_mle.models import MaximumLikelihoodModel
from keras_mle.newton import RefineReport

__all__ = ["refine", "RefineReport"]


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

    `keras_mle.newton.refine` (its arguments, its report and its warning), for a
    `keras_mle.MaximumLikelihoodModel`: another model is a `TypeError`.

    Example:

    ```python
    report = keras_mle.refine(model, x, y)
    report.converged, report.steps
    ```
    """
    if not isinstance(model, MaximumLikelihoodModel):
        raise TypeError(f"model must be a keras_mle model, got {type(model).__name__}.")
    return newton.refine(model, x, y, sample_weight, max_steps=max_steps, tol=tol)
