"""`MaximumLikelihoodModel`: the base class of every keras_mle model, over its trainer.

The model owns its maths: its parameters (`keras_mle.models.registry`), the per-sample loss a
subclass writes, the checked optimizer step and the evaluation step, the metrics, `adapt` and
its config. `fit`, `evaluate` and `predict` come from the trainer beneath it
(`keras_mle.models.trainer`), and the float64 statistics hooks from
`keras_mle.models.derivatives`.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_mle import data as data_lib
from keras_mle import metrics as metrics_lib
from keras_mle import newton
from keras_mle.models import arguments, registry
from keras_mle.models.adapt import AdaptMixin
from keras_mle.models.adaptation import Adaptation
from keras_mle.models.derivatives import DerivativesMixin, LikelihoodDerivatives
from keras_mle.models.input_checks import InputCheck
from keras_mle.models.registry import ParameterRegistry
from keras_mle.models.trainer import Trainer
from keras_mle.parameters import Parameter

__all__ = ["MaximumLikelihoodModel", "Parameter", "LikelihoodDerivatives"]


class MaximumLikelihoodModel(ParameterRegistry, AdaptMixin, DerivativesMixin, Trainer):
    """A Keras model fitted by minimising a per-sample loss (an NLL, or a squared error).

    A subclass declares its parameters with `add_parameter` (in `__init__` or `build`) and writes
    its formula in `sample_loss(params, x, y)`, the per-sample negative log-likelihood (or squared
    error) as a function of the *natural* parameter values, and its mean prediction in
    `mean(params, x)`, a function of the same values in the user's units: the base class feeds
    both, so `predict` and the compiled metrics are right after `adapt` too. It then gets
    `fit`, `evaluate`, `predict`, `save`/`load`, the custom loops of `keras_mle.loops`,
    `model.params`, and the statistics hooks (`per_sample_loss`, `score`,
    `observed_information`, `likelihood_derivatives`) that `keras_mle.inference` and the
    callbacks are built on. Where the MLE has a closed form, `closed_form` returns it.

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

        def mean(self, params, x):
            return tf.exp(x[:, 0] * params["w"][0] + params["b"])

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
        arguments.check_dtype(kwargs.get("dtype"))
        feature_names = registry.checked_feature_names(feature_names)
        fixed = registry.checked_fixed(fixed, type(self).parameter_roles)
        super().__init__(**kwargs)
        self._feature_names = feature_names
        self._fixed = fixed
        self._parameters = {}
        #: The seed of the rows' order in a shuffled `fit(x, y)` (drawn from NumPy's generator
        #: at the start of each `fit`; kept in a `BackupAndRestore` backup for its resume).
        self.shuffle_seed = None
        #: Why the last fit stopped early (a divergence), or `None`; set by the input-check
        #: callback at the end of the epoch that diverged.
        self.divergence = None
        self.loss_tracker = metrics_lib.LossMean(name="loss", dtype=self.likelihood_dtype)
        # Set by the steps when they refuse a batch; read by the fit/evaluate input-check callback.
        self.train_input_check = InputCheck(name="train_input_check")
        self.test_input_check = InputCheck(name="test_input_check")
        self._adaptation = (
            None if adaptation is None else self.adaptation_class.from_config(adaptation)
        )

    @property
    def likelihood_dtype(self) -> str:
        """The dtype of the likelihood maths: the variables' (float32 under mixed precision)."""
        return self.dtype_policy.variable_dtype

    # ---------------------------------------------------------------- the maths
    def sample_loss(self, params: dict, x, y):
        """Per-sample loss (negative log-likelihood or squared error), shape `(B,)`.

        Args:
            params: Natural parameter values, as from `params_tensors()`.
            x: A batch of inputs (for a model of a sample: the observations).
            y: A batch of targets, shape `(B,)`, or `None`.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement sample_loss().")

    def mean(self, params: dict, x):
        """The mean prediction `E[y | x]` at the natural parameters `params`, shape `(B,)`.

        `params` are in the user's units (as `model.params` reports them, whatever `adapt`
        did), and `x` is the data as given, in the model's data dtype. `call`, and so `predict`
        and the compiled metrics, feed it. Write it, like `sample_loss`, as a formula of
        `params`: reading the variables (`params_tensors()`) in it would mix the working space
        of `adapt` with the user's data.
        """
        raise NotImplementedError(
            f"{type(self).__name__} has no mean prediction: define mean(self, params, x) (the "
            "parameters in the user's units, as sample_loss gets them) for predict() and metrics."
        )

    def call(self, x):
        """The mean prediction at the current parameters: `mean(user params, x)`."""
        return self.mean(self.user_params_tensors(self.data_dtype), x)

    # `adapt` checks this mark: a model whose `call` is another cannot be adapted safely.
    call.feeds_mean = True

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

    def refine(self, x, y=None, sample_weight=None, *, max_steps=20, tol=1e-10):
        """Float64 Newton steps to the optimum (`keras_mle.refine.refine`); returns its report."""
        return newton.refine(self, x, y, sample_weight, max_steps=max_steps, tol=tol)

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
        y = arguments.flat_targets(y)
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
        self.train_input_check.check_state(self.trainable_variables)

    def evaluation_step(self, x, y=None, sample_weight=None):
        """The loss and metrics of one batch, without a step (what `test_step` runs)."""
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

    def _metric_inputs(self, x, y):
        """`(x, targets, predictions)` for the compiled metrics, or `None` when there are none.

        Targets (for a model of a sample: the sample) and mean predictions go in as `(B, 1)`
        columns: Keras' mean metrics average over the last axis, so `(B,)` vectors would make
        every batch a single value and the epoch an unweighted mean of batch means.
        """
        if len(self.metrics) == 1:
            return None
        targets = arguments.flat_targets(y if self.takes_targets else x)
        return x, targets[:, None], self.call(x)[:, None]

    def _update_metrics(self, sample_losses, weights, predictions):
        self.loss_tracker.update_state(sample_losses, sample_weight=weights)
        if predictions is not None:
            x, targets, means = predictions
            self.compute_metrics(x, targets, means, sample_weight=weights)

    def metric_results(self):
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
        return arguments.flat_targets(y)

    def unpack(self, data, *, in_step=True):
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
    def check_data(self, x, y=None, sample_weight=None, *, dtype=None, whole=True):
        """Validates in-memory data before any work; returns `(x, y, sample_weight)` as arrays.

        Raises `ValueError` (`TypeError` for non-numeric data) naming the argument. The arrays
        are returned in `dtype` (default: the model's `data_dtype`); a cast that would lose
        information gives a `keras_mle.PrecisionWarning`. A DataFrame `x` is checked against
        `feature_names` (`check_feature_names`), and gives the model its names if it has none.
        With `whole` (the default) the arrays are all the data, and `check_whole_data` checks
        what only the whole can show (a constant sample, say); `False` for one batch of more.
        """
        dtype = self.data_dtype if dtype is None else dtype
        if not self.takes_targets and y is not None:
            raise ValueError(f"y must be None: {type(self).__name__} fits a sample, not targets.")
        columns = self.check_feature_names(x)
        given = x
        x, y = data_lib.check_xy(x, y, x_name=self.x_name, x_ndim=self.input_ndim)
        if self.takes_targets and y is None:
            raise ValueError(f"y is required: {type(self).__name__} fits targets y given x.")
        sample_weight = data_lib.check_sample_weight(
            sample_weight, data_lib.num_rows(x), aligned_with=(self.x_name, given)
        )
        self.check_input_shape(data_lib.inputs_shape(x))
        self._check_feature_count(data_lib.inputs_shape(x))
        if columns is not None and self._feature_names is None:
            self._feature_names = columns
        x = data_lib.cast_for_model(self.x_name, x, dtype)
        y = None if y is None else data_lib.cast_for_model("y", y, dtype)
        if sample_weight is not None:
            sample_weight = sample_weight.astype(dtype)
        if whole:
            self.check_whole_data(x, y, sample_weight)
        return x, y, sample_weight

    def check_whole_data(self, x, y, sample_weight) -> None:
        """Checks what only all the data can show (`check_data`'s arrays); nothing by default.

        A model whose MLE does not exist for some data (a constant sample or constant targets
        for a noise scale) refuses them here, with a `ValueError` naming the argument.
        """

    def check_input_shape(self, shape) -> None:
        """Raises a `ValueError` naming `x` if batches of this shape do not fit the model.

        The default accepts anything; models with a fixed number of features check it.
        """

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

    def components(self, x, y, sample_weight):
        # The element layout of `unpack`: (x, y, w) for a regression, (x, w) for a sample.
        parts = (x, y, sample_weight) if self.takes_targets else (x, sample_weight)
        return tuple(a for a in parts if a is not None)
