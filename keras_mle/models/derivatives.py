"""The float64 derivatives of a model's likelihood, on arrays and streamed over datasets.

`DerivativesMixin` gives a `MaximumLikelihoodModel` its statistics hooks: the total loss, its
gradient and Hessian from nested `tf.GradientTape`s in float64 (`likelihood_derivatives`), the
same summed over the batches of a dataset (`accumulate_derivatives`), and the per-sample
losses, score and observed information built on them.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from keras_mle import parameters as parameters_lib
from keras_mle.models import arguments

__all__ = ["DerivativesMixin", "LikelihoodDerivatives", "StreamedDerivatives"]


# ---------------------------------------------------------------- statistics hooks
class DerivativesMixin:
    """The float64 statistics hooks of `MaximumLikelihoodModel` (see the module docstring)."""

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
        whole: bool = True,
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
            whole: The data are all the data (`check_data`'s `whole`). `False` for one batch
                of more (`accumulate_derivatives`). Defaults to `True`.

        Raises:
            ValueError: if the parameters are not finite, or `sample_loss` cannot run in float64.
        """
        x64, y64, w = self.check_data(x, y, sample_weight, dtype=np.float64, whole=whole)
        w = np.ones(len(x64)) if w is None else w
        working = self._working_values(params)
        names = self.parameter_names if names is None else list(names)
        unknown = sorted(set(names) - set(working))
        if unknown:
            raise ValueError(f"names: unknown parameter(s) {unknown}; have {self.parameter_names}.")
        x_t, y_t = self.working_data(x64, y64, dtype=tf.float64)
        shapes = [working[name].shape for name in names]

        def unflatten(theta):
            return {**working, **parameters_lib.tf_unflatten(theta, names, shapes)}

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
        theta = parameters_lib.tf_flatten(working, names)
        sample_losses, gradient, matrix = derivatives(theta, x_t, y_t, tf.constant(w))
        user_flat, jacobian = self._to_user(theta, unflatten, names)
        adaptation = self._adaptation
        factor = 1.0 if adaptation is None else adaptation.loss_factor(self.sample_loss_kind)
        fixed, exact = self._fixed_components(names, shapes, params)
        flat_params = user_flat
        if fixed.any():
            # Exactly the fixed values, not their round trip through the working space.
            flat_params = np.where(fixed, exact, flat_params)
        return LikelihoodDerivatives(
            names=tuple(label for name in names for label in self.component_names(name)),
            params=flat_params,
            sample_losses=self.user_losses(sample_losses).numpy(),
            weights=w,
            gradient=factor * gradient.numpy(),
            hessian=None if matrix is None else factor * matrix.numpy(),
            jacobian=jacobian,
            fixed=fixed,
        )

    def _to_user(self, theta, unflatten, names):
        """The user's values of the working `theta` (flat, float64) and their Jacobian."""
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(theta)
            user = unflatten(theta)
            if self._adaptation is not None:
                user = self._adaptation.to_user(user, self.parameter_roles)
            user_flat = parameters_lib.tf_flatten(user, names)
        jacobian = tape.jacobian(user_flat, theta, experimental_use_pfor=False)
        size = int(user_flat.shape[0])
        return user_flat.numpy(), jacobian.numpy().reshape(size, size)

    def _fixed_components(self, names, shapes, params):
        """`(fixed, exact)` over the components of `names`: the mask and the fixed values."""
        fixed, exact = [], []
        for name, shape in zip(names, shapes, strict=True):
            parameter = self._parameters[name]
            size = shape.num_elements()
            if parameter.is_fixed:
                given = (params or {}).get(name)
                values = parameter.fixed_values if given is None else given
                fixed.append(np.reshape(parameter.fixed_mask, -1))
                values = np.broadcast_to(np.asarray(values, np.float64), tuple(shape))
                exact.append(np.reshape(values, -1))
            else:
                fixed.append(np.zeros(size, bool))
                exact.append(np.zeros(size))
        if not fixed:
            return np.zeros(0, bool), np.zeros(0)
        return np.concatenate(fixed), np.concatenate(exact)

    def per_sample_loss(self, x, y=None, *, params=None) -> np.ndarray:
        """`l_i`: each sample's loss (NLL, or squared error) in the user's units, in float64."""
        x64, y64, _ = self.check_data(x, y, dtype=np.float64, whole=False)
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
                x, y, w, params=params, names=names, hessian=hessian, compiled=compiled, whole=False
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
        arguments.x_spec(self, spec)
        self.unpack(spec, in_step=False)
        for index, element in enumerate(dataset):
            x, y, w = self.unpack(element, in_step=False)
            x, y, w = (None if a is None else np.asarray(a) for a in (x, y, w))
            if len(x) == 0:
                continue
            all_zero = w is not None and w.size > 0 and np.all(w == 0)
            try:
                x, y, w = self.check_data(
                    x, y, None if all_zero else w, dtype=np.float64, whole=False
                )
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
