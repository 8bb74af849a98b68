"""The one base class that owns the training maths of every keras_mle model."""

from __future__ import annotations

import contextlib
import math

import keras
import numpy as np
import tensorflow as tf

from keras_mle import data as data_lib
from keras_mle.models.adaptation import Adaptation

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
    #: What `sample_loss` returns: `"nll"`, or `"squared_error"` (OLS conventions in inference).
    sample_loss_kind = "nll"
    #: Role of each parameter under `adapt` ("slope", "intercept", "scale"); None: no `adapt`.
    parameter_roles = None

    def __init__(self, adaptation=None, **kwargs):
        super().__init__(**kwargs)
        self._parameter_names = []
        self._positive_names = set()
        self.loss_tracker = keras.metrics.Mean(name="loss", dtype=self.dtype_policy.variable_dtype)
        self._adaptation = None if adaptation is None else Adaptation.from_config(adaptation)

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
            # A NumPy float64: Keras casts a Python float through float32 on its way to float64.
            initializer = keras.initializers.Constant(np.float64(value))
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
        setattr(self, f"_{name}_initializer", keras.initializers.get(initializer))
        return variable

    def params_tensors(self) -> dict:
        """Natural parameter values as tensors (differentiable w.r.t. the variables)."""
        result = {}
        for name in self._parameter_names:
            variable = getattr(self, f"_{name}_variable")
            value = tf.convert_to_tensor(variable)
            result[name] = tf.exp(value) if name in self._positive_names else value
        return result

    def user_params_tensors(self, dtype=None) -> dict:
        """Natural parameter values in the user's units, as tensors (of `dtype` if given).

        Without `adapt` these are `params_tensors()`. After it, the variables hold working-space
        values and this maps them back, in float64 (see `keras_mle.models.adaptation`).
        """
        params = self.params_tensors()
        if self._adaptation is not None:
            params = self._adaptation.to_user(params, self.parameter_roles)
        if dtype is not None:
            params = {name: tf.cast(value, dtype) for name, value in params.items()}
        return params

    @property
    def params(self) -> dict:
        """Natural parameter values as NumPy arrays, e.g. `{"mu": array(2.02), "sigma": ...}`.

        In the user's units; float64 after `adapt`, else the model's dtype.
        """
        return {name: np.asarray(value) for name, value in self.user_params_tensors().items()}

    def parameter_logs(self) -> dict:
        """Parameters as scalar log entries: `name` for a scalar, `name_i` for vector components."""
        logs = {}
        for name, value in self.user_params_tensors(self.compute_dtype).items():
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
            batch, its gradients w.r.t. `trainable_variables`, and the per-sample losses (in the
            user's units, see `adapt`) and weights for metrics.
        """
        self._build_for(x)
        x, y = self.working_data(x, self._flat_targets(y))
        with tf.GradientTape() as tape:
            sample_losses = self.sample_loss(self.params_tensors(), x, y)
            loss, weights = self._normalize(sample_losses, sample_weight)
        gradients = tape.gradient(loss, self.trainable_variables)
        return loss, gradients, self.user_losses(sample_losses), weights

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

    # ---------------------------------------------------------------- adapt
    @property
    def adaptation(self):
        """The `keras_mle.models.adaptation.Adaptation` fixed by `adapt`, or `None`."""
        return self._adaptation

    def adapt(self, x, y=None, *, reset: bool = True):
        """Fixes a float64 centring and whitening of the data; training then runs in that space.

        As with `keras.layers.Normalization.adapt`, the statistics are computed once, here, and
        saved with the model. The features are centred and whitened (`x - mean`, times the
        inverse of the R factor of its QR decomposition) and the targets centred and scaled by
        their standard deviation (for a model of a sample, the sample is). The variables then
        hold *working-space* parameters, on which the squared-error Hessian is `2 I`: plain SGD
        with learning rate 0.5 solves least squares in one step, whatever the units of `x`.
        `model.params`, `predict`, the reported loss and `keras_mle.inference` stay in the user's
        units (see `keras_mle.models.adaptation` for the formulas).

        Call it before `fit`; datasets passed to `fit` are transformed inside the model, so any
        input path works. Give float64 arrays when the data carry more digits than float32
        (e.g. values near 1e6): the statistics are computed in float64 from what is passed.

        Units are then no obstacle, but a likelihood can still be hard by nature: for a
        Gaussian regression the NLL's curvature in the slopes is `1 / (1 - R^2)` adapted units
        against 2 for `log(sigma)`, so SGD needs `learning_rate < 2 (1 - R^2)` and a nearly
        exact line (R^2 -> 1) is slow for any first-order optimizer. Least squares
        (`LinearRegression`, whose `inference` is the OLS one) has no such coupling.

        Args:
            x: Features (for a model of a sample: the samples).
            y: Targets, or `None` for a model of a sample. Defaults to `None`.
            reset: Re-initialise the parameters in the working space, so that initializers and
                initial values are read in adapted units (as for a layer after a
                `Normalization`): e.g. `GaussianMLE(mu=0, sigma=1)` then starts at the sample's
                mean and standard deviation. `False` keeps `model.params` unchanged. Defaults
                to `True`.

        Returns:
            The model.
        """
        if self.parameter_roles is None:
            raise NotImplementedError(
                f"{type(self).__name__} does not support adapt(): set parameter_roles."
            )
        self.check_data(x, y)
        x, y = data_lib.check_xy(x, y, dtype=np.float64, x_name=self.x_name)
        if not self.built:
            self._build_for(tf.constant(x[:2], dtype=self.compute_dtype))
        adaptation = Adaptation.from_data(x, y if self.takes_targets else None)
        adaptation.check_roles(self.parameter_roles, self._parameter_names)
        if reset:
            values = {}
            for name in self._parameter_names:
                variable = getattr(self, f"_{name}_variable")
                initializer = getattr(self, f"_{name}_initializer")
                values[name] = initializer(shape=variable.shape, dtype=variable.dtype)
            self._adaptation = adaptation
            for name, value in values.items():
                getattr(self, f"_{name}_variable").assign(value)
        else:
            working = adaptation.to_working(self.user_params_tensors(), self.parameter_roles)
            self._adaptation = adaptation
            for name, value in working.items():
                if name in self._positive_names:
                    value = tf.math.log(value)
                variable = getattr(self, f"_{name}_variable")
                variable.assign(tf.cast(value, variable.dtype))
        # Compiled steps hold the old statistics as constants.
        self.train_function = self.test_function = self.predict_function = None
        return self

    @property
    def data_dtype(self) -> str:
        """The dtype data are fed in: the model's, or float64 once adapted.

        An adapted model receives float64 data and centres them in float64 inside the step,
        before casting to its compute dtype: a float32 model then loses nothing to the rounding
        of data with a large offset (values near 1e6 are spaced 0.06 apart in float32).
        """
        return "float64" if self._adaptation is not None else self.dtype_policy.variable_dtype

    def working_data(self, x, y=None, dtype=None):
        """`(x, y)` in the working space of `adapt`, as `dtype` (default: the compute dtype).

        Unchanged when the model is not adapted.
        """
        if self._adaptation is None:
            return x, y
        return self._adaptation.transform(x, y, dtype=dtype or self.compute_dtype)

    def user_losses(self, sample_losses):
        """Per-sample working-space losses in the user's units (unchanged when not adapted)."""
        if self._adaptation is None:
            return sample_losses
        return self._adaptation.loss_to_user(sample_losses, self.sample_loss_kind)

    def get_config(self):
        config = super().get_config()
        if self._adaptation is not None:
            config["adaptation"] = self._adaptation.get_config()
        return config

    # ---------------------------------------------------------------- Keras hooks
    @property
    def metrics(self):
        return [self.loss_tracker]

    def train_step(self, data):
        if isinstance(data, dict) and data_lib.STACKED_KEY in data:
            if self.distribute_strategy.num_replicas_in_sync > 1:
                # Optimizer steps inside a tf.while_loop cannot merge_call across replicas.
                raise ValueError(
                    "x: keras_mle.data.epoch_dataset is a single-device fast path; under a "
                    "tf.distribute strategy pass the arrays to fit(x, y) instead."
                )
            self.train_batches(**data[data_lib.STACKED_KEY])
        else:
            self.apply_step(*self._unpack(data))
        return {"loss": self._loss_result(), **self.parameter_logs()}

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
        x, y, sample_weight = self._unpack(data)
        self._build_for(x)
        x, y = self.working_data(x, self._flat_targets(y))
        sample_losses = self.sample_loss(self.params_tensors(), x, y)
        _, weights = self._normalize(sample_losses, sample_weight)
        self.loss_tracker.update_state(self.user_losses(sample_losses), sample_weight=weights)
        return {"loss": self._loss_result()}

    # ---------------------------------------------------------------- input checks
    def check_data(self, x, y=None, sample_weight=None):
        """Validates in-memory data before any work; returns `(x, y, sample_weight)` as arrays.

        Raises `ValueError` (`TypeError` for non-numeric data) naming the argument.
        """
        dtype = self.data_dtype
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
            y = self._placeholder_targets(x, y, sample_weight)
        elif isinstance(x, tf.data.Dataset) and len(args) < 7:
            # Keras ignores `shuffle` for datasets, and warns when left at its default True.
            kwargs.setdefault("shuffle", False)
        if isinstance(validation_data, (tuple, list)):
            validation_data = self._check_validation(validation_data)
        with _floatx(self.data_dtype):
            return super().fit(
                x, y, *args, sample_weight=sample_weight, validation_data=validation_data, **kwargs
            )

    def evaluate(self, x=None, y=None, *args, sample_weight=None, **kwargs):
        # fit() passes its validation data, checked by `_check_validation`, with this flag.
        if _is_in_memory(x) and not kwargs.get("_use_cached_eval_dataset"):
            x, y, sample_weight = self.check_data(x, y, sample_weight)
            y = self._placeholder_targets(x, y, sample_weight)
        with _floatx(self.data_dtype):
            return super().evaluate(x, y, *args, sample_weight=sample_weight, **kwargs)

    def predict(self, x, *args, **kwargs):
        if _is_in_memory(x):
            x = data_lib.check_array(self.x_name, x, dtype=self.data_dtype)
        with _floatx(self.data_dtype):
            return super().predict(x, *args, **kwargs)

    def _loss_result(self):
        # Keras reports what the step returns, and inside a replica the tracker holds only that
        # replica's share: all-reduce it, or the log is a mean of per-replica means.
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return self.loss_tracker.result()
        tracker = self.loss_tracker
        share = tf.stack([tf.convert_to_tensor(tracker.total), tf.convert_to_tensor(tracker.count)])
        total, count = tf.unstack(context.all_reduce(tf.distribute.ReduceOp.SUM, share))
        return tf.math.divide_no_nan(total, count)

    def _unpack(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        # A model of a sample ignores the placeholder targets of `_placeholder_targets`.
        return x, (y if self.takes_targets else None), sample_weight

    def _placeholder_targets(self, x, y, sample_weight):
        # Keras drops `sample_weight` when `y` is None (`pack_x_y_sample_weight`): a model of a
        # sample carries zeros in the place of `y`, which `_unpack` discards in the steps.
        if self.takes_targets or y is not None or sample_weight is None:
            return y
        return np.zeros(len(x), dtype=x.dtype)

    def _check_validation(self, validation_data):
        if not self.takes_targets and len(validation_data) == 1:
            x, y, w = validation_data[0], None, None
        else:
            x, y, w = keras.utils.unpack_x_y_sample_weight(tuple(validation_data))
        try:
            checked = self.check_data(x, y, w)
        except (TypeError, ValueError) as error:
            raise type(error)(f"validation_data: {error}") from None
        if checked[1] is None and checked[2] is None:
            return (checked[0],)
        if checked[1] is None:
            return (checked[0], self._placeholder_targets(*checked), checked[2])
        return checked if checked[2] is not None else checked[:2]


def _is_in_memory(x):
    return not isinstance(x, (tf.data.Dataset, keras.utils.PyDataset)) and not hasattr(
        x, "__next__"
    )


@contextlib.contextmanager
def _floatx(dtype):
    """Keras' data adapter casts float arrays to `floatx()`: make it the model's dtype meanwhile.

    Without this a `dtype="float64"` model under the default float32 `floatx` trains on data
    rounded to float32.
    """
    previous = keras.config.floatx()
    if dtype == previous:
        yield
        return
    keras.config.set_floatx(dtype)
    try:
        yield
    finally:
        keras.config.set_floatx(previous)
