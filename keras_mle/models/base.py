"""The one base class that owns the training maths and the statistics of every keras_mle model."""

from __future__ import annotations

import dataclasses
import math
import typing
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_mle import checkpoint
from keras_mle import data as data_lib
from keras_mle.models.adaptation import Adaptation, DataMoments
from keras_mle.models.input_checks import InputCheck, InputCheckCallback
from keras_mle.parameters import Parameter

__all__ = ["MaximumLikelihoodModel", "Parameter", "LikelihoodDerivatives"]


@dataclasses.dataclass(frozen=True)
class LikelihoodDerivatives:
    """The model's loss and its derivatives on some data, in float64 (`likelihood_derivatives`).

    The loss is the total `L(theta) = sum_i w_i l_i(theta)` of the per-sample losses `l_i` (the
    negative log-likelihood, or the squared error for a least-squares model), in the user's units.
    `theta` are the *estimation coordinates*: the natural parameters (`sigma`, not `log(sigma)`)
    of the working space of `adapt`, which are the user's parameters when the model is not
    adapted. `jacobian` is `d theta_user / d theta`; it is constant, since `adapt` is affine.

    Fixed components (the model's `fixed=`) are components of `theta` like the others: the
    gradient and Hessian cover them too (the gradient there is the constraint's multiplier), and
    `fixed` marks them; the statistics of the free parameters are the blocks over `free`.

    Attributes:
        names: Names of the components of `theta`, e.g. `("m_0", "m_1", "b")` (the model's
            `param_names`, e.g. `m[income]` with feature names).
        params: The user's parameter values, flattened in that order.
        sample_losses: `l_i`, shape `(n,)`.
        weights: `w_i`, shape `(n,)`.
        gradient: `dL / d theta`, shape `(p,)`.
        hessian: `d^2 L / d theta^2`, shape `(p, p)`, or `None` when not computed.
        jacobian: `d theta_user / d theta`, shape `(p, p)`.
        fixed: Boolean mask of the fixed components, shape `(p,)`; `None`: all free.
    """

    names: tuple
    params: np.ndarray
    sample_losses: np.ndarray
    weights: np.ndarray
    gradient: np.ndarray
    hessian: np.ndarray | None
    jacobian: np.ndarray
    fixed: np.ndarray | None = None

    @property
    def nobs(self) -> float:
        """`sum_i w_i`: the number of observations (frequency weights)."""
        return float(np.sum(self.weights))

    @property
    def free(self) -> np.ndarray:
        """Indices of the free (estimated) components."""
        if self.fixed is None:
            return np.arange(len(self.params))
        return np.flatnonzero(~self.fixed)

    @property
    def total(self) -> float:
        """`L = sum_i w_i l_i`."""
        return float(self.weights @ self.sample_losses)

    @property
    def score(self) -> np.ndarray:
        """`-dL / d theta_user`: the score (gradient of the log-likelihood) in user units."""
        return -np.linalg.solve(self.jacobian.T, self.gradient)

    @property
    def information(self) -> np.ndarray:
        """`d^2 L / d theta_user^2`: the observed information in user units."""
        if self.hessian is None:
            raise ValueError("the Hessian was not computed (hessian=False).")
        inverse = np.linalg.inv(self.jacobian)
        return inverse.T @ self.hessian @ inverse


@dataclasses.dataclass(frozen=True)
class StreamedDerivatives(LikelihoodDerivatives):
    """`LikelihoodDerivatives` summed over the batches of a dataset (`accumulate_derivatives`).

    The gradient and Hessian are sums over the samples, so the batches' add up; the per-sample
    losses and weights are not kept (`sample_losses` and `weights` are empty), only their
    weighted sum `loss` (the total `L`) and `weight_sum` (`nobs`).

    Attributes:
        loss: `L = sum_i w_i l_i` over all batches.
        weight_sum: `sum_i w_i`.
        rows: Number of rows read.
        batches: Number of batches with a positive weight.
    """

    loss: float = 0.0
    weight_sum: float = 0.0
    rows: int = 0
    batches: int = 0

    @property
    def total(self) -> float:
        return self.loss

    @property
    def nobs(self) -> float:
        return self.weight_sum


class MaximumLikelihoodModel(keras.Model):
    """A Keras model fitted by minimising a per-sample loss (an NLL, or a squared error).

    A subclass declares its parameters with `add_parameter` (in `__init__` or `build`) and writes
    its formula in `sample_loss(params, x, y)`, the per-sample negative log-likelihood (or squared
    error) as a function of the *natural* parameter values. It then gets `fit`, `evaluate`,
    `predict`, `save`/`load`, the custom loops of `keras_mle.loops`, `model.params`, and the
    statistics hooks (`per_sample_loss`, `score`, `observed_information`,
    `likelihood_derivatives`) that `keras_mle.inference` and the callbacks are built on. Where the
    MLE has a closed form, `closed_form` returns it.

    The training objective of a batch is

    ```python
    loss = sum(w_i * sample_loss_i) / sum(w_i)      # w_i = sample weights, default 1
    ```

    Under `tf.distribute`, each replica divides its own weighted *sum* by the *global* weight
    total (all-reduced), because Keras all-reduces gradients with SUM: the update is then exactly
    the single-device one, uneven last batches included. Under mixed precision the loss is scaled
    by the optimizer (`optimizer.scale_loss`) before the gradients are taken, as in Keras' own
    `train_step`; the likelihood itself is computed in the variables' dtype (float32), as Keras
    advises for losses.

    Every step checks its batch: a batch with NaN or Inf values, or negative weights, is never
    applied, and training stops with a `ValueError` naming the argument, the epoch and the batch
    (in-memory arrays are checked before any work; this catches streamed data).

    Feature names (`feature_names=[...]`, or a pandas DataFrame's columns at the first `adapt`,
    `fit` or `check_data` that sees one) label the slopes in `param_names`, `parameter_logs`
    and `keras_mle.inference` (`m[income]`), and are saved with the model; a later DataFrame
    whose columns differ from them, in names or order, is a `ValueError`.

    Fixed parameters (`fixed={"m": [0.0, None], "sigma": 1.0}`: a value, or one per component
    with `None` for a free one) are held at their values: the optimizer never moves them (see
    `Parameter`), `adapt` keeps them fixed working coordinates, and `keras_mle.inference`
    reports them without standard errors and counts only the free components.

    Example: a Poisson regression in a few lines (see `examples/poisson_regression.py`).

    ```python
    class PoissonRegression(keras_mle.MaximumLikelihoodModel):
        def build(self, input_shape):
            self.add_parameter("w", shape=(1,))
            self.add_parameter("b")

        def call(self, x):
            params = self.user_params_tensors()
            return tf.exp(x * params["w"] + params["b"])

        def sample_loss(self, params, x, y):
            log_rate = x[:, 0] * params["w"][0] + params["b"]
            return tf.exp(log_rate) - y * log_rate + tf.math.lgamma(y + 1.0)
    ```
    """

    #: Whether `fit`/`evaluate` take targets `y` (False for models of a sample, like GaussianMLE).
    takes_targets = True
    #: Name of the first data argument in error messages.
    x_name = "x"
    #: Numbers of dimensions the inputs may have: `(1, 2)` for a feature matrix (one feature may
    #: come as a vector), or `None` for a network: any array of one dimension or more (images,
    #: sequences) or a dict of arrays (named inputs), whatever the network accepts.
    input_ndim = (1, 2)
    #: What `sample_loss` returns: `"nll"`, or `"squared_error"` (OLS conventions in inference).
    sample_loss_kind = "nll"
    #: Role of each parameter under `adapt` ("slope", "intercept", "scale"); None: no `adapt`.
    parameter_roles = None
    #: Whether `adapt` may centre and scale the targets (for a model of a sample: the sample).
    #: True only for location-scale likelihoods in `y` (Gaussian), whose parameters then map
    #: back exactly; other models (e.g. 0/1 targets) get their features whitened only.
    adapt_targets = False
    #: The `Adaptation` class `adapt` builds (and a loaded config restores): a model whose
    #: parameters have roles beyond `adaptation.ROLES` names a subclass that maps them.
    adaptation_class = Adaptation

    def __init__(self, adaptation=None, feature_names=None, fixed=None, **kwargs):
        _check_dtype(kwargs.get("dtype"))
        feature_names = _check_feature_names(feature_names)
        fixed = _check_fixed(fixed, type(self).parameter_roles)
        super().__init__(**kwargs)
        self._feature_names = feature_names
        self._fixed = fixed
        self._parameters = {}
        #: The seed of the rows' order in a shuffled `fit(x, y)` (drawn from NumPy's generator
        #: at the start of each `fit`; kept in a `BackupAndRestore` backup for its resume).
        self.shuffle_seed = None
        self.loss_tracker = keras.metrics.Mean(name="loss", dtype=self.likelihood_dtype)
        # Set by the steps when they refuse a batch; read by the fit/evaluate input-check callback.
        self.train_input_check = InputCheck(name="train_input_check")
        self.test_input_check = InputCheck(name="test_input_check")
        self._adaptation = (
            None if adaptation is None else self.adaptation_class.from_config(adaptation)
        )

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
            The underlying `keras.Variable` (holding `log(value)` when `positive`). When the
            model's `fixed` names this parameter, its fixed components are read from a second,
            non-trainable variable (see `Parameter`); wholly fixed, the variable is not
            trainable.

        Raises:
            ValueError: naming `fixed` if its entry for `name` has the wrong number of
                components, or is <= 0 for a `positive` parameter.
        """
        if name in self._parameters:
            raise ValueError(f"{type(self).__name__} already has a parameter {name!r}.")
        if isinstance(initializer, (int, float, np.number)) and not isinstance(initializer, bool):
            if positive:
                value = math.log(data_lib.check_positive_scalar(name, initializer))
            else:
                value = data_lib.check_finite_scalar(name, initializer)
            # A NumPy float64: Keras casts a Python float through float32 on its way to float64.
            initializer = keras.initializers.Constant(np.float64(value))
        initializer = keras.initializers.get(initializer)
        mask = values = None
        if name in self._fixed:
            mask, values = _fixed_arrays(name, self._fixed[name], shape, positive)
        stored_name = f"log_{name}" if positive else name
        variable = self.add_weight(
            name=stored_name,
            shape=shape,
            initializer=initializer,
            trainable=mask is None or not bool(np.all(mask)),
        )
        parameter = Parameter(name, variable, initializer, positive, mask, values)
        if mask is not None:
            parameter.fixed_variable = self.add_weight(
                name=f"fixed_{stored_name}", shape=shape, initializer="zeros", trainable=False
            )
            self._sync_fixed(parameter)
        self._parameters[name] = parameter
        return variable

    def _sync_fixed(self, parameter) -> None:
        """Writes a parameter's fixed values, mapped to the working space of `adapt`."""
        working = parameter.fixed_values
        if self._adaptation is not None:
            role = (self.parameter_roles or {}).get(parameter.name)
            if role is None:
                raise ValueError(f"fixed: {parameter.name!r} has no role in parameter_roles.")
            working = self._adaptation.fixed_to_working(role, working, parameter.fixed_mask)
        parameter.set_fixed_working(working)

    @property
    def fixed(self) -> dict:
        """The `fixed` argument, normalised: `{name: value or [value or None, ...]}`."""
        return {name: (list(v) if isinstance(v, list) else v) for name, v in self._fixed.items()}

    @property
    def feature_names(self) -> list | None:
        """Names of the features (a DataFrame's columns, or `feature_names=`), or `None`."""
        return None if self._feature_names is None else list(self._feature_names)

    def component_names(self, name: str) -> list:
        """Names of the flattened components of parameter `name`, as in `param_names`.

        A slope parameter (role `"slope"`) with one component per feature is labelled by the
        features, `m[income]`, when the model has `feature_names`; otherwise a one-component
        parameter is `name` and the components of a vector are `name_0`, `name_1`, ...
        """
        size = int(np.prod(self._parameters[name].variable.shape))
        features = self._feature_names
        if features and (self.parameter_roles or {}).get(name) == "slope":
            if size == len(features):
                return [f"{name}[{feature}]" for feature in features]
        return [name] if size == 1 else [f"{name}_{i}" for i in range(size)]

    @property
    def param_names(self) -> list:
        """Names of every parameter component, flattened in `parameter_names` order.

        E.g. `["m[income]", "m[age]", "b"]` with feature names, `["m_0", "m_1", "b"]` without.
        """
        return [label for name in self._parameters for label in self.component_names(name)]

    @property
    def fixed_mask(self) -> np.ndarray:
        """Boolean array over `param_names`: True for a fixed component."""
        masks = [
            np.zeros(int(np.prod(p.variable.shape)), bool)
            if p.fixed_mask is None
            else np.reshape(p.fixed_mask, -1)
            for p in self._parameters.values()
        ]
        return np.concatenate(masks) if masks else np.zeros(0, bool)

    def _check_fixed_names(self) -> None:
        unknown = sorted(set(self._fixed) - set(self._parameters))
        if unknown:
            raise ValueError(
                f"fixed: unknown parameter(s) {unknown}; {type(self).__name__} has "
                f"{self.parameter_names}."
            )

    @property
    def parameter_names(self) -> list:
        """Names of the parameters, in the order they were added (empty until built)."""
        return list(self._parameters)

    @property
    def likelihood_dtype(self) -> str:
        """The dtype of the likelihood maths: the variables' (float32 under mixed precision)."""
        return self.dtype_policy.variable_dtype

    def params_tensors(self) -> dict:
        """Natural parameter values as tensors (differentiable w.r.t. the variables).

        In the working space of `adapt` when the model is adapted (see `user_params_tensors`).
        """
        if self._fixed and self.built:
            self._check_fixed_names()
        return {name: parameter.value() for name, parameter in self._parameters.items()}

    def user_params_tensors(self, dtype=None) -> dict:
        """Natural parameter values in the user's units, as tensors (of `dtype` if given).

        Without `adapt` these are `params_tensors()`. After it, the variables hold working-space
        values and this maps them back, in float64 (see `keras_mle.models.adaptation`).
        """
        params = self.params_tensors()
        if self._adaptation is not None:
            params = self._adaptation.to_user(params, self.parameter_roles)
            # Exactly the fixed values, not their round trip through the working space.
            params = {
                name: self._parameters[name].with_fixed(value, working=False)
                for name, value in params.items()
            }
        if dtype is not None:
            params = {name: tf.cast(value, dtype) for name, value in params.items()}
        return params

    @property
    def params(self) -> dict:
        """Natural parameter values as NumPy arrays, e.g. `{"mu": array(2.02), "sigma": ...}`.

        In the user's units; float64 after `adapt`, else the model's dtype.
        """
        return {name: np.asarray(value) for name, value in self.user_params_tensors().items()}

    def set_params(self, params: dict) -> None:
        """Sets parameters from natural values in the user's units (any subset of `params`).

        A fixed component must be given its fixed value (up to rounding): it cannot be set.

        Raises:
            TypeError: naming `params` if it is not a dict, or a value is not numeric.
            ValueError: naming `params` if the model is not built yet, a name is unknown, a
                value has another size than its parameter, is NaN or Inf, or is <= 0 for a
                positive parameter (a standard deviation); nothing is changed then.
        """
        if not isinstance(params, dict):
            raise TypeError(
                f"params must be a dict {{parameter name: value}}, got {type(params).__name__} "
                f"{params!r}."
            )
        if not self._parameters:
            raise ValueError(
                f"params: {type(self).__name__} is not built yet, so it has no parameters to "
                "set: fit it, call model.build(input_shape), or call it on a batch "
                "(model(x[:2])) first."
            )
        unknown = sorted(set(params) - set(self._parameters), key=str)
        if unknown:
            raise ValueError(
                f"params: unknown parameter(s) {unknown}; have {self.parameter_names}."
            )
        params = {name: self._checked_param_value(name, value) for name, value in params.items()}
        for name, value in params.items():
            self._check_fixed_value(name, value)
        for name, value in self._working_values(params).items():
            if name in params:
                self._parameters[name].assign(value)
                if self._parameters[name].is_fixed:
                    self._sync_fixed(self._parameters[name])

    def _checked_param_value(self, name, value) -> np.ndarray:
        """A `set_params` value as a float64 array of the parameter's shape, or raises."""
        parameter = self._parameters[name]
        shape = tuple(parameter.variable.shape)
        try:
            array = np.asarray(value)
        except (TypeError, ValueError):
            array = np.asarray(None)
        if array.dtype.kind not in "iuf":
            raise TypeError(
                f"params[{name!r}] must be a number or an array of numbers, got {value!r}."
            )
        if array.size != math.prod(shape):
            raise ValueError(
                f"params[{name!r}] has shape {array.shape}, but {name!r} has shape {shape}."
            )
        array = array.astype(np.float64).reshape(shape)
        if not np.all(np.isfinite(array)):
            raise ValueError(f"params[{name!r}] must be finite, got {value!r}.")
        if parameter.positive and np.any(array <= 0):
            raise ValueError(
                f"params[{name!r}] must be > 0 ({name!r} is positive, stored as its log), "
                f"got {value!r}."
            )
        return array

    def _check_fixed_value(self, name, value) -> None:
        parameter = self._parameters[name]
        if not parameter.is_fixed:
            return
        mask, exact = parameter.fixed_mask, parameter.fixed_values
        try:
            given = np.broadcast_to(np.asarray(value, np.float64), mask.shape)
        except ValueError:
            return  # the shape error is raised by _working_values
        rounded = given.astype(parameter.variable.dtype) == exact.astype(parameter.variable.dtype)
        close = np.isclose(given, exact, rtol=1e-12, atol=1e-12) | rounded
        wrong = np.reshape(mask & ~close, -1)
        if np.any(wrong):
            labels = [n for n, bad in zip(self.component_names(name), wrong, strict=True) if bad]
            raise ValueError(
                f"params: {labels} are fixed (fixed={self.fixed}); give their fixed values "
                f"{np.reshape(exact, -1)[wrong].tolist()}, or build a model without fixed."
            )

    def parameter_logs(self) -> dict:
        """Parameters as scalar log entries, under the names of `param_names`.

        `name` for a scalar, `name_i` for vector components, or `m[income]` for the slopes of
        named features (`feature_names`).
        """
        logs = {}
        for name, value in self.user_params_tensors(self.likelihood_dtype).items():
            flat = tf.reshape(value, [-1])
            names = self.component_names(name)
            logs.update({label: flat[i] for i, label in enumerate(names)})
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

    def closed_form(self, x, y=None, sample_weight=None) -> dict | None:
        """The exact MLE of the parameters on these data, like `model.params`, or `None`.

        `None` (the default) means no closed form is known; the package's models return theirs
        (OLS, the sample moments), which the callbacks and the command line compare fits with.
        """
        return None

    def least_squares_model(self):
        """The least-squares model of this model's mean, for OLS conventions; `None` if none.

        `keras_mle.inference(model, ..., convention="ols")` reports OLS standard errors from it.
        Models whose mean is linear and whose noise is Gaussian (`GaussianRegression`) return
        the `LinearRegression` that shares their mean parameters.
        """
        return None

    def compute_loss_and_gradients(self, x, y=None, sample_weight=None, *, scale_loss=None):
        """The training maths shared by `train_step`, `keras_mle.loops` and the callbacks.

        Args:
            x, y, sample_weight: One (replica's) batch.
            scale_loss: A function applied to the loss before the gradients are taken (the
                optimizer's `scale_loss` under mixed precision). Defaults to `None`.

        Returns:
            `(loss, gradients, sample_losses, weights)`: the scalar objective of this (replica's)
            batch, its gradients w.r.t. `trainable_variables` (of the scaled loss), and the
            per-sample losses (in the user's units, see `adapt`) and weights for metrics.
        """
        x, y = self.working_data(x, y)
        with tf.GradientTape() as tape:
            sample_losses = self.sample_loss(self.params_tensors(), x, y)
            loss, weights = self._normalize(sample_losses, sample_weight)
            scaled = loss if scale_loss is None else scale_loss(loss)
        gradients = tape.gradient(scaled, self.trainable_variables)
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

    # ---------------------------------------------------------------- statistics hooks
    def likelihood_derivatives(
        self,
        x,
        y=None,
        sample_weight=None,
        *,
        params=None,
        names=None,
        hessian: bool = True,
        compiled=None,
    ) -> LikelihoodDerivatives:
        """The total loss on `(x, y, sample_weight)` and its derivatives, in float64.

        Computed with nested `tf.GradientTape`s from the data cast to float64 (whatever the
        model's dtype), in the estimation coordinates of `LikelihoodDerivatives`.

        Args:
            x, y, sample_weight: The data (checked as `fit` checks them).
            params: User-unit natural values to evaluate at (any subset of `model.params`).
                Defaults to `None` (the current parameters).
            names: The parameters to differentiate with respect to; the others are held fixed.
                Defaults to `None` (all).
            hessian: Compute the Hessian. Defaults to `True`.
            compiled: A dict in which to keep the derivatives' computation as a `tf.function`
                (traced once, then reused: what `accumulate_derivatives` passes for its
                batches), or `None` to run it eagerly (the default: one call, no tracing).

        Raises:
            ValueError: if the parameters are not finite, or `sample_loss` cannot run in float64.
        """
        x64, y64, w = self.check_data(x, y, sample_weight, dtype=np.float64)
        w = np.ones(len(x64)) if w is None else w
        working = self._working_values(params)
        names = self.parameter_names if names is None else list(names)
        unknown = sorted(set(names) - set(working))
        if unknown:
            raise ValueError(f"names: unknown parameter(s) {unknown}; have {self.parameter_names}.")
        x_t, y_t = self.working_data(x64, y64, dtype=tf.float64)
        shapes = [working[name].shape for name in names]
        sizes = [shape.num_elements() for shape in shapes]

        def unflatten(theta):
            pieces = tf.split(theta, sizes) if names else []
            values = {n: tf.reshape(v, s) for n, v, s in zip(names, pieces, shapes, strict=True)}
            return {**working, **values}

        def derivatives(theta, x_t, y_t, weights):
            with tf.GradientTape(persistent=True) as outer:
                outer.watch(theta)
                with tf.GradientTape() as inner:
                    inner.watch(theta)
                    sample_losses = self._float64_sample_loss(unflatten(theta), x_t, y_t)
                    total = tf.reduce_sum(weights * sample_losses)
                gradient = inner.gradient(total, theta)
            matrix = (
                outer.jacobian(gradient, theta, experimental_use_pfor=False) if hessian else None
            )
            return sample_losses, gradient, matrix

        if compiled is not None:
            key = (tuple(names), hessian, tuple(tuple(s) for s in shapes))
            if key not in compiled:
                # (`working` is read when traced: the dict serves one set of parameters.)
                compiled[key] = tf.function(derivatives, reduce_retracing=True)
            derivatives = compiled[key]
        theta = tf.concat([tf.reshape(working[name], [-1]) for name in names], 0)
        sample_losses, gradient, matrix = derivatives(theta, x_t, y_t, tf.constant(w))
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(theta)
            user = unflatten(theta)
            if self._adaptation is not None:
                user = self._adaptation.to_user(user, self.parameter_roles)
            user_flat = tf.concat([tf.reshape(user[name], [-1]) for name in names], 0)
        jacobian = tape.jacobian(user_flat, theta, experimental_use_pfor=False)
        adaptation = self._adaptation
        factor = 1.0 if adaptation is None else adaptation.loss_factor(self.sample_loss_kind)
        fixed, exact = [], []
        for name, shape, size in zip(names, shapes, sizes, strict=True):
            parameter = self._parameters[name]
            if parameter.is_fixed:
                given = (params or {}).get(name)
                values = parameter.fixed_values if given is None else given
                fixed.append(np.reshape(parameter.fixed_mask, -1))
                values = np.broadcast_to(np.asarray(values, np.float64), tuple(shape))
                exact.append(np.reshape(values, -1))
            else:
                fixed.append(np.zeros(size, bool))
                exact.append(np.zeros(size))
        fixed = np.concatenate(fixed) if fixed else np.zeros(0, bool)
        flat_params = user_flat.numpy()
        if fixed.any():
            # Exactly the fixed values, not their round trip through the working space.
            flat_params = np.where(fixed, np.concatenate(exact), flat_params)
        return LikelihoodDerivatives(
            names=tuple(label for name in names for label in self.component_names(name)),
            params=flat_params,
            sample_losses=self.user_losses(sample_losses).numpy(),
            weights=w,
            gradient=factor * gradient.numpy(),
            hessian=None if matrix is None else factor * matrix.numpy(),
            jacobian=jacobian.numpy().reshape(len(user_flat), len(user_flat)),
            fixed=fixed,
        )

    def refine(self, x, y=None, sample_weight=None, *, max_steps=20, tol=1e-10):
        """Float64 Newton steps to the optimum (`keras_mle.refine.refine`); returns its report."""
        from keras_mle.refine import refine  # (keras_mle.refine imports this module)

        return refine(self, x, y, sample_weight, max_steps=max_steps, tol=tol)

    def per_sample_loss(self, x, y=None, *, params=None) -> np.ndarray:
        """`l_i`: each sample's loss (NLL, or squared error) in the user's units, in float64."""
        x64, y64, _ = self.check_data(x, y, dtype=np.float64)
        x_t, y_t = self.working_data(x64, y64, dtype=tf.float64)
        losses = self._float64_sample_loss(self._working_values(params), x_t, y_t)
        return self.user_losses(losses).numpy()

    def score(self, x, y=None, sample_weight=None, *, params=None) -> np.ndarray:
        """The score `-dL / d theta_user` over the flattened parameters, in float64."""
        derivatives = self.likelihood_derivatives(x, y, sample_weight, params=params, hessian=False)
        return derivatives.score

    def observed_information(self, x, y=None, sample_weight=None, *, params=None) -> np.ndarray:
        """The observed information `d^2 L / d theta_user^2` (the Hessian of the total NLL)."""
        return self.likelihood_derivatives(x, y, sample_weight, params=params).information

    def accumulate_derivatives(
        self, dataset, *, params=None, names=None, hessian: bool = True, on_batch=None
    ) -> StreamedDerivatives:
        """`likelihood_derivatives` over a batched `tf.data.Dataset`, one batch at a time.

        The total loss, its gradient and Hessian are sums over the samples, so the batches'
        (each from `likelihood_derivatives`, in float64) add up to those of the whole data; only
        one batch is in memory at a time. The elements are read as `fit` reads them (`(x, y)`,
        `(x, y, sample_weight)`; for a model of a sample `samples` or `(samples,
        sample_weight)`), on the host, so a model built under a `tf.distribute` strategy reads
        each row once.

        Args:
            dataset: A batched `tf.data.Dataset`.
            params, names, hessian: As for `likelihood_derivatives`.
            on_batch: Called as `on_batch(x, y, sample_weight, derivatives)` for each batch with
                a positive weight (float64 arrays as `check_data` returns them, the weights
                filled with ones, and the batch's `LikelihoodDerivatives`). Defaults to `None`.

        Returns:
            A `StreamedDerivatives`.

        Raises:
            ValueError: as `likelihood_derivatives`, naming the batch for bad data; for an
                unbatched or empty dataset, or one without a row of positive weight.
        """
        gradient = matrix = first = None
        loss = weight_sum = 0.0
        rows = batches = 0
        compiled = {}  # the batches' derivatives: traced once, then one graph call per batch
        for x, y, w in self.dataset_batches(dataset):
            rows += len(x)
            if not np.any(w > 0):
                continue
            batch = self.likelihood_derivatives(
                x, y, w, params=params, names=names, hessian=hessian, compiled=compiled
            )
            if first is None:
                first, gradient = batch, np.zeros_like(batch.gradient)
                matrix = None if batch.hessian is None else np.zeros_like(batch.hessian)
            gradient += batch.gradient
            if matrix is not None:
                matrix += batch.hessian
            loss += batch.total
            weight_sum += batch.nobs
            batches += 1
            if on_batch is not None:
                on_batch(x, y, w, batch)
        if first is None:
            raise ValueError(
                f"{self.x_name}: the dataset has no row with a positive weight ({rows} rows read)."
            )
        return StreamedDerivatives(
            names=first.names,
            params=first.params,
            sample_losses=np.zeros(0),
            weights=np.zeros(0),
            gradient=gradient,
            hessian=matrix,
            jacobian=first.jacobian,
            fixed=first.fixed,
            loss=loss,
            weight_sum=weight_sum,
            rows=rows,
            batches=batches,
        )

    def dataset_batches(self, dataset):
        """Yields the batches of a `tf.data.Dataset` as checked float64 arrays `(x, y, w)`.

        Elements are read as `fit` reads them; each batch is checked as `check_data` checks
        arrays (errors name the batch, counting from 0), except that a batch whose weights are
        all 0 is allowed. `y` is `None` for a model of a sample; `w` is filled with ones when
        the elements carry no weights. Batches without rows are skipped.

        Raises:
            TypeError: if `dataset` is not a `tf.data.Dataset`.
            ValueError: if it is empty or unbatched, its elements do not fit the model, or a
                batch holds bad data.
        """
        if not isinstance(dataset, tf.data.Dataset):
            raise TypeError(
                f"{self.x_name}: expected a tf.data.Dataset, got {type(dataset).__name__}."
            )
        if int(dataset.cardinality()) == 0:
            raise ValueError(f"{self.x_name}: the dataset is empty (its cardinality is 0).")
        spec = dataset.element_spec
        if any(part.shape.rank == 0 for part in tf.nest.flatten(spec)):
            raise ValueError(
                f"{self.x_name}: the dataset yields single rows (element spec {spec}): batch it "
                "first, e.g. dataset.batch(4096)."
            )
        _x_spec(self, spec)
        self._unpack(spec, in_step=False)
        for index, element in enumerate(dataset):
            x, y, w = self._unpack(element, in_step=False)
            x, y, w = (None if a is None else np.asarray(a) for a in (x, y, w))
            if len(x) == 0:
                continue
            all_zero = w is not None and w.size > 0 and np.all(w == 0)
            try:
                x, y, w = self.check_data(x, y, None if all_zero else w, dtype=np.float64)
            except (TypeError, ValueError) as error:
                raise type(error)(f"{self.x_name} (a dataset), batch {index}: {error}") from None
            yield x, y, (np.zeros(len(x)) if all_zero else np.ones(len(x)) if w is None else w)

    def _working_values(self, params=None) -> dict:
        """Float64 natural working-space values: the current ones, or user-unit `params`."""
        if not self.built:
            raise ValueError("model is not built: fit it (or call it on a batch) first.")
        current = {
            name: self._parameters[name].with_fixed(tf.cast(v, tf.float64), working=True)
            for name, v in self.params_tensors().items()
        }
        if params:
            user = {
                name: self._parameters[name].with_fixed(tf.cast(v, tf.float64), working=False)
                for name, v in self.user_params_tensors().items()
            }
            for name, value in params.items():
                if name not in user:
                    raise ValueError(f"params: unknown parameter {name!r}.")
                user[name] = tf.reshape(tf.constant(value, tf.float64), user[name].shape)
            current = (
                user
                if self._adaptation is None
                else self._adaptation.to_working(user, self.parameter_roles)
            )
        bad = [name for name, value in current.items() if not np.all(np.isfinite(value.numpy()))]
        if bad:
            raise ValueError(
                f"{type(self).__name__} has non-finite parameter(s) {bad}: the fit diverged. "
                "Train again with a smaller learning rate, or after model.adapt(x, y)."
            )
        return current

    def _float64_sample_loss(self, params, x, y):
        try:
            losses = self.sample_loss(params, x, y)
        except (TypeError, ValueError, tf.errors.InvalidArgumentError) as error:
            raise ValueError(
                f"{type(self).__name__}.sample_loss cannot run in float64, which the statistics "
                "need: write its constants in the inputs' dtype (e.g. tf.cast(c, x.dtype) or "
                f"a Python float), not as float32 tensors. The error was: {error}"
            ) from None
        if losses.dtype != tf.float64:
            raise ValueError(
                f"{type(self).__name__}.sample_loss returned {losses.dtype.name} for float64 "
                "inputs: compute it in the inputs' dtype."
            )
        return losses

    # ---------------------------------------------------------------- adapt
    @property
    def adaptation(self):
        """The `keras_mle.models.adaptation.Adaptation` fixed by `adapt`, or `None`."""
        return self._adaptation

    def adapt(self, x, y=None, *, reset: bool = True):
        """Fixes a float64 centring and whitening of the data; training then runs in that space.

        As with `keras.layers.Normalization.adapt`, the statistics are computed once, here, and
        saved with the model. The features are centred and whitened (`x - mean`, times the
        inverse of the R factor of its QR decomposition); for a model whose likelihood is a
        location-scale family in `y` (`adapt_targets`, e.g. the Gaussian models) the targets are
        also centred and scaled by their standard deviation (for a model of a sample, the sample
        is). The variables then hold *working-space* parameters, on which the squared-error
        Hessian is `2 I`: plain SGD with learning rate 0.5 solves least squares in one step,
        whatever the units of `x`. `model.params`, `predict`, the reported loss and
        `keras_mle.inference` stay in the user's units (see `keras_mle.models.adaptation`).

        Call it before `fit`; datasets passed to `fit` are transformed inside the model, so any
        input path works. The data are checked and the statistics computed in float64 from what
        is passed: give float64 arrays when the data carry more digits than float32 (values
        near 1e6, say).

        Units are then no obstacle, but a likelihood can still be hard by nature: for a
        Gaussian regression the NLL's curvature in the slopes is `1 / (1 - R^2)` adapted units
        against 2 for `log(sigma)`, so SGD needs `learning_rate < 2 (1 - R^2)` and a nearly
        exact line (R^2 -> 1) is slow for any first-order optimizer. Least squares
        (`LinearRegression`, whose `inference` is the OLS one) has no such coupling.

        Args:
            x: Features (for a model of a sample: the samples); or a batched `tf.data.Dataset`
                of the elements `fit` reads, taken in one float64 pass that holds one batch at
                a time and gives the adaptation of the concatenated batches (to ~1e-14; weights
                in the elements are not used, as here).
            y: Targets, or `None` for a model of a sample (and for a dataset). Defaults to
                `None`.
            reset: Re-initialise the parameters in the working space, so that initializers and
                initial values are read in adapted units (as for a layer after a
                `Normalization`): e.g. `GaussianMLE(initial_mu=0, initial_sigma=1)` then starts
                at the sample's mean and standard deviation. `False` keeps `model.params`
                unchanged. Defaults to `True`.

        Returns:
            The model.
        """
        if self.parameter_roles is None:
            raise NotImplementedError(
                f"{type(self).__name__} does not support adapt(): set parameter_roles."
            )
        if not self.takes_targets and not self.adapt_targets:
            raise NotImplementedError(
                f"{type(self).__name__} does not support adapt(): its likelihood does not allow "
                "rescaling the sample (set adapt_targets for a location-scale family)."
            )
        if isinstance(x, tf.data.Dataset):
            adaptation = self._adapt_dataset(x, y)
        else:
            x, y, _ = self.check_data(x, y, dtype=np.float64)
            self._build_from_shape(x.shape)
            fixed_columns, center = self._adapt_constraints()
            adaptation = self.adaptation_class.from_data(
                x,
                y if self.takes_targets else None,
                scale_targets=self.adapt_targets,
                fixed_columns=fixed_columns,
                center=center,
            )
        adaptation.check_roles(self.parameter_roles, self.parameter_names)
        if reset:
            self._adaptation = adaptation
            for parameter in self._parameters.values():
                parameter.reset()
        else:
            working = adaptation.to_working(self.user_params_tensors(), self.parameter_roles)
            self._adaptation = adaptation
            for name, value in working.items():
                self._parameters[name].assign(value)
        for parameter in self._parameters.values():
            if parameter.is_fixed:
                self._sync_fixed(parameter)
        # Compiled steps hold the old statistics as constants.
        self.train_function = self.test_function = self.predict_function = None
        return self

    def _adapt_dataset(self, dataset, y):
        """The `Adaptation` of `adapt(dataset)`: one float64 pass (`DataMoments`).

        As `adapt(x, y)` on the concatenated batches (which takes no weights), the rows count
        once each: weights in the elements are read but not used. Any fixed adaptation gives
        the same fit; this one is the change of coordinates of the rows themselves.
        """
        if y is not None:
            raise ValueError(
                "y: with a dataset, give the targets inside its elements ((x, y) batches)."
            )
        moments = DataMoments()
        for x, y_batch, _ in self.dataset_batches(dataset):
            if moments.rows == 0:
                self._build_from_shape(x.shape)
            if self.takes_targets:
                moments.update(x, y_batch)
            else:
                moments.update(None, x.reshape(-1))
        fixed_columns, center = self._adapt_constraints()
        return self.adaptation_class.from_moments(
            moments,
            scale_targets=self.adapt_targets,
            fixed_columns=fixed_columns,
            center=center,
        )

    def _adapt_constraints(self):
        """`(fixed_columns, center)` for `Adaptation.from_data`: what fixed components need.

        Fixed slopes are held out of the whitening (their columns are not mixed with the free
        ones), and a fixed intercept leaves the features uncentred, so that every fixed
        component stays a fixed working coordinate (see `keras_mle.models.adaptation`).
        """
        fixed_columns, center = None, True
        for name, role in (self.parameter_roles or {}).items():
            parameter = self._parameters.get(name)
            if parameter is None or not parameter.is_fixed:
                continue
            if role == "slope":
                fixed_columns = np.reshape(parameter.fixed_mask, -1)
            elif role == "intercept" and self.takes_targets:
                center = False
        return fixed_columns, center

    @property
    def data_dtype(self) -> str:
        """The dtype data are fed in: the likelihood's, or float64 once adapted.

        An adapted model receives float64 data and centres them in float64 inside the step,
        before casting to its likelihood dtype: a float32 model then loses nothing to the
        rounding of data with a large offset (values near 1e6 are spaced 0.06 apart in float32).
        """
        return "float64" if self._adaptation is not None else self.likelihood_dtype

    def working_data(self, x, y=None, dtype=None):
        """`(x, y)` in the working space of `adapt`, as `dtype` (default: the likelihood dtype).

        Only cast (and `(B, 1)` targets flattened) when the model is not adapted.
        """
        dtype = dtype or self.likelihood_dtype
        y = _flat_targets(y)
        if self._adaptation is not None:
            return self._adaptation.transform(x, y, dtype=dtype)
        x = tf.nest.map_structure(lambda a: tf.cast(a, dtype), x)
        return x, None if y is None else tf.cast(y, dtype)

    def user_losses(self, sample_losses):
        """Per-sample working-space losses in the user's units (unchanged when not adapted)."""
        if self._adaptation is None:
            return sample_losses
        return self._adaptation.loss_to_user(sample_losses, self.sample_loss_kind)

    def get_config(self):
        config = super().get_config()
        if self._adaptation is not None:
            config["adaptation"] = self._adaptation.get_config()
        if self._feature_names is not None:
            config["feature_names"] = list(self._feature_names)
        if self._fixed:
            config["fixed"] = self.fixed
        return config

    # ---------------------------------------------------------------- Keras hooks
    @property
    def metrics(self):
        # Keras' compile() adds a loss tracker of its own, which these steps do not use: report
        # this model's loss first, then the compiled and user metrics.
        others = [m for m in super().metrics if m.name != "loss" and not isinstance(m, InputCheck)]
        return [self.loss_tracker, *others]

    def compile(
        self,
        optimizer="rmsprop",
        loss=None,
        loss_weights=None,
        metrics=None,
        weighted_metrics=None,
        run_eagerly=False,
        steps_per_execution=1,
        jit_compile="auto",
        auto_scale_loss=True,
    ):
        """`keras.Model.compile` without a `loss`: the model's likelihood is its loss.

        `metrics` (and `weighted_metrics`) are computed on the model's mean prediction
        (`predict`) against the targets `y` (for a model of a sample: the sample).
        """
        for name, value in (("loss", loss), ("loss_weights", loss_weights)):
            if value is not None:
                raise ValueError(
                    f"{name}: {type(self).__name__} is fitted by its own likelihood "
                    f"(sample_loss), so compile() takes no {name}. Pass metrics=[...] to track "
                    "other measures of the fit."
                )
        # "auto" lets `fit` compile large in-memory epochs with XLA (see `_XLA_ROWS`).
        self._auto_jit = jit_compile == "auto"
        super().compile(
            optimizer=optimizer,
            metrics=metrics,
            weighted_metrics=weighted_metrics,
            run_eagerly=run_eagerly,
            steps_per_execution=steps_per_execution,
            jit_compile=jit_compile,
            auto_scale_loss=auto_scale_loss,
        )

    def compile_from_config(self, config):
        # Keras skips this for models that override compile(); these models' compile() takes
        # the same arguments, so a loaded `.keras` model is compiled (optimizer state included).
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def train_step(self, data):
        if isinstance(data, data_lib.EpochBatches):
            if self.distribute_strategy.num_replicas_in_sync > 1:
                # Optimizer steps inside a tf.while_loop cannot merge_call across replicas.
                raise ValueError(
                    "x: keras_mle.data.epoch_dataset is a single-device fast path; under a "
                    "tf.distribute strategy pass the arrays to fit(x, y) instead."
                )
            self.train_batches(data)
        elif isinstance(data, data_lib.EpochArrays):
            self.train_arrays(data)
        else:
            self.apply_step(*self._unpack(data))
        return {**self._metric_results(), **self.parameter_logs()}

    def train_arrays(self, epoch):
        """One epoch of a `keras_mle.data.EpochArrays`: an `apply_step` per batch, in-graph.

        What plain `fit(x, y)` runs on one device: the batches are sliced (or, when shuffled,
        gathered through the epoch's permutation) from the arrays inside a `tf.while_loop`, so
        the epoch is one compiled call. The arrays were checked before training, so the steps
        do not examine their batches (`checked=True`); the loop ends at a refused step.
        """
        n = tf.nest.flatten(epoch.x)[0].shape[0]
        size = epoch.batch_size
        full, last = divmod(n, size)

        def take(a, start, count):
            if epoch.order is None:
                begin = tf.concat([[start], tf.zeros([a.shape.rank - 1], tf.int32)], 0)
                return tf.slice(a, begin, [count, *a.shape[1:]])
            return tf.gather(a, tf.slice(epoch.order, [start], [count]))

        def rows(a, start, count):
            if a is None:
                return None
            return _structure(tf.nest.map_structure(lambda a: take(a, start, count), a))

        def batch(start, count):
            self.apply_step(
                rows(epoch.x, start, count),
                rows(epoch.y, start, count),
                rows(epoch.sample_weight, start, count),
                checked=True,
            )

        def step(i):
            batch(i * size, size)
            return (i + 1,)

        clean = self.train_input_check.clean
        tf.while_loop(lambda i: tf.logical_and(i < full, clean()), step, (tf.constant(0),))
        if last:
            batch(full * size, last)

    def apply_step(self, x, y=None, sample_weight=None, *, checked=False):
        """One optimizer step on one batch, with the loss tracker and metrics updated.

        This is `train_step` without Keras' data unpacking; the custom loops call it directly.
        A step that fails the checks, or follows one that did, is not applied: NaN or Inf in
        the batch or a negative weight (the data's fault), or a NaN or Inf loss or gradient from
        clean data (divergence). `checked=True` is for batches of data checked before training
        (as `train_batches` gets them): the batch is then not examined, as its capture in the
        step's `tf.cond` would cost a copy of it, and any refusal counts as divergence.
        """
        y = self._checked_target_shape(y)
        loss, gradients, sample_losses, weights = self.compute_loss_and_gradients(
            x, y, sample_weight, scale_loss=self.optimizer.scale_loss
        )
        # Metrics see the prediction the loss saw: before the update, as in Keras' train_step.
        predictions = self._metric_inputs(x, y)
        finite = tf.math.is_finite(loss)
        if not isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            # (A loss-scale optimizer skips steps with overflowing gradients by design.)
            for gradient in gradients:
                finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(gradient)))
        self.train_input_check.guard(
            x,
            y,
            sample_weight,
            finite,
            local=lambda: self._update_metrics(sample_losses, weights, predictions),
            apply=lambda g: self.optimizer.apply(g, self.trainable_variables),
            gradients=gradients,
            examine=not checked,
        )

    def train_batches(self, batches):
        """One `apply_step` per batch of a `keras_mle.data.EpochBatches`, in `tf.while_loop`s.

        `batches.repeats` passes over the full batches `batches.x[i]` and the last, shorter
        batch. Used in-graph by the `"function"`/`"xla"` loops and, through
        `keras_mle.data.epoch_dataset`, by `fit()`, so that whole epochs are one compiled call.
        `keras_mle.data.stack_batches` checked the data when it built `batches`, so the steps
        do not examine their batches (`checked=True`); the loops end at a refused step.
        """

        def take(a, i):
            return None if a is None else _structure(tf.nest.map_structure(lambda a: a[i], a))

        def step(i):
            self.apply_step(
                take(batches.x, i),
                take(batches.y, i),
                take(batches.sample_weight, i),
                checked=True,
            )
            return (i + 1,)

        clean = self.train_input_check.clean

        def epoch(e):
            tf.while_loop(
                lambda i: tf.logical_and(i < tf.shape(tf.nest.flatten(batches.x)[0])[0], clean()),
                step,
                (tf.constant(0),),
            )
            if batches.last_x is not None:
                self.apply_step(
                    _structure(batches.last_x),
                    batches.last_y,
                    batches.last_sample_weight,
                    checked=True,
                )
            return (e + 1,)

        tf.while_loop(
            lambda e: tf.logical_and(e < batches.repeats, clean()), epoch, (tf.constant(0),)
        )

    def test_step(self, data):
        x, y, sample_weight = self._unpack(data)
        y = self._checked_target_shape(y)
        x_t, y_t = self.working_data(x, y)
        sample_losses = self.sample_loss(self.params_tensors(), x_t, y_t)
        loss, weights = self._normalize(sample_losses, sample_weight)
        predictions = self._metric_inputs(x, y)
        self.test_input_check.guard(
            x,
            y,
            sample_weight,
            tf.math.is_finite(loss),
            local=lambda: self._update_metrics(
                self.user_losses(sample_losses), weights, predictions
            ),
        )
        return self._metric_results()

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.call(x)

    def _metric_inputs(self, x, y):
        """`(x, targets, predictions)` for the compiled metrics, or `None` when there are none.

        Targets (for a model of a sample: the sample) and mean predictions go in as `(B, 1)`
        columns: Keras' mean metrics average over the last axis, so `(B,)` vectors would make
        every batch a single value and the epoch an unweighted mean of batch means.
        """
        if len(self.metrics) == 1:
            return None
        targets = _flat_targets(y if self.takes_targets else x)
        return x, targets[:, None], self.call(x)[:, None]

    def _update_metrics(self, sample_losses, weights, predictions):
        self.loss_tracker.update_state(sample_losses, sample_weight=weights)
        if predictions is not None:
            x, targets, means = predictions
            self.compute_metrics(x, targets, means, sample_weight=weights)

    def _metric_results(self):
        """`get_metrics_result()`, made global under `tf.distribute`.

        Inside a replica each metric holds only that replica's share: the result is computed
        from its variables all-reduced across replicas, or the log would be replica 0's.
        """
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return self.get_metrics_result()
        results = {}
        for metric in self.metrics:
            reduced = [
                context.all_reduce(
                    tf.distribute.ReduceOp.MEAN
                    if variable.aggregation == "mean"
                    else tf.distribute.ReduceOp.SUM,
                    tf.convert_to_tensor(variable),
                )
                for variable in metric.variables
            ]
            result = metric.stateless_result(reduced)
            results.update(result if isinstance(result, dict) else {metric.name: result})
        return results

    def _checked_target_shape(self, y):
        if y is None:
            return None
        rank = y.shape.rank
        if rank is not None and (rank > 2 or (rank == 2 and y.shape[1] not in (1, None))):
            raise ValueError(
                f"y must have shape (N,) or (N, 1), got batches of shape {tuple(y.shape)}: one "
                "target per row (they would broadcast against the (N,) predictions)."
            )
        return _flat_targets(y)

    def _unpack(self, data, *, in_step=True):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if self.takes_targets:
            self._check_batch_spec(x, y, sample_weight, in_step=in_step)
            return x, y, sample_weight
        # A model of a sample reads elements `samples` or `(samples, sample_weight)`.
        if sample_weight is not None:
            raise ValueError(
                f"{type(self).__name__} fits a sample: dataset elements must be samples or "
                "(samples, sample_weight), not 3-tuples."
            )
        self._check_batch_spec(x, None, y, in_step=in_step)
        return x, None, y

    def _check_batch_spec(self, x, y, sample_weight, *, in_step=True):
        """Checks what a batch's static types say: numeric parts, targets given, input shape.

        Runs on a dataset's element spec before training, and on the batches of every stream
        when the step is traced (before any step is applied): a generator, whose spec is only
        known to Keras, is refused there with the same messages.
        """
        names = (self.x_name, "y", "sample_weight")
        for name, part in zip(names, (x, y, sample_weight), strict=True):
            dtype = None if part is None else getattr(part, "dtype", None)
            if dtype is None:
                continue
            dtype = tf.as_dtype(dtype)
            if not (dtype.is_floating or dtype.is_integer or dtype.is_bool) or dtype.is_complex:
                raise TypeError(
                    f"{name} must be numeric, got batches of dtype {dtype.name} from the data."
                )
        if self.takes_targets and y is None:
            raise ValueError(
                f"y is required: {type(self).__name__} fits targets y given x, so each element "
                "of a dataset, generator or PyDataset must be (x, y) or (x, y, sample_weight), "
                "not x alone."
            )
        shape = getattr(x, "shape", None)
        if shape is not None and shape.rank is not None and None not in shape[1:]:
            self.check_input_shape(shape)
        if in_step and not self.built:
            # Only a generator gets here unbuilt: its batches are not seen before the step.
            raise ValueError(
                f"{self.x_name}: {type(self).__name__} is not built, and a generator's batches "
                "are only seen inside the training step: build it first (model.build(shape) "
                "or model(x[:2])), or pass a tf.data.Dataset or a keras.utils.PyDataset."
            )

    # ---------------------------------------------------------------- fit, evaluate, predict
    def check_data(self, x, y=None, sample_weight=None, *, dtype=None):
        """Validates in-memory data before any work; returns `(x, y, sample_weight)` as arrays.

        Raises `ValueError` (`TypeError` for non-numeric data) naming the argument. The arrays
        are returned in `dtype` (default: the model's `data_dtype`); a cast that would lose
        information gives a `keras_mle.PrecisionWarning`. A DataFrame `x` is checked against
        `feature_names` (`check_feature_names`), and gives the model its names if it has none.
        """
        dtype = self.data_dtype if dtype is None else dtype
        if not self.takes_targets and y is not None:
            raise ValueError(f"y must be None: {type(self).__name__} fits a sample, not targets.")
        columns = self.check_feature_names(x)
        x, y = data_lib.check_xy(x, y, x_name=self.x_name, x_ndim=self.input_ndim)
        if self.takes_targets and y is None:
            raise ValueError(f"y is required: {type(self).__name__} fits targets y given x.")
        sample_weight = data_lib.check_sample_weight(sample_weight, data_lib.num_rows(x))
        self.check_input_shape(data_lib.inputs_shape(x))
        self._check_feature_count(data_lib.inputs_shape(x))
        if columns is not None and self._feature_names is None:
            self._feature_names = columns
        x = data_lib.cast_for_model(self.x_name, x, dtype)
        y = None if y is None else data_lib.cast_for_model("y", y, dtype)
        if sample_weight is not None:
            sample_weight = sample_weight.astype(dtype)
        return x, y, sample_weight

    def check_feature_names(self, x):
        """The names of a DataFrame's columns, checked against `feature_names`.

        Returns:
            The column names as a tuple when `x` is a pandas DataFrame whose columns are all
            strings (they become `feature_names` at the first `adapt`/`fit`/`check_data` of a
            model without names), else `None`.

        Raises:
            ValueError: naming `x` if `x` is a DataFrame whose columns differ, in names or
                order, from the model's `feature_names` (the values would be read in the wrong
                order), or repeat a name.
        """
        if not (hasattr(x, "columns") and hasattr(x, "iloc")):
            return None
        columns = tuple(x.columns)
        names = self._feature_names
        if names is not None and columns != names:
            raise ValueError(
                f"{self.x_name}: the DataFrame's columns {list(columns)} differ from the "
                f"model's feature_names {list(names)} (names or order); select them in that "
                f"order, e.g. {self.x_name}[model.feature_names]."
            )
        if not columns or not all(isinstance(c, str) for c in columns):
            return None
        if len(set(columns)) != len(columns):
            repeated = sorted({c for c in columns if columns.count(c) > 1})
            raise ValueError(f"{self.x_name}: the DataFrame repeats column(s) {repeated}.")
        return columns

    def _check_feature_count(self, shape) -> None:
        names = self._feature_names
        if isinstance(shape, dict):  # named inputs: their names are the dict's keys
            return
        features = 1 if len(shape) == 1 else shape[-1]
        if names is not None and features is not None and features != len(names):
            raise ValueError(
                f"feature_names has {len(names)} name(s) {list(names)}, but {self.x_name} has "
                f"{features} feature(s)."
            )

    def check_input_shape(self, shape) -> None:
        """Raises a `ValueError` naming `x` if batches of this shape do not fit the model.

        The default accepts anything; models with a fixed number of features check it.
        """

    def fit(
        self,
        x=None,
        y=None,
        batch_size=None,
        epochs=1,
        verbose="auto",
        callbacks=None,
        validation_split=0.0,
        validation_data=None,
        shuffle=True,
        class_weight=None,
        sample_weight=None,
        initial_epoch=0,
        steps_per_epoch=None,
        validation_steps=None,
        validation_batch_size=None,
        validation_freq=1,
    ):
        """`keras.Model.fit`, with every argument and in-memory array checked before any work.

        In-memory arrays are fed to Keras as a `tf.data.Dataset` in the model's `data_dtype`
        (`keras_mle.data.array_dataset`, which shuffles as Keras does), so that float64 data
        reach a float64 or adapted model unrounded. For a model of a sample, `x` holds the
        samples and a dataset's elements are `samples` or `(samples, sample_weight)`.
        A `keras_mle.callbacks.BackupAndRestore` among `callbacks` restores its backup before
        training and sets the epoch to resume from.

        Under a `tf.distribute.MultiWorkerMirroredStrategy`, where Keras' `fit` does not run,
        training goes through `keras_mle.distributed.fit` (see `docs/distributed.md`).
        """
        from keras_mle import distributed  # (it imports this module)

        if distributed.is_multi_worker(self.distribute_strategy):
            return distributed.fit(
                self,
                x,
                y,
                batch_size=batch_size,
                epochs=epochs,
                verbose=verbose,
                callbacks=callbacks,
                validation_split=validation_split,
                validation_data=validation_data,
                shuffle=shuffle,
                class_weight=class_weight,
                sample_weight=sample_weight,
                initial_epoch=initial_epoch,
                steps_per_epoch=steps_per_epoch,
                validation_steps=validation_steps,
                validation_batch_size=validation_batch_size,
                validation_freq=validation_freq,
            )
        batch_size = data_lib.check_optional_positive_int("batch_size", batch_size)
        data_lib.check_positive_int("epochs", epochs)
        data_lib.check_optional_positive_int("steps_per_epoch", steps_per_epoch)
        data_lib.check_optional_positive_int("validation_steps", validation_steps)
        data_lib.check_optional_positive_int("validation_batch_size", validation_batch_size)
        data_lib.check_positive_int("validation_freq", validation_freq)
        initial_epoch = _check_initial_epoch(initial_epoch)
        validation_split = _check_validation_split(validation_split)
        if validation_split and validation_data is not None:
            raise ValueError(
                f"validation_split={validation_split!r} and validation_data are both given: "
                "Keras would use validation_data and silently ignore validation_split; this "
                "package refuses the ambiguous pair. Give one of them."
            )
        shuffle = _check_shuffle(shuffle)
        _check_callbacks(callbacks)
        if class_weight is not None:
            raise ValueError(
                "class_weight is not supported by likelihood models: weight the samples with "
                "sample_weight."
            )
        in_memory, epochs_of = _is_in_memory(x), None
        if in_memory:
            x, y, sample_weight = self.check_data(x, y, sample_weight)
            if validation_split and validation_data is None:
                (x, y, sample_weight), held_out = _split((x, y, sample_weight), validation_split)
                validation_data = data_lib.array_dataset(
                    self._components(*held_out),
                    batch_size=validation_batch_size or batch_size or 32,
                )
            self.prepare_training(
                data_lib.inputs_shape(x),
                data_lib.take_rows(x, slice(0, 1)),
                None if y is None else y[:1],
            )
            # Whole epochs in one compiled call each (`train_arrays`), unless a strategy, a
            # callback acting between batches or `steps_per_epoch` needs Keras' batches.
            if (
                steps_per_epoch is None
                and _default_strategy(self)
                and not _watches_batches(callbacks)
            ):
                epochs_of = (x, y, sample_weight)
                steps_per_epoch = 1
            else:
                x = data_lib.array_dataset(
                    self._components(x, y, sample_weight),
                    batch_size=batch_size or 32,
                    shuffle=bool(shuffle),
                )
        else:
            self._check_stream(x, y, sample_weight, batch_size, validation_split)
        if validation_data is not None:
            validation_data = self.validation_dataset(
                validation_data, validation_batch_size or batch_size or 32
            )
        if in_memory:
            self.shuffle_seed = None  # a restored backup sets the seed of the run it continues
        initial_epoch = checkpoint.initial_epoch(callbacks, self, initial_epoch)
        if epochs_of is not None:
            if getattr(self, "_auto_jit", False) and data_lib.num_rows(epochs_of[0]) >= _XLA_ROWS:
                # Keras' "auto" leaves XLA off on CPU; an epoch over this many rows is one
                # compiled call that XLA makes several times faster, for a second's compile.
                if not self.jit_compile:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # a model XLA cannot compile stays off
                        self.jit_compile = True
                    self.train_function = None
            if shuffle and self.shuffle_seed is None:
                self.shuffle_seed = int(np.random.randint(2**62, dtype=np.int64))
            x = data_lib.epoch_arrays(
                *epochs_of,
                batch_size=batch_size or 32,
                seed=self.shuffle_seed if shuffle else None,
                first_epoch=initial_epoch,
            )
        try:
            return super().fit(
                x,
                epochs=epochs,
                verbose=verbose,
                callbacks=[InputCheckCallback(), *(callbacks or [])],
                validation_data=validation_data,
                shuffle=False,
                initial_epoch=initial_epoch,
                steps_per_epoch=steps_per_epoch,
                validation_steps=validation_steps,
                validation_freq=validation_freq,
            )
        finally:
            # (A run that raised gets no on_train_end: its backup folder's lock is freed here.)
            checkpoint.release_backups(callbacks)

    def evaluate(
        self,
        x=None,
        y=None,
        batch_size=None,
        verbose="auto",
        sample_weight=None,
        steps=None,
        callbacks=None,
        return_dict=False,
        **kwargs,
    ):
        """`keras.Model.evaluate` with the checks of `fit`."""
        batch_size = data_lib.check_optional_positive_int("batch_size", batch_size)
        data_lib.check_optional_positive_int("steps", steps)
        if not isinstance(callbacks, keras.callbacks.CallbackList):
            # (fit() passes its own CallbackList to the evaluation of validation_data.)
            _check_callbacks(callbacks)
        if _is_in_memory(x):
            x, y, sample_weight = self.check_data(x, y, sample_weight)
            self.prepare_training(
                data_lib.inputs_shape(x),
                data_lib.take_rows(x, slice(0, 1)),
                None if y is None else y[:1],
            )
            x = data_lib.array_dataset(
                self._components(x, y, sample_weight), batch_size=batch_size or 32
            )
        elif not kwargs:
            # (fit() passes its validation dataset, already checked, with a keyword of its own.)
            self._check_stream(x, y, sample_weight, batch_size, 0.0)
        if not isinstance(callbacks, keras.callbacks.CallbackList):
            callbacks = [InputCheckCallback(), *(callbacks or [])]
        return super().evaluate(
            x, verbose=verbose, steps=steps, callbacks=callbacks, return_dict=return_dict, **kwargs
        )

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """`keras.Model.predict` with the checks of `fit` (the number of features included)."""
        batch_size = data_lib.check_optional_positive_int("batch_size", batch_size)
        data_lib.check_optional_positive_int("steps", steps)
        _check_callbacks(callbacks)
        if _is_in_memory(x):
            x = self.check_inputs(x)
            x = data_lib.array_dataset((x,), batch_size=batch_size or 32)
        elif isinstance(x, tf.data.Dataset):
            shape = _spec_shape(_x_spec(self, x.element_spec))
            self.check_input_shape(shape)
            self._build_from_shape(shape)
        return super().predict(x, verbose=verbose, steps=steps, callbacks=callbacks)

    def check_inputs(self, x):
        """In-memory inputs `x` checked as `predict` takes them, in the model's dtype.

        The model is built for them if it was not. Raises as `check_data` does.
        """
        self.check_feature_names(x)
        x = data_lib.check_inputs(self.x_name, x, ndim=self.input_ndim)
        self.check_input_shape(data_lib.inputs_shape(x))
        self._check_feature_count(data_lib.inputs_shape(x))
        x = data_lib.cast_for_model(self.x_name, x, self.data_dtype)
        self._build_from_shape(data_lib.inputs_shape(x))
        return x

    def _components(self, x, y, sample_weight):
        # The element layout of `_unpack`: (x, y, w) for a regression, (x, w) for a sample.
        parts = (x, y, sample_weight) if self.takes_targets else (x, sample_weight)
        return tuple(a for a in parts if a is not None)

    def _build_from_shape(self, shape):
        if not self.built:
            if isinstance(shape, dict):
                shape = {key: tuple(value) for key, value in shape.items()}
            else:
                shape = tuple(shape)
            with self.distribute_strategy.scope():
                self.build(shape)

    def prepare_training(self, shape, x_example, y_example):
        """Builds the model, and any compiled metrics, before Keras' first step.

        Callbacks then see a built model in `on_train_begin`. The metrics are built here from
        one example row because an `EpochBatches` step (and a custom loop's epoch) updates them
        inside a `tf.while_loop`, where no variable may be created; under a multi-replica
        strategy Keras builds them itself, from a symbolic batch.
        """
        self._build_from_shape(shape)
        if len(self.metrics) > 1 and self.distribute_strategy.num_replicas_in_sync == 1:
            y = None if y_example is None else tf.constant(y_example)
            x = tf.nest.map_structure(tf.constant, x_example)
            self.compute_metrics(*self._metric_inputs(x, y))
            self.reset_metrics()

    def _check_stream(self, x, y, sample_weight, batch_size, validation_split):
        for name, value in (("y", y), ("sample_weight", sample_weight)):
            if value is not None:
                raise ValueError(f"{name}: with a dataset or generator, give it inside the data.")
        if batch_size is not None:
            raise ValueError("batch_size: a dataset or generator is batched already; drop it.")
        if validation_split:
            raise ValueError("validation_split needs in-memory arrays; give validation_data.")
        if isinstance(x, keras.utils.PyDataset):
            spec = _py_dataset_spec(self, x)
        elif isinstance(x, tf.data.Dataset):
            if int(x.cardinality()) == 0:
                raise ValueError(
                    f"{self.x_name}: the dataset is empty (its cardinality is 0): there is no "
                    "batch to fit or evaluate."
                )
            spec = x.element_spec
        else:
            return
        if isinstance(spec, data_lib.EpochBatches.Spec):
            if self.distribute_strategy.num_replicas_in_sync > 1:
                raise ValueError(
                    "x: keras_mle.data.epoch_dataset is a single-device fast path; under a "
                    "tf.distribute strategy pass the arrays to fit(x, y) instead."
                )
            x_spec = spec.x
            self.prepare_training(
                _spec_shape(x_spec, skip=1),
                _spec_example(x_spec, skip=1),
                tf.zeros([1], _spec_dtype(x_spec)),
            )
            return
        x_spec = _x_spec(self, spec)
        for component in tf.nest.flatten(spec):
            if component.shape.rank == 0:
                raise ValueError(
                    f"{self.x_name}: the dataset yields single rows (element spec {spec}): "
                    "batch it first, e.g. dataset.batch(256)."
                )
        _, y_spec, _ = self._unpack(spec, in_step=False)
        self.check_input_shape(_spec_shape(x_spec))
        self._check_feature_count(_spec_shape(x_spec))
        if y_spec is not None:
            self._checked_target_shape(tf.zeros([1, *(d or 1 for d in y_spec.shape[1:])]))
        self.prepare_training(
            _spec_shape(x_spec), _spec_example(x_spec), tf.zeros([1], _spec_dtype(x_spec))
        )

    def validation_dataset(self, validation_data, batch_size: int):
        """`validation_data` as `fit` takes it, checked, as a dataset in the model's dtype.

        Arrays `(x, y)` or `(x, y, sample_weight)` (for a model of a sample: `samples`,
        `(samples, sample_weight)` or `(samples, None, sample_weight)`) are checked like the
        training data, errors prefixed with `validation_data:`; a dataset is returned as is.
        """
        if not _is_in_memory(validation_data):
            return validation_data
        if not isinstance(validation_data, (tuple, list)):
            validation_data = (validation_data,)
        if self.takes_targets:
            x, y, w = keras.utils.unpack_x_y_sample_weight(tuple(validation_data))
        elif len(validation_data) <= 2:
            # As the dataset elements of a model of a sample: samples or (samples, weights).
            x, y, w = validation_data[0], None, (*validation_data[1:], None)[0]
        elif len(validation_data) == 3 and validation_data[1] is None:
            x, y, w = validation_data
        else:
            raise ValueError(
                f"validation_data: {type(self).__name__} fits a sample: give samples, "
                "(samples, sample_weight) or (samples, None, sample_weight)."
            )
        try:
            checked = self.check_data(x, y, w)
        except (TypeError, ValueError) as error:
            raise type(error)(f"validation_data: {error}") from None
        return data_lib.array_dataset(self._components(*checked), batch_size=batch_size)


#: Rows from which `fit(x, y)` compiles its epochs with XLA when `compile(jit_compile="auto")`.
_XLA_ROWS = 100_000

_BATCH_HOOKS = ("on_train_batch_begin", "on_train_batch_end", "on_batch_begin", "on_batch_end")


def _watches_batches(callbacks) -> bool:
    """Whether a callback acts between the batches of an epoch (so each must be its own call).

    Keras' `TensorBoard` overrides the batch hooks but, with `update_freq="epoch"` and no
    profiling, does nothing in them that an epoch-long step would change.
    """
    for callback in callbacks or []:
        if isinstance(callback, keras.callbacks.TensorBoard):
            if callback.update_freq == "epoch" and not getattr(callback, "_start_batch", 0):
                continue
            return True
        for hook in _BATCH_HOOKS:
            if getattr(type(callback), hook, None) is not getattr(keras.callbacks.Callback, hook):
                return True
    return False


def _flat_targets(y):
    # (B, 1) targets against (B,) predictions would broadcast to (B, B): flatten them.
    if y is not None and len(y.shape) == 2 and y.shape[1] == 1:
        y = y[:, 0]
    return y


def _check_feature_names(names):
    """`feature_names` as a tuple of unique strings, or `None`; a `ValueError` if bad."""
    if names is None:
        return None
    if isinstance(names, str) or not hasattr(names, "__iter__"):
        raise ValueError(f"feature_names must be a list of strings, got {names!r}.")
    names = tuple(names)
    bad = [name for name in names if not isinstance(name, str) or not name]
    if not names or bad:
        raise ValueError(
            f"feature_names must be a non-empty list of non-empty strings, got {list(names)}."
        )
    if len(set(names)) != len(names):
        repeated = sorted({name for name in names if names.count(name) > 1})
        raise ValueError(f"feature_names must be unique; {repeated} repeat.")
    return names


def _check_fixed(fixed, roles):
    """`fixed` as `{name: float or [float or None, ...]}`; a `ValueError` naming it if bad."""
    if fixed is None:
        return {}
    if not isinstance(fixed, dict):
        raise ValueError(f"fixed must be a dict {{parameter name: value}}, got {fixed!r}.")
    result = {}
    for name, value in fixed.items():
        if roles is not None and name not in roles:
            raise ValueError(
                f"fixed: unknown parameter {name!r}; the parameters are {list(roles)}."
            )
        if isinstance(value, (list, tuple, np.ndarray)):
            items = [None if v is None else _fixed_number(name, v) for v in np.ravel(value)]
            if not items or all(v is None for v in items):
                raise ValueError(f"fixed[{name!r}] fixes no component: leave {name!r} out.")
            value = items
        else:
            value = _fixed_number(name, value)
        numbers = value if isinstance(value, list) else [value]
        if (roles or {}).get(name) == "scale" and any(v is not None and v <= 0 for v in numbers):
            raise ValueError(f"fixed[{name!r}] must be > 0 (a scale), got {value!r}.")
        result[name] = value
    return result


def _fixed_number(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ValueError(
            f"fixed[{name!r}] must be a number or a list of numbers and None (a free "
            f"component), got {value!r}."
        )
    if not math.isfinite(float(value)):
        raise ValueError(f"fixed[{name!r}] must be finite, got {value!r}.")
    return float(value)


def _fixed_arrays(name, value, shape, positive):
    """`(mask, values)` of a fixed parameter: which components are fixed, and at what."""
    shape = tuple(shape)
    size = int(np.prod(shape))
    if isinstance(value, list):
        if len(value) != size:
            raise ValueError(
                f"fixed[{name!r}] has {len(value)} component(s), but {name!r} has {size} "
                f"(shape {shape}); give one value (or None, free) per component."
            )
        items = value
    else:
        items = [value] * size
    mask = np.reshape([v is not None for v in items], shape)
    values = np.reshape([0.0 if v is None else v for v in items], shape).astype(np.float64)
    if positive and np.any(values[mask] <= 0):
        raise ValueError(f"fixed[{name!r}] must be > 0 ({name!r} is positive), got {value!r}.")
    return mask, values


def _x_spec(model, spec):
    """The inputs' part of a dataset's element spec: a `tf.TensorSpec`, or for a network a
    dict of them (named inputs)."""
    x_spec, _, _ = keras.utils.unpack_x_y_sample_weight(spec)
    named = (
        model.input_ndim is None
        and isinstance(x_spec, typing.Mapping)
        and len(x_spec) > 0
        and all(isinstance(s, tf.TensorSpec) for s in x_spec.values())
    )
    if not (isinstance(x_spec, tf.TensorSpec) or named):
        raise ValueError(
            f"{model.x_name}: {type(model).__name__} takes one input tensor, got {x_spec}."
        )
    return dict(x_spec) if named else x_spec


def _spec_shape(x_spec, skip=0):
    """The shape of a batch of `x_spec` (a dict of them for named inputs), without the first
    `skip` dimensions (the batch stack of an `EpochBatches`)."""
    if isinstance(x_spec, typing.Mapping):
        return {key: _spec_shape(s, skip) for key, s in x_spec.items()}
    return x_spec.shape[skip:]


def _spec_example(x_spec, skip=0):
    """One row of zeros as a batch of `x_spec` (a dict of them for named inputs)."""
    if isinstance(x_spec, typing.Mapping):
        return {key: _spec_example(s, skip) for key, s in x_spec.items()}
    return tf.zeros([1, *(d or 1 for d in x_spec.shape[skip + 1 :])], x_spec.dtype)


def _spec_dtype(x_spec):
    return tf.nest.flatten(x_spec)[0].dtype


def _check_dtype(dtype):
    """Raises a `ValueError` naming `dtype` unless the model's variables would be float32/64.

    `dtype` is a model's `dtype` argument (`None`: the global policy): `"float32"`,
    `"float64"`, or a mixed precision policy (`"mixed_float16"`, `"mixed_bfloat16"`), whose
    variables, and so the likelihood, stay in float32. Integer and bool dtypes cannot hold the
    parameters, and float16/bfloat16 variables lose the likelihood to rounding.
    """
    try:
        policy = keras.dtype_policies.get(dtype)
    except (TypeError, ValueError) as error:
        raise ValueError(f"dtype: {error}") from None
    if policy.variable_dtype not in ("float32", "float64"):
        name = getattr(policy, "name", dtype)
        hint = (
            f"; for half precision use the mixed policy 'mixed_{policy.variable_dtype}' "
            "(float32 variables, half-precision compute)"
            if policy.variable_dtype in ("float16", "bfloat16")
            else ""
        )
        raise ValueError(
            f"dtype must be 'float32', 'float64' or a mixed precision policy ('mixed_float16', "
            f"'mixed_bfloat16'), got {name!r}: the parameters and the likelihood need float32 "
            f"or float64 variables{hint}."
        )


def _py_dataset_spec(model, dataset):
    """The element spec of a `keras.utils.PyDataset`, from its first batch (`dataset[0]`).

    A PyDataset is indexed, so reading batch 0 consumes nothing. Non-numeric parts get a
    `tf.string` spec, which the checks of `_check_stream` then refuse naming the part.
    """
    if dataset.num_batches == 0:
        raise ValueError(
            f"{model.x_name}: the PyDataset is empty (len 0): there is no batch to fit or evaluate."
        )
    first = dataset[0]
    if isinstance(first, list):
        first = tuple(first)

    def spec_of(part):
        if part is None:
            return None
        try:
            array = np.asarray(part)
        except (TypeError, ValueError):
            return tf.TensorSpec(None, tf.string)
        dtype = tf.as_dtype(array.dtype) if array.dtype.kind in "biuf" else tf.string
        shape = (None, *array.shape[1:]) if array.ndim else ()
        return tf.TensorSpec(shape, dtype)

    return tf.nest.map_structure(spec_of, first)


def _is_in_memory(x):
    return not isinstance(x, (tf.data.Dataset, keras.utils.PyDataset)) and not hasattr(
        x, "__next__"
    )


def _check_callbacks(callbacks):
    """Raises a `TypeError` naming `callbacks` unless it is `None` or a list of callbacks."""
    if callbacks is None:
        return
    if not isinstance(callbacks, (list, tuple)):
        hint = (
            f" (wrap it in a list: callbacks=[{type(callbacks).__name__}(...)])"
            if isinstance(callbacks, keras.callbacks.Callback)
            else ""
        )
        raise TypeError(
            "callbacks must be a list of keras.callbacks.Callback objects, got "
            f"{type(callbacks).__name__}{hint}."
        )
    for index, callback in enumerate(callbacks):
        if not isinstance(callback, keras.callbacks.Callback):
            raise TypeError(
                f"callbacks[{index}] must be a keras.callbacks.Callback, got "
                f"{type(callback).__name__} {callback!r}."
            )


def _check_shuffle(value):
    """`shuffle` as a bool; Keras' `"batch"` and anything but a bool are refused."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str) and value == "batch":
        raise ValueError(
            "shuffle='batch' (Keras' shuffling in batch-sized chunks, for HDF5 data) is not "
            "supported: the arrays are shuffled in memory; pass shuffle=True or False."
        )
    raise TypeError(f"shuffle must be True or False, got {value!r}.")


def _check_initial_epoch(value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"initial_epoch must be an integer >= 0, got {value!r}.")
    return int(value)


def _check_validation_split(value):
    number = data_lib.check_finite_scalar("validation_split", value)
    if not 0.0 <= number < 1.0:
        raise ValueError(f"validation_split must be in [0, 1), got {value!r}.")
    return number


def _default_strategy(model) -> bool:
    """Whether `model` trains under no `tf.distribute` strategy (one device, no replicas).

    The in-graph epoch of `train_arrays` applies the optimizer inside a `tf.while_loop`, which a
    strategy's cross-replica `merge_call` does not allow, even a `MirroredStrategy` of one device.
    """
    with model.distribute_strategy.scope():
        return not tf.distribute.has_strategy()


def _structure(x):
    """A batch as networks take it: an epoch type's (immutable) mapping as a plain dict."""
    return dict(x) if isinstance(x, typing.Mapping) else x


def _split(arrays, fraction):
    """Keras' `validation_split`: the last `fraction` of the rows, before any shuffling."""
    n = data_lib.num_rows(arrays[0])
    at = int(math.floor(n * (1.0 - fraction)))
    if at == 0 or at == n:
        raise ValueError(
            f"validation_split={fraction!r} leaves {at} training and {n - at} validation rows "
            f"of {n}: both need at least one."
        )
    train = tuple(data_lib.take_rows(a, slice(None, at)) for a in arrays)
    validation = tuple(data_lib.take_rows(a, slice(at, None)) for a in arrays)
    return train, validation
