"""Warnings that say a fit went wrong and what to do about it."""

from __future__ import annotations

__all__ = ["DivergenceWarning"]


class DivergenceWarning(RuntimeWarning):
    """Training diverged (a non-finite loss, gradient or parameter) and was stopped.

    The parameters and optimizer state are those of the last finite step. Try a smaller learning
    rate, or `model.adapt(x, y)` before `fit` so that the data are well scaled.
    """
