"""The command's answer: the inference summary of a model on the columns it was given.

The summary's rows are the model's own labels (`model.param_names`: `m[income]` for a slope
whose model has feature names, `b`, `sigma`), the one naming scheme of every view. Its options
(`--convention`, `--cov-type`, `--groups`) are `keras_mle.inference`'s `convention`, `cov_type`
and `groups`; a message of `inference` that names one of those arguments names the option
instead (`--convention ols`, not `convention='ols'`).
"""

from __future__ import annotations

import re
import warnings

import numpy as np

import keras_mle
from keras_mle import conventions, covariance
from keras_mle_cli.errors import UsageError

__all__ = [
    "arrays",
    "check_summary",
    "command_line_words",
    "first_warning",
    "summary",
    "summary_options",
]

#: `convention='ols'`, `cov_type='HC3'`, `groups=` in a message of `keras_mle.inference`.
_PYTHON_ARGUMENT = re.compile(r"\b(convention|cov_type|groups)=(['\"]?)([\w.]*)\2")


def arrays(columns):
    """`(x, y)` of `Columns` in float64; for a sample, `x` is a vector and `y` is `None`."""
    x = np.asarray([columns.values[c] for c in columns.x], np.float64).T
    if columns.y is None:
        return x[:, 0], None
    return x, np.asarray(columns.values[columns.y], np.float64)


def summary_options(args, inputs) -> dict:
    """`inference`'s `convention`, `cov_type` and `groups` from the command's options.

    `groups` are the codes `0..G-1` of the `--groups` column's labels (read with the data, so
    one per row kept), or `None`.
    """
    groups = None
    if args.groups is not None:
        labels = np.asarray(inputs.values[args.groups], np.float64)
        groups = np.unique(labels, return_inverse=True)[1].reshape(-1)
    return {"convention": args.convention or "auto", "cov_type": args.cov_type, "groups": groups}


def command_line_words(error) -> str:
    """`error`'s message with `inference`'s argument names as the options that set them."""

    def option(found):
        return f"--{found[1].replace('_', '-')} {found[3]}".rstrip()

    return _PYTHON_ARGUMENT.sub(option, str(error))


def check_summary(model, options) -> None:
    """Refuses, before training, a convention or covariance that `model` has not.

    `model` is built (adapted): a model's least-squares model is made from its shape.
    """
    try:
        convention, _ = conventions.resolve_convention(model, options["convention"])
        covariance.check_cov_type(model, convention, options["cov_type"], options["groups"])
    except ValueError as error:
        raise UsageError(command_line_words(error)) from None


def summary(model, x, y=None, **options):
    """`keras_mle.inference(model, x, y, **options)`; data it refuses are a `UsageError`.

    `options` are those of `summary_options` (defaults: `inference`'s). Its warnings are not
    repeated on stderr: a result that is not at the optimum says so in `result.warnings`, which
    the callers turn into their error.
    """
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        try:
            return keras_mle.inference(model, x, y, **options)
        except (TypeError, ValueError) as error:
            raise UsageError(command_line_words(error)) from None


def first_warning(result) -> str:
    """The first of `result.warnings`, for a one-line error."""
    return result.warnings[0] if result.warnings else "see the summary"
