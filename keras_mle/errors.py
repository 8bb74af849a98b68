"""Warnings that say a fit went wrong and what to do about it."""

from __future__ import annotations

__all__ = ["DivergenceWarning", "InferenceWarning"]


class DivergenceWarning(RuntimeWarning):
    """Training diverged (a non-finite loss, gradient or parameter) and was stopped.

    The parameters and optimizer state are those of the last finite step. Try a smaller learning
    rate, or `model.adapt(x, y)` before `fit` so that the data are well scaled.
    """


class InferenceWarning(UserWarning):
    """The fit has not converged, or the Hessian is not positive definite.

    Raised by `keras_mle.inference` (whose numbers are then flagged, or NaN) and by `refine` when
    it runs out of Newton steps; also importable from `keras_mle.inference`.
    """
