"""The checks every training and evaluation step runs, and how a refusal is reported.

A step hands its batch, whether its loss and gradients are finite, and its update to the
model's `InputCheck` (`guard`), which applies the update only if the step passed (finite loss
and gradients, no negative weight) and no earlier step of the epoch failed. Otherwise it records
why, and where: NaN or Inf in x, y or the weights, or negative weights (the data's fault), or a
non-finite loss or gradient from clean data (`DIVERGED`). `InputCheckCallback`, first in `fit`'s
and the loops' callback lists, turns the data's fault into a `ValueError` naming the argument, the
epoch and the batch, and divergence into a stop with a `keras_mle.DivergenceWarning`, before any
other callback sees the epoch.
"""

from __future__ import annotations

import math
import warnings

import keras
import tensorflow as tf

from keras_mle.errors import DivergenceWarning

__all__ = ["DIVERGED", "InputCheck", "InputCheckCallback", "apply_if"]

#: What each bit of an input-check code means: (argument, problem).
_INPUT_PROBLEMS = (
    ("x", "NaN or Inf values"),
    ("y", "NaN or Inf values"),
    ("sample_weight", "NaN or Inf values"),
    ("sample_weight", "negative values"),
)
#: Epochs in a row of a rising full-batch loss that `InputCheckCallback` takes for divergence.
RISING_EPOCHS = 10
#: How far above its lowest value (in units of `|lowest| + 1`) the loss must have risen then.
RISE_TOLERANCE = 0.01

#: The code bit of a step refused because its loss or a gradient was not finite, from clean data.
DIVERGED = 1 << len(_INPUT_PROBLEMS)


class InputCheck(keras.metrics.Metric):
    """The first batch a step refused in this epoch: what was wrong with it, and where.

    Not one of the model's reported metrics; `InputCheckCallback` resets and reads it. The
    values are the same on every replica (the check is all-reduced), hence mean aggregation.
    """

    def __init__(self, name):
        super().__init__(name=name, dtype="float32")
        self.problems = self.add_variable(
            (), "zeros", name="problems", aggregation="mean", dtype="float32"
        )
        self.batches = self.add_variable(
            (), "zeros", name="batches", aggregation="mean", dtype="float32"
        )
        self.bad_batch = self.add_variable(
            (), "zeros", name="bad_batch", aggregation="mean", dtype="float32"
        )

    def clean(self):
        return tf.equal(self.problems, 0.0)

    def check_state(self, variables) -> None:
        """Records divergence at this batch if an accepted update left a variable NaN or Inf.

        Called in the step after its update: a finite gradient can still overflow a parameter
        (a large step on large data), which no later check of a loss or gradient would blame on
        this batch, or catch at all in an epoch's last step.
        """
        values = [tf.convert_to_tensor(v) for v in variables]
        flags = [tf.reduce_all(tf.math.is_finite(v)) for v in values if v.dtype.is_floating]
        if not flags:
            return
        first = tf.logical_and(self.clean(), tf.logical_not(tf.reduce_all(flags)))
        self.bad_batch.assign(tf.where(first, self.batches, self.bad_batch))
        self.problems.assign(tf.where(first, float(DIVERGED), self.problems))

    def epoch_state(self, model) -> EpochState:
        """The compiled functions over `model`'s training state, made once per optimizer.

        Kept here, with the model, so that a new `fit` or loop does not trace them again.
        """
        optimizer = getattr(model, "optimizer", None)
        state = getattr(self, "_epoch_state", None)
        if state is None or state.optimizer is not optimizer:
            state = EpochState(model)
            # (A plain object: Keras does not track it, so its variables stay the model's.)
            self._epoch_state = state
        return state

    def guard(self, x, y, sample_weight, finite, local, apply=None, gradients=None, examine=True):
        """Runs `apply(gradients)` then `local()` if the step passes; else records why not.

        A training step (`apply` given) passes when `finite` (its loss and gradients are
        finite), no weight is negative and no earlier step of the epoch failed. A step that fails
        is examined (`_examine`): NaN or Inf in its data, or negative weights, are recorded as the
        data's fault; a non-finite loss or gradient from clean data as `DIVERGED`. Either way the
        update is not applied, and neither are the later steps of the epoch. An evaluation step
        (no `apply`) refuses only data at fault: a non-finite loss from clean data is the model's
        value, and is reported as it is.

        `examine=False` is for batches of data checked before training: the step is then refused
        as `DIVERGED` without looking at the batch, whose capture in the `tf.cond` would cost a
        copy of it. On one device this is a single `tf.cond` per step; under a `tf.distribute`
        strategy (even of one replica) the examination is all-reduced so that every replica
        decides alike (`apply_if`).
        """
        negative = (
            tf.constant(False)
            if sample_weight is None or not examine
            else tf.reduce_any(tf.convert_to_tensor(sample_weight) < 0)
        )
        suspect = tf.logical_or(tf.logical_not(finite), negative)
        clean = self.clean()
        self.batches.assign_add(1.0)
        training = apply is not None

        def accept():
            if training:
                apply(gradients)
            local()

        def problems_of(flags):
            """The code of a suspect step: the data's faults, else divergence (or none)."""
            data = _code(flags)
            fallback = DIVERGED if training else 0
            return tf.where(tf.equal(data, 0), fallback, data)

        def examined():
            if not examine:
                return tf.zeros([len(_INPUT_PROBLEMS)])
            return _examine(x, y, sample_weight, negative)

        def record(problems):
            first = tf.logical_and(clean, problems > 0)
            self.bad_batch.assign(tf.where(first, self.batches, self.bad_batch))
            self.problems.assign(tf.where(first, tf.cast(problems, "float32"), self.problems))

        context = tf.distribute.get_replica_context()
        if context is not None and tf.distribute.has_strategy():
            # (Any strategy, even one replica: its optimizer's merge_call cannot run in a cond.)
            flags = tf.cond(
                suspect,
                lambda: tf.concat([examined(), [1.0]], 0),
                lambda: tf.zeros([len(_INPUT_PROBLEMS) + 1]),
            )
            flags = context.all_reduce(tf.distribute.ReduceOp.SUM, flags)
            problems = tf.where(flags[-1] > 0, problems_of(flags[:-1]), 0)
            record(problems)
            ok = tf.logical_and(clean, tf.equal(problems, 0))
            if training:
                apply_if(ok, apply, gradients)
            tf.cond(ok, local, lambda: None)
            return

        def refuse():
            problems = problems_of(examined())
            record(problems)
            tf.cond(tf.logical_and(clean, tf.equal(problems, 0)), accept, lambda: None)

        tf.cond(tf.logical_and(clean, tf.logical_not(suspect)), accept, refuse)

    def result(self):
        return self.problems

    def reset_state(self):
        for variable in self.variables:
            variable.assign(0.0)

    def refused(self) -> int:
        """The code of the first step refused since the last reset (0 when none)."""
        return int(self.problems.numpy())

    def raise_if_refused(self, where: str):
        """Raises the `ValueError` for data at fault, if a step refused its batch for that."""
        problems = self.refused() & ~DIVERGED
        if not problems:
            return
        argument, problem = next(p for i, p in enumerate(_INPUT_PROBLEMS) if problems >> i & 1)
        raise ValueError(
            f"{argument} has {problem} in {where}, batch {int(self.bad_batch.numpy())} of the "
            "data: stopped before applying that batch (the parameters are those before it). "
            "Clean or filter the data (e.g. dataset.filter(...))."
        )


class InputCheckCallback(keras.callbacks.Callback):
    """Acts on a step the model refused, before any other callback sees the epoch.

    Data at fault raise a `ValueError` naming the argument, the epoch and the batch. Divergence
    (a non-finite loss or gradient from clean data) stops training with a
    `keras_mle.DivergenceWarning`: the parameters and optimizer state are those before the
    refused step, or, if an update had already made them non-finite (a finite gradient whose
    update overflowed, which `InputCheck.check_state` records), those at the start of the
    epoch. The reason goes to `model.divergence` and to the History as
    `stop_reason`, as `ConvergenceStopping` records its own.

    With `full_batch=True` (every epoch one step on all the data: a deterministic objective),
    a loss that rises for `RISING_EPOCHS` epochs in a row, to more than `RISE_TOLERANCE` (in
    units of `|best| + 1`) above the lowest loss, is divergence too: such an objective rises
    only when the step is too large. The parameters and optimizer state come back to those of
    the epoch with the lowest loss.

    Args:
        full_batch: Every epoch is one step on all the data. Defaults to `False`.
    """

    def __init__(self, full_batch: bool = False):
        super().__init__()
        self.full_batch = bool(full_batch)

    def on_train_begin(self, logs=None):
        self.epoch = 0
        self.model.divergence = None
        # The lowest full-batch loss so far, `(loss, epoch, state at that epoch's start)`, the
        # loss before, and the epochs in a row whose loss rose.
        self._best, self._previous, self._rises = None, None, 0
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and not optimizer.built and self.model.built:
            # Built now, as the first step would, so that the epoch's start includes its state.
            optimizer.build(self.model.trainable_variables)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        state = self.model.train_input_check.epoch_state(self.model)
        self._variables, self._finite = state.variables, state.finite
        self._start = state.start()

    def on_epoch_end(self, epoch, logs=None):
        self._act(f"epoch {epoch + 1}")
        if self.full_batch and not self.model.divergence:
            self._watch_loss(epoch, (logs or {}).get("loss"))

    def _watch_loss(self, epoch, loss):
        if loss is None or not math.isfinite(float(loss)):
            return
        loss = float(loss)  # the loss at the epoch's start: a full-batch step logs it before
        if self._best is None or loss < self._best[0]:
            self._best = (loss, epoch, self._start)
        self._rises = self._rises + 1 if self._previous is not None and loss > self._previous else 0
        self._previous = loss
        best, best_epoch, state = self._best
        if self._rises >= RISING_EPOCHS and loss - best > RISE_TOLERANCE * (abs(best) + 1.0):
            for variable, value in zip(self._variables, state, strict=True):
                variable.assign(value)
            self._diverged(
                f"diverged in epoch {epoch + 1}: the full-batch loss rose for {self._rises} "
                f"epochs in a row, from {best:.6g} (epoch {best_epoch + 1}) to {loss:.6g}, "
                "which a step of the right size never does; the parameters and optimizer state "
                f"are those of epoch {best_epoch + 1}, at the lowest loss"
            )

    def on_test_begin(self, logs=None):
        # Validation runs before on_epoch_end: act on a refused training step first.
        if getattr(self, "epoch", None) is not None:
            self._act(f"epoch {self.epoch + 1}")
        self.model.test_input_check.reset_state()

    def on_test_end(self, logs=None):
        self.model.test_input_check.raise_if_refused("evaluation")

    def on_train_end(self, logs=None):
        history = getattr(self.model, "history", None)
        if self.model.divergence and isinstance(history, keras.callbacks.History):
            history.history["stop_reason"] = [self.model.divergence]

    def _act(self, where):
        check = self.model.train_input_check
        if not check.refused():
            return
        check.raise_if_refused(where)
        if self.model.divergence:
            return
        restored = not bool(self._finite())
        if restored:
            self._restore_epoch_start()
        state = "at the start of the epoch" if restored else "before that batch"
        self._diverged(
            f"diverged in {where}, batch {int(check.bad_batch.numpy())}: the loss, a gradient or "
            f"an update was NaN or Inf; the parameters and optimizer state are those {state}"
        )

    def _restore_epoch_start(self):
        for variable, value in zip(self._variables, self._start, strict=True):
            variable.assign(value)

    def _diverged(self, reason):
        self.model.divergence = reason
        warnings.warn(
            f"Training {reason}. Try a smaller learning rate, or model.adapt(x, y) before fit() "
            "so that the data are well scaled.",
            DivergenceWarning,
            stacklevel=3,
        )
        self.model.stop_training = True


class EpochState:
    """The training state of a model (its trainable and optimizer variables) at an epoch.

    `start()` resets the training check and returns the variables' values (what a divergence
    restores); `finite()` says whether they are all finite. One compiled call each: eager reads
    and assigns, one per variable, cost more than a small model's whole epoch.
    """

    def __init__(self, model):
        self.optimizer = getattr(model, "optimizer", None)
        self.variables = _state_variables(model)
        check, variables = model.train_input_check, self.variables

        def start():
            for variable in check.variables:
                variable.assign(tf.zeros_like(variable))
            return [tf.identity(variable) for variable in variables]

        def finite():
            values = [tf.convert_to_tensor(v) for v in variables]
            flags = [tf.reduce_all(tf.math.is_finite(v)) for v in values if v.dtype.is_floating]
            return tf.reduce_all(flags) if flags else tf.constant(True)

        self.start = tf.function(start, autograph=False)
        self.finite = tf.function(finite, autograph=False)


def _state_variables(model):
    """The trainable variables and the optimizer's: what a divergence may spoil."""
    optimizer = getattr(model, "optimizer", None)
    extra = list(optimizer.variables) if optimizer is not None and optimizer.built else []
    return [*model.trainable_variables, *extra]


def _examine(x, y, sample_weight, negative):
    """Which of `_INPUT_PROBLEMS` a batch has, as 0/1 flags."""

    def bad(value):
        value = tf.convert_to_tensor(value)
        if value is None or not value.dtype.is_floating:
            return tf.constant(False)
        return tf.logical_not(tf.reduce_all(tf.math.is_finite(value)))

    none = tf.constant(False)
    flags = [
        tf.reduce_any([bad(part) for part in tf.nest.flatten(x)]),  # (a dict: named inputs)
        none if y is None else bad(y),
        none if sample_weight is None else bad(sample_weight),
        negative,
    ]
    return tf.cast(tf.stack(flags), tf.float32)


def _code(flags):
    bits = tf.constant([1 << i for i in range(len(_INPUT_PROBLEMS))], tf.int32)
    return tf.reduce_sum(tf.where(flags > 0, bits, 0))


def apply_if(ok, apply, gradients):
    """`apply(gradients)` when `ok`, on every replica of a multi-replica strategy alike.

    The optimizer synchronises through `merge_call`, which cannot run inside a replica's
    `tf.cond`: the decision is taken in cross-replica context instead (as Keras'
    `LossScaleOptimizer` does). `ok` must be the same on every replica, and `apply` must not
    capture replica-local tensors: it runs with the first replica's closure on every replica,
    and gets each replica's own `gradients`.
    """

    def cross_replica(strategy, ok, gradients):
        first_ok = strategy.experimental_local_results(ok)[0]

        def apply_everywhere():
            strategy.extended.call_for_each_replica(apply, args=(gradients,))

        tf.cond(first_ok, apply_everywhere, lambda: None)

    tf.distribute.get_replica_context().merge_call(cross_replica, args=(ok, gradients))
