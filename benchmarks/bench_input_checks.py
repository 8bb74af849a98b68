"""Cost of the step's checks at N=10,000,000 in batches of 100,000.

Every training step is guarded: its update is applied only if its loss and gradients are finite
(divergence) and, for data not checked beforehand, no weight is negative; the batch is examined
for NaN or Inf only when the step fails.

- In-memory arrays are checked once, in NumPy, before training (`check_data`, and
  `keras_mle.data.stack_batches` for the compiled loops and `epoch_dataset`); the steps of
  `train_batches` then run the divergence guard only (`apply_step(..., checked=True)`).
- Streamed batches (`tf.data`, generators, `PyDataset`) get the full check in the step.

Timed against a step with no guard at all (a subclass defined here, for the measurement only),
alternating in one run: the one NumPy check against one XLA epoch; the XLA loop with the
divergence guard; `fit()` on a cached `tf.data.Dataset` with the full check; and the step alone on
one batch, in a plain graph and under XLA, interleaved.

    python benchmarks/bench_input_checks.py            # N=1e7
    python benchmarks/bench_input_checks.py --quick    # N=1e6
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_mle  # noqa: E402

BATCH = 100_000


class UnguardedLinearRegression(keras_mle.LinearRegression):
    """The same model with a step that applies every batch unguarded (for timing only)."""

    def apply_step(self, x, y=None, sample_weight=None, *, checked=True):
        _, gradients, sample_losses, weights = self.compute_loss_and_gradients(
            x, y, sample_weight, scale_loss=self.optimizer.scale_loss
        )
        self.optimizer.apply(gradients, self.trainable_variables)
        self.loss_tracker.update_state(sample_losses, sample_weight=weights)


class EpochTimer(keras.callbacks.Callback):
    """Wall time of every epoch."""

    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)

    def median(self):
        return float(np.median(self.times[1:]))  # the first epoch traces and compiles


def xla_epoch_seconds(cls, x, y, epochs=6):
    timer = EpochTimer()
    keras_mle.loops.train(
        cls(m_initializer="zeros"),
        x,
        y,
        epochs=epochs,
        batch_size=BATCH,
        optimizer=keras.optimizers.SGD(0.1),
        mode="xla",
        callbacks=[timer],
        verbose=0,
    )
    return timer.median()


def array_check_seconds(x, y):
    """The checks `stack_batches` runs (finite values; weights would add one more pass)."""
    start = time.perf_counter()
    keras_mle.data.check_xy(x, y)
    return time.perf_counter() - start


def dataset_epoch_seconds(cls, dataset, epochs=6):
    model = cls(m_initializer="zeros")
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=True)
    timer = EpochTimer()
    model.fit(dataset, epochs=epochs, verbose=0, callbacks=[timer])
    return timer.median()


STEPS = {
    "full check": (keras_mle.LinearRegression, False),
    "divergence guard": (keras_mle.LinearRegression, True),
    "no guard": (UnguardedLinearRegression, True),
}


def step_functions(x, y, jit_compile):
    """One compiled `apply_step` per variant of `STEPS`, on one batch."""
    functions = {}
    for name, (cls, checked) in STEPS.items():
        model = cls(m_initializer="zeros")
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        model(x[:2])
        model.optimizer.build(model.trainable_variables)

        def step(x, y, model=model, checked=checked):
            model.apply_step(x, y, checked=checked)

        function = tf.function(step, jit_compile=jit_compile)
        function(x, y)
        functions[name] = function
    return functions


def interleaved_step_seconds(functions, x, y, rounds=30, calls=20):
    times = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            start = time.perf_counter()
            for _ in range(calls):
                function(x, y)
            times[name].append((time.perf_counter() - start) / calls)
    return {name: float(np.median(t)) for name, t in times.items()}


def row(label, with_checks, without, unit=1e3, suffix="ms"):
    return (
        f"| {label} | {with_checks * unit:.1f} {suffix} | {without * unit:.1f} {suffix} | "
        f"{100 * (with_checks / without - 1):+.1f}% |"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = 1_000_000 if args.quick else 10_000_000
    x, y = keras_mle.data.noisy_line(n=n, seed=0)
    dataset = tf.data.Dataset.from_tensor_slices((x.reshape(-1, BATCH), y.reshape(-1, BATCH)))
    dataset = dataset.cache()
    fit = {"full check": [], "no guard": []}
    xla = {"divergence guard": [], "no guard": []}
    check = []
    for _ in range(args.rounds):
        check.append(array_check_seconds(x, y))
        for name, cls in (
            ("divergence guard", keras_mle.LinearRegression),
            ("no guard", UnguardedLinearRegression),
        ):
            xla[name].append(xla_epoch_seconds(cls, x, y))
        for name, cls in (
            ("full check", keras_mle.LinearRegression),
            ("no guard", UnguardedLinearRegression),
        ):
            fit[name].append(dataset_epoch_seconds(cls, dataset))
    batch_x, batch_y = tf.constant(x[:BATCH]), tf.constant(y[:BATCH])
    steps = {
        jit: interleaved_step_seconds(step_functions(batch_x, batch_y, jit), batch_x, batch_y)
        for jit in (False, True)
    }
    median = {name: np.median(times) for name, times in xla.items()}
    print(f"N={n:,}, batches of {BATCH:,}; medians over {args.rounds} rounds")
    print(
        f"\nArrays, checked once before training: {np.median(check) * 1e3:.1f} ms, "
        f"{np.median(check) / median['no guard']:.2f} unguarded XLA epochs."
    )
    print("\n| path | guarded | no guard | overhead |\n|---|---:|---:|---:|")
    print(row("XLA loop, divergence guard, per epoch", median["divergence guard"],
              median["no guard"]))  # fmt: skip
    print(row("`fit()` on a cached dataset, full check, per epoch",
              np.median(fit["full check"]), np.median(fit["no guard"])))  # fmt: skip
    for jit, label in ((False, "plain graph"), (True, "XLA")):
        for name in ("full check", "divergence guard"):
            print(row(f"one step alone, {label}, {name}", steps[jit][name],
                      steps[jit]["no guard"], unit=1e6, suffix="us"))  # fmt: skip


if __name__ == "__main__":
    main()
