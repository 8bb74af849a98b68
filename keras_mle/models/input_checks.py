"""The checks every training and evaluation step runs on its batch, and how a refusal is reported.

A step hands its batch, its loss and its update to the model's `InputCheck` (`guard`), which
applies the update only if the batch passed (a finite loss, no negative weight) and no earlier
batch of the epoch failed, and otherwise records which argument was at fault (NaN or Inf in x,
y or the weights; negative weights) and where. `InputCheckCallback`,
first in `fit`'s and the loops' callback lists, turns a refusal into a `ValueError` naming the
argument, the epoch and the batch, before any other callback sees the epoch.
"""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["InputCheck", "InputCheckCallback", "apply_if"]

#: What each bit of an input-check code means: (argument, problem).
_INPUT_PROBLEMS = (
    ("x", "NaN or Inf values"),
    ("y", "NaN or Inf values"),
    ("sample_weight", "NaN or Inf values"),
    ("sample_weight", "negative values"),
)


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

    def guard(self, x, y, sample_weight, loss, local, apply=None, gradients=None):
        """Runs `apply(gradients)` then `local()` if the batch passes; else records why not.

        A batch passes when its `loss` is finite, no weight is negative and no earlier batch
        of the epoch failed. A batch that fails is examined (`_examine`) and, if its data are
        at fault, recorded (the first one only) and skipped; a non-finite loss from finite data
        is not the data's fault, and the step goes on. On one device this is a single
        `tf.cond` per step; under a multi-replica strategy the examination is all-reduced so
        that every replica decides alike (see `apply_if`).
        """
        negative = (
            tf.constant(False)
            if sample_weight is None
            else tf.reduce_any(tf.convert_to_tensor(sample_weight) < 0)
        )
        suspect = tf.logical_or(tf.logical_not(tf.math.is_finite(loss)), negative)
        clean = self.clean()
        self.batches.assign_add(1.0)

        def accept():
            if apply is not None:
                apply(gradients)
            local()

        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            flags = tf.cond(
                suspect,
                lambda: _examine(x, y, sample_weight, negative),
                lambda: tf.zeros([len(_INPUT_PROBLEMS)]),
            )
            problems = _code(context.all_reduce(tf.distribute.ReduceOp.SUM, flags))
            first = tf.logical_and(clean, problems > 0)
            self.bad_batch.assign(tf.where(first, self.batches, self.bad_batch))
            self.problems.assign(tf.where(first, tf.cast(problems, "float32"), self.problems))
            ok = tf.logical_and(clean, tf.equal(problems, 0))
            if apply is not None:
                apply_if(ok, apply, gradients)
            tf.cond(ok, local, lambda: None)
            return

        def examine():
            problems = _code(_examine(x, y, sample_weight, negative))

            def refuse():
                self.bad_batch.assign(self.batches)
                self.problems.assign(tf.cast(problems, "float32"))

            tf.cond(tf.equal(problems, 0), accept, refuse)

        ok = tf.logical_and(clean, tf.logical_not(suspect))
        tf.cond(ok, accept, lambda: tf.cond(clean, examine, lambda: None))

    def result(self):
        return self.problems

    def reset_state(self):
        for variable in self.variables:
            variable.assign(0.0)

    def raise_if_refused(self, where: str):
        problems = int(self.problems.numpy())
        if not problems:
            return
        argument, problem = next(p for i, p in enumerate(_INPUT_PROBLEMS) if problems >> i & 1)
        raise ValueError(
            f"{argument} has {problem} in {where}, batch {int(self.bad_batch.numpy())} of the "
            "data: stopped before applying that batch (the parameters are those before it). "
            "Clean or filter the data (e.g. dataset.filter(...))."
        )


class InputCheckCallback(keras.callbacks.Callback):
    """Turns a batch refused by a step into a `ValueError`, before any other callback sees it."""

    def on_train_begin(self, logs=None):
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.model.train_input_check.reset_state()

    def on_epoch_end(self, epoch, logs=None):
        self.model.train_input_check.raise_if_refused(f"epoch {epoch + 1}")

    def on_test_begin(self, logs=None):
        # Validation runs before on_epoch_end: report a refused training batch first.
        if getattr(self, "epoch", None) is not None:
            self.model.train_input_check.raise_if_refused(f"epoch {self.epoch + 1}")
        self.model.test_input_check.reset_state()

    def on_test_end(self, logs=None):
        self.model.test_input_check.raise_if_refused("evaluation")


def _examine(x, y, sample_weight, negative):
    """Which of `_INPUT_PROBLEMS` a batch has, as 0/1 flags."""

    def bad(value):
        value = tf.convert_to_tensor(value)
        if value is None or not value.dtype.is_floating:
            return tf.constant(False)
        return tf.logical_not(tf.reduce_all(tf.math.is_finite(value)))

    none = tf.constant(False)
    flags = [
        bad(x),
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
