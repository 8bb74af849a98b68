"""The one base class that owns the training maths of every keras_mle model."""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from keras_mle import data as data_lib

__all__ = ["MaximumLikelihoodModel"]


class MaximumLikelihoodModel(keras.Model):
    """A Keras model fitted by minimising a per-sample loss (an NLL, or a squared error).

    A subclass declares its parameters with `add_parameter` (in `__init__` or `build`) and writes
    its formula in `sample_loss(params, x, y)`, the per-sample negative log-likelihood (or squared
    error) as a function of the *natural* parameter values. It then gets `fit`, `evaluate`,
    `predict`, `save`/`load`, the custom loops of `keras_mle.loops` and `model.params` for free.

    The training objective of a batch is

    ```python
    loss = sum(w_i * sample_loss_i) / sum(w_i)      # w_i = sample weights, default 1
    ```

    Under `tf.distribute`, each replica divides its own weighted *sum* by the *global* weight
    total (all-reduced), because Keras all-reduces gradients with SUM: the update is then exactly
    the single-device one, uneven last batches included.

    Positive parameters (`positive=True`, e.g. a standard deviation) are stored as their log, so
    they stay strictly positive under any optimizer step; `model.params` and `sample_loss` see the
    natural value `exp(log_value)`.

    Example: a Poisson regression in a few lines (see `examples/poisson_regression.py`).

    ```python
    class PoissonRegression(keras_mle.MaximumLikelihoodModel):
        def build(self, input_shape):
            self.add_parameter("w", shape=(1,))
            self.add_parameter("b")

        def call(self, x):
            return tf.exp(x * self.params_tensors()["w"] + ...)

        def sample_loss(self, params, x, y):
            log_rate = ...
            return tf.exp(log_rate) - y * log_rate + tf.math.lgamma(y + 1.0)
    ```
    """

    #: Whether `fit`/`evaluate` take targets `y` (False for models of a sample, like GaussianMLE).
    takes_targets = True
    #: Name of the first data argument in error messages.
    x_name = "x"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._parameter_names = []
        self._positive_names = set()
        self.loss_tracker = keras.metrics.Mean(name="loss")

    # ---------------------------------------------------------------- parameters
    def add_parameter(self, name: str, shape=(), initializer="zeros", *, positive: bool = False):
        """Creates a trainable parameter, reported under `name` in `params` and the logs.

        Args:
            name: Parameter name (a key of `model.params`).
            shape: Shape of the parameter. Defaults to `()` (a scalar).
            initializer: Keras initializer, or a number used as the initial *natural* value.
                Defaults to `"zeros"`.
            positive: Store `log(value)` so that the value stays > 0. A numeric initializer must
                then be > 0. Defaults to `False`.

        Returns:
            The underlying `keras.Variable` (holding `log(value)` when `positive`).
        """
        if isinstance(initializer, (int, float, np.number)):
            value = float(initializer)
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}.")
            if positive:
                if value <= 0:
                    raise ValueError(f"{name} must be > 0, got {value!r}.")
                value = math.log(value)
            initializer = keras.initializers.Constant(value)
        variable = self.add_weight(
            name=f"log_{name}" if positive else name,
            shape=shape,
            initializer=initializer,
            trainable=True,
        )
        self._parameter_names.append(name)
        if positive:
            self._positive_names.add(name)
        setattr(self, f"_{name}_variable", variable)
        return variable

    def params_tensors(self) -> dict:
        """Natural parameter values as tensors (differentiable w.r.t. the variables)."""
        result = {}
        for name in self._parameter_names:
            variable = getattr(self, f"_{name}_variable")
            value = tf.convert_to_tensor(variable)
            result[name] = tf.exp(value) if name in self._positive_names else value
        return result

    @property
    def params(self) -> dict:
        """Natural parameter values as NumPy arrays, e.g. `{"mu": array(2.02), "sigma": ...}`."""
        return {name: np.asarray(value) for name, value in self.params_tensors().items()}

    def parameter_logs(self) -> dict:
        """Parameters as scalar log entries: `name` for a scalar, `name_i` for vector components."""
        logs = {}
        for name, value in self.params_tensors().items():
            size = value.shape.num_elements()
            if size == 1:
                logs[name] = tf.reshape(value, [])
            else:
                flat = tf.reshape(value, [-1])
                for i in range(size):
                    logs[f"{name}_{i}"] = flat[i]
        return logs

    # ---------------------------------------------------------------- the maths
    def sample_loss(self, params: dict, x, y):
        """Per-sample loss (negative log-likelihood or squared error), shape `(B,)`.

        Args:
            params: Natural parameter values, as from `params_tensors()`.
            x: A batch of inputs (for a model of a sample: the observations).
            y: A batch of targets, shape `(B,)`, or `None`.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement sample_loss().")

    def compute_loss_and_gradients(self, x, y=None, sample_weight=None):
        """The training maths shared by `train_step` and `keras_mle.loops`.

        Returns:
            `(loss, gradients, sample_losses, weights)`: the scalar objective of this (replica's)
            batch, its gradients w.r.t. `trainable_variables`, and the per-sample losses and
            weights for metrics.
        """
        self._build_for(x)
        with tf.GradientTape() as tape:
            sample_losses = self.sample_loss(self.params_tensors(), x, self._flat_targets(y))
            loss, weights = self._normalize(sample_losses, sample_weight)
        gradients = tape.gradient(loss, self.trainable_variables)
        return loss, gradients, sample_losses, weights

    def _normalize(self, sample_losses, sample_weight):
        if sample_weight is None:
            weights = tf.ones_like(sample_losses)
        else:
            weights = tf.reshape(tf.cast(sample_weight, sample_losses.dtype), [-1])
        count = tf.reduce_sum(weights)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            count = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
        return tf.reduce_sum(sample_losses * weights) / count, weights

    def _build_for(self, x):
        # Without a distribution strategy Keras defers building to the first traced step, and
        # the steps here read parameters directly rather than through `self(x)`.
        if not self.built:
            self(x)

    @staticmethod
    def _flat_targets(y):
        # (B, 1) targets against (B,) predictions would broadcast to (B, B): flatten them.
        if y is not None and y.shape.rank == 2 and y.shape[1] == 1:
            y = y[:, 0]
        return y

    # ---------------------------------------------------------------- Keras hooks
    @property
    def metrics(self):
        return [self.loss_tracker]

    def train_step(self, data):
        if isinstance(data, dict) and data_lib.STACKED_KEY in data:
            self.train_batches(**data[data_lib.STACKED_KEY])
        else:
            self.apply_step(*keras.utils.unpack_x_y_sample_weight(data))
        return {"loss": self.loss_tracker.result(), **self.parameter_logs()}

    def apply_step(self, x, y=None, sample_weight=None):
        """One optimizer step on one batch, with the loss tracker updated.

        This is `train_step` without Keras' data unpacking; the custom loops call it directly.
        """
        _, gradients, sample_losses, weights = self.compute_loss_and_gradients(x, y, sample_weight)
        self.optimizer.apply(gradients, self.trainable_variables)
        self.loss_tracker.update_state(sample_losses, sample_weight=weights)

    def train_batches(self, x, y=None, sample_weight=None):
        """One `apply_step` per slice `x[i]` of stacked batches, in a `tf.while_loop`.

        `x` has shape `(num_batches, batch_size, ...)` (see `keras_mle.data.stack_batches`). Used
        in-graph by the `"function"`/`"xla"` loops and, through `keras_mle.data.epoch_dataset`,
        by `fit()` so that a whole epoch is one compiled call.
        """
        self._build_for(x[0])

        def body(i):
            self.apply_step(
                x[i],
                None if y is None else y[i],
                None if sample_weight is None else sample_weight[i],
            )
            return (i + 1,)

        tf.while_loop(lambda i: i < tf.shape(x)[0], body, (tf.constant(0),))

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        self._build_for(x)
        sample_losses = self.sample_loss(self.params_tensors(), x, self._flat_targets(y))
        _, weights = self._normalize(sample_losses, sample_weight)
        self.loss_tracker.update_state(sample_losses, sample_weight=weights)
        return {"loss": self.loss_tracker.result()}

    # ---------------------------------------------------------------- input checks
    def check_data(self, x, y=None, sample_weight=None):
        """Validates in-memory data before any work; returns `(x, y, sample_weight)` as arrays.

        Raises `ValueError` (`TypeError` for non-numeric data) naming the argument.
        """
        dtype = self.dtype_policy.variable_dtype
        if not self.takes_targets and y is not None:
            raise ValueError(f"y must be None: {type(self).__name__} fits a sample, not targets.")
        x, y = data_lib.check_xy(x, y, dtype=dtype, x_name=self.x_name)
        if self.takes_targets and y is None:
            raise ValueError(f"y is required: {type(self).__name__} fits targets y given x.")
        sample_weight = data_lib.check_sample_weight(sample_weight, len(x), dtype=dtype)
        return x, y, sample_weight

    def fit(self, x=None, y=None, *args, sample_weight=None, validation_data=None, **kwargs):
        if _is_in_memory(x):
            x, y, sample_weight = self.check_data(x, y, sample_weight)
        if isinstance(validation_data, (tuple, list)):
            validation_data = self._check_validation(validation_data)
        return super().fit(
            x, y, *args, sample_weight=sample_weight, validation_data=validation_data, **kwargs
        )

    def evaluate(self, x=None, y=None, *args, sample_weight=None, **kwargs):
        if _is_in_memory(x):
            x, y, sample_weight = self.check_data(x, y, sample_weight)
        return super().evaluate(x, y, *args, sample_weight=sample_weight, **kwargs)

    def predict(self, x, *args, **kwargs):
        if _is_in_memory(x):
            x = data_lib.check_array(self.x_name, x, dtype=self.dtype_policy.variable_dtype)
        return super().predict(x, *args, **kwargs)

    def _check_validation(self, validation_data):
        if not self.takes_targets and len(validation_data) == 1:
            x, y, w = validation_data[0], None, None
        else:
            x, y, w = keras.utils.unpack_x_y_sample_weight(tuple(validation_data))
        try:
            checked = self.check_data(x, y, w)
        except (TypeError, ValueError) as error:
            raise type(error)(f"validation_data: {error}") from None
        if checked[1] is None:
            return (checked[0],)
        return checked if checked[2] is not None else checked[:2]


def _is_in_memory(x):
    return not isinstance(x, (tf.data.Dataset, keras.utils.PyDataset)) and not hasattr(
        x, "__next__"
    )
