"""Cost of the input checks at N=10,000,000 in batches of 100,000.

Data reach a training step either checked beforehand or unchecked:

- In-memory arrays are checked once, in NumPy, before training (`check_data`, and
  `keras_mle.data.stack_batches` for the compiled loops and `epoch_dataset`). The steps of
  `train_batches` then run unchecked. Timed here: that one check against one XLA epoch.
- Streamed batches (`tf.data`, generators, `PyDataset`) are checked inside the step: a batch is
  applied only if its loss is finite and no weight is negative, and examined only when not.
  Timed here: `fit()` on a cached `tf.data.Dataset` with that step and with a step that applies
  every batch unchecked (a subclass defined here, for the measurement only), alternating in one
  run; and the step alone on one batch, in a plain graph and under XLA, interleaved.

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


class UncheckedLinearRegression(keras_mle.LinearRegression):
    """The same model with a step that applies every batch unchecked (for timing only)."""

    def apply_step(self, x, y=None, sample_weight=None, *, checked=True):
        super().apply_step(x, y, sample_weight, checked=True)


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


def xla_epoch_seconds(x, y, epochs=6):
    timer = EpochTimer()
    keras_mle.loops.train(
        keras_mle.LinearRegression(m_initializer="zeros"),
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


def step_functions(x, y, jit_compile):
    """One compiled `apply_step` per variant (checked, unchecked) on one batch."""
    functions = {}
    for checked in (False, True):
        model = keras_mle.LinearRegression(m_initializer="zeros")
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        model(x[:2])
        model.optimizer.build(model.trainable_variables)

        def step(x, y, model=model, checked=checked):
            model.apply_step(x, y, checked=checked)

        function = tf.function(step, jit_compile=jit_compile)
        function(x, y)
        functions["unchecked" if checked else "checked"] = function
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
    fit = {"checked": [], "unchecked": []}
    xla, check = [], []
    for _ in range(args.rounds):
        xla.append(xla_epoch_seconds(x, y))
        check.append(array_check_seconds(x, y))
        for name, cls in (
            ("checked", keras_mle.LinearRegression),
            ("unchecked", UncheckedLinearRegression),
        ):
            fit[name].append(dataset_epoch_seconds(cls, dataset))
    batch_x, batch_y = tf.constant(x[:BATCH]), tf.constant(y[:BATCH])
    steps = {
        jit: interleaved_step_seconds(step_functions(batch_x, batch_y, jit), batch_x, batch_y)
        for jit in (False, True)
    }
    print(f"N={n:,}, batches of {BATCH:,}; medians over {args.rounds} rounds")
    print(
        f"\nArrays, checked once before training: {np.median(check) * 1e3:.1f} ms, "
        f"{np.median(check) / np.median(xla):.2f} XLA epochs ({np.median(xla) * 1e3:.1f} ms each)"
        "; the steps of the compiled loops run unchecked."
    )
    print("\n| streamed batches, checked in the step | with checks | without | overhead |")
    print("|---|---:|---:|---:|")
    print(row("`fit()` on a cached dataset, per epoch", np.median(fit["checked"]),
              np.median(fit["unchecked"])))  # fmt: skip
    for jit, label in ((False, "plain graph"), (True, "XLA")):
        print(row(f"one step alone, {label}", steps[jit]["checked"], steps[jit]["unchecked"],
                  unit=1e6, suffix="us"))  # fmt: skip


if __name__ == "__main__":
    main()
