"""The command's answer: the inference summary of a model on the columns it was given.

The summary's rows are the model's own labels (`model.param_names`: `m[income]` for a slope
whose model has feature names, `b`, `sigma`), the one naming scheme of every view.
"""

from __future__ import annotations

import warnings

import numpy as np

import keras_mle
from keras_mle_cli.errors import UsageError

__all__ = ["arrays", "first_warning", "summary"]


def arrays(columns):
    """`(x, y)` of `Columns` in float64; for a sample, `x` is a vector and `y` is `None`."""
    x = np.asarray([columns.values[c] for c in columns.x], np.float64).T
    if columns.y is None:
        return x[:, 0], None
    return x, np.asarray(columns.values[columns.y], np.float64)


def summary(model, x, y=None, *, cov_type="nonrobust"):
    """`keras_mle.inference(model, x, y)`; data it refuses are a `UsageError`.

    Its warnings are not repeated on stderr: a result that is not at the optimum says so in
    `result.warnings`, which the callers turn into their error.
    """
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        try:
            return keras_mle.inference(model, x, y, cov_type=cov_type)
        except (TypeError, ValueError) as error:
            raise UsageError(error) from None


def first_warning(result) -> str:
    """The first of `result.warnings`, for a one-line error."""
    return result.warnings[0] if result.warnings else "see the summary"
