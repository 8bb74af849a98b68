"""The checks every training and evaluation step runs on its batch, and how a refusal is reported.

A step computes an input-check code for its batch (`input_problems`: NaN or Inf in x, y or the
weights, negative weights), records it in an `InputCheck` of the model, and applies the batch
only if it passed and no earlier batch of the epoch failed (`apply_if`). `InputCheckCallback`,
first in `fit`'s and the loops' callback lists, turns a refusal into a `ValueError` naming the
argument, the epoch and the batch, before any other callback sees the epoch.
"""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["InputCheck", "InputCheckCallback", "input_problems", "apply_if"]

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

    def record(self, problems):
        """Counts a batch with these problems; returns whether the step may use it."""
        clean = self.clean()
        passed = tf.equal(problems, 0)
        self.batches.assign_add(1.0)

        def refuse():
            self.bad_batch.assign(self.batches)
            self.problems.assign(tf.cast(problems, "float32"))

        tf.cond(tf.logical_and(clean, tf.logical_not(passed)), refuse, lambda: None)
        return tf.logical_and(passed, clean)

    def update_state(self, problems):
        self.record(problems)

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


def input_problems(x, y, sample_weight):
    """The input-check code of a batch (bits: see `_INPUT_PROBLEMS`), global across replicas."""

    def finite(value):
        value = tf.convert_to_tensor(value)
        if not value.dtype.is_floating:
            return tf.constant(True)
        return tf.reduce_all(tf.math.is_finite(value))

    checks = [tf.logical_not(finite(x))]
    checks.append(tf.constant(False) if y is None else tf.logical_not(finite(y)))
    if sample_weight is None:
        checks += [tf.constant(False), tf.constant(False)]
    else:
        checks.append(tf.logical_not(finite(sample_weight)))
        checks.append(tf.reduce_any(tf.convert_to_tensor(sample_weight) < 0))
    flags = tf.cast(tf.stack(checks), tf.float32)
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        flags = context.all_reduce(tf.distribute.ReduceOp.SUM, flags)
    bits = tf.constant([1 << i for i in range(len(_INPUT_PROBLEMS))], tf.int32)
    return tf.reduce_sum(tf.where(flags > 0, bits, 0))


def apply_if(ok, apply, gradients):
    """`apply(gradients)` when `ok`, the same way on every replica.

    Under a multi-replica strategy the optimizer synchronises through `merge_call`, which cannot
    run inside a replica's `tf.cond`: decide in cross-replica context instead (as Keras'
    `LossScaleOptimizer` does). `ok` is the same on every replica, since the check is
    all-reduced. `apply` must not capture replica-local tensors: it runs with the first
    replica's closure on every replica, and gets each replica's own `gradients`.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        tf.cond(ok, lambda: apply(gradients), lambda: None)
        return

    def cross_replica(strategy, ok, gradients):
        first_ok = strategy.experimental_local_results(ok)[0]

        def apply_everywhere():
            strategy.extended.call_for_each_replica(apply, args=(gradients,))

        tf.cond(first_ok, apply_everywhere, lambda: None)

    context.merge_call(cross_replica, args=(ok, gradients))
