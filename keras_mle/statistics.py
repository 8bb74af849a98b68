"""Statistics of a likelihood fit on fixed data: the numbers the callbacks log and stop on.

- `fit_statistics`: the log-likelihood (or MSE), the gradient norm of the training objective
  and the distance to a reference such as the closed-form MLE, as Python floats;
- `FitStatistics`: the same as tensors, from a function that can run inside a `tf.function`
  (once per epoch in `keras_mle.callbacks.ParameterTensorBoard` and `ConvergenceStopping`);
- `checked_data` and `flat_parameters`: the data argument of a callback, checked by the model,
  and every parameter component in one vector.

Everything is read through the model's public hooks (`compute_loss_and_gradients`,
`parameter_logs`, `params`, `sample_loss_kind`, `check_data`), so any
`keras_mle.MaximumLikelihoodModel` gets these statistics, with the closed form of
`model.closed_form` where it has one.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_mle import parameters

__all__ = [
    "fit_statistics",
    "FitStatistics",
    "is_squared_error",
    "checked_data",
    "flat_parameters",
]


def fit_statistics(model, x, y=None, sample_weight=None, closed_form=None) -> dict:
    """Statistics of the current fit on the data `(x, y, sample_weight)`, as Python floats.

    - `mse` `= sum_i w_i * (y_i - y_hat_i)^2 / sum_i w_i` for a model trained by squared error
      (`model.sample_loss_kind == "squared_error"`, e.g. `LinearRegression`), or else
      `log_likelihood` `= -sum_i w_i * nll_i` (the full constant included: the articles' `LL`);
    - `gradient_norm`: the global norm of the gradient of the training objective (the weighted
      mean loss) with respect to the trainable variables, i.e. in the optimizer's coordinates
      (`log sigma` for a positive parameter);
    - `distance_to_closed_form`: `||theta - theta_hat||_2` over the components of the parameters
      in `closed_form`, when it is given.

    Args:
        model: A built `keras_mle.MaximumLikelihoodModel`.
        x: Inputs, or the sample of a model of a sample, checked by `model.check_data`.
        y: Targets, or `None` for a model of a sample. Defaults to `None`.
        sample_weight: Per-sample weights. Defaults to `None` (all 1).
        closed_form: Reference parameter values, a dict like `model.params` (any subset of it),
            e.g. `model.closed_form(x, y)`. Defaults to `None` (no distance).

    Returns:
        A dict of floats with the keys above.
    """
    statistics = FitStatistics(model, x, y, sample_weight, closed_form)
    return {name: float(value) for name, value in statistics.tensors().items()}


class FitStatistics:
    """The tensors of `fit_statistics` on fixed data, for repeated use during training.

    The data are converted to tensors once; `tensors()` reads the model's current parameters at
    each call, so it can be wrapped in a `tf.function` and called every epoch.

    Args:
        model: A built `keras_mle.MaximumLikelihoodModel`.
        x: Inputs, already checked by `model.check_data` (see `checked_data`).
        y: Targets, or `None`. Defaults to `None`.
        sample_weight: Per-sample weights, or `None`. Defaults to `None`.
        closed_form: Reference parameter values, a dict like `model.params`. Defaults to `None`.

    Raises:
        ValueError: if the model is not built, or a `closed_form` entry names no parameter or has
            another number of components.
    """

    def __init__(self, model, x, y=None, sample_weight=None, closed_form=None):
        if not model.built:
            raise ValueError(
                f"{type(model).__name__} is not built: call it on a batch (model(x[:2])) or "
                "fit it before computing fit statistics."
            )
        self.model = model
        self.inputs = tuple(None if a is None else tf.constant(a) for a in (x, y, sample_weight))
        self.reference = None if closed_form is None else _log_entries(model, closed_form)

    def tensors(self) -> dict:
        """The statistics of the current parameters, as float64 scalar tensors."""
        _, gradients, sample_losses, weights = self.model.compute_loss_and_gradients(*self.inputs)
        weighted_sum = tf.reduce_sum(tf.cast(sample_losses * weights, tf.float64))
        if is_squared_error(self.model):
            stats = {"mse": weighted_sum / tf.reduce_sum(tf.cast(weights, tf.float64))}
        else:
            stats = {"log_likelihood": -weighted_sum}
        stats["gradient_norm"] = tf.cast(tf.linalg.global_norm(gradients), tf.float64)
        if self.reference:
            logs = self.model.parameter_logs()
            squares = [
                tf.square(tf.cast(logs[name], tf.float64) - value)
                for name, value in self.reference.items()
            ]
            stats["distance_to_closed_form"] = tf.sqrt(tf.add_n(squares))
        return stats


def is_squared_error(model) -> bool:
    """Whether the model is trained by squared error, so that its statistic is the MSE."""
    return model.sample_loss_kind == "squared_error"


def checked_data(model, data) -> tuple:
    """A callback's `data` argument as the arrays `(x, y, sample_weight)`, checked by the model.

    Args:
        model: The model the data are for.
        data: `x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)`; for a model of a sample, `x` is
            the sample.

    Returns:
        `model.check_data(x, y, sample_weight)`.
    """
    if isinstance(data, (tuple, list)):
        if not 1 <= len(data) <= 3:
            raise ValueError(
                f"data must be x, (x, y) or (x, y, sample_weight), got {len(data)} items."
            )
        data = tuple(data) + (None,) * (3 - len(data))
    else:
        data = (data, None, None)
    return model.check_data(*data)


def flat_parameters(model) -> np.ndarray:
    """Every component of `model.params`, in float64, in the order of `parameter_names`."""
    params = model.params
    if not params:
        raise ValueError(f"{type(model).__name__} has no parameters yet: it is not built.")
    return parameters.flatten(params)


def _log_entries(model, values: dict) -> dict:
    """A dict like `model.params` flattened to the keys of `model.parameter_logs()`."""
    sizes = {name: np.size(value) for name, value in model.params.items()}
    entries = {}
    for name, value in values.items():
        if name not in sizes or np.size(value) != sizes[name]:
            raise ValueError(
                f"closed_form[{name!r}] does not match a parameter of {type(model).__name__} "
                f"(parameters and sizes: {sizes})."
            )
        flat = parameters.flatten({name: value})
        labels = model.component_names(name)
        entries.update({label: float(v) for label, v in zip(labels, flat, strict=True)})
    return entries
