"""Cost of the input checks inside the training step, at N=10,000,000 in batches of 100,000.

Every step checks its batch (NaN or Inf in x, y or the weights; negative weights) and applies it
only if it passed. This times one epoch of `LinearRegression` with the checks, and with a step
that skips them (a subclass defined here, for the measurement only), in the same run and
alternating, through the XLA loop (`train_batches`, the path where the checks weigh most) and
through `fit()` on a batched `tf.data.Dataset` (streamed data, the case the checks exist for).

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


class UncheckedLinearRegression(keras_mle.LinearRegression):
    """The same model with a step that applies every batch unchecked (for timing only)."""

    def apply_step(self, x, y=None, sample_weight=None):
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


def xla_epoch_seconds(cls, x, y, batch_size, epochs):
    model = cls(m_initializer="zeros")
    timer = EpochTimer()
    keras_mle.loops.train(
        model,
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        optimizer=keras.optimizers.SGD(0.1),
        mode="xla",
        callbacks=[timer],
        verbose=0,
    )
    return timer.median()


def dataset_epoch_seconds(cls, dataset, epochs):
    model = cls(m_initializer="zeros")
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=True)
    timer = EpochTimer()
    model.fit(dataset, epochs=epochs, verbose=0, callbacks=[timer])
    return timer.median()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = 1_000_000 if args.quick else 10_000_000
    batch_size = 100_000
    x, y = keras_mle.data.noisy_line(n=n, seed=0)
    dataset = tf.data.Dataset.from_tensor_slices(
        (x.reshape(-1, batch_size), y.reshape(-1, batch_size))
    )
    dataset = dataset.cache()
    results = {
        name: [] for name in ("xla checked", "xla unchecked", "fit checked", "fit unchecked")
    }
    for _ in range(args.rounds):
        for checked, cls in (
            (True, keras_mle.LinearRegression),
            (False, UncheckedLinearRegression),
        ):
            label = "checked" if checked else "unchecked"
            results[f"xla {label}"].append(xla_epoch_seconds(cls, x, y, batch_size, epochs=6))
            results[f"fit {label}"].append(dataset_epoch_seconds(cls, dataset, epochs=6))
    print(f"N={n:,}, batches of {batch_size:,}; median per-epoch time over {args.rounds} rounds")
    print("| path | with checks | without | overhead |\n|---|---:|---:|---:|")
    for path in ("xla", "fit"):
        with_checks = np.median(results[f"{path} checked"])
        without = np.median(results[f"{path} unchecked"])
        print(
            f"| {path} | {with_checks * 1e3:.2f} ms | {without * 1e3:.2f} ms | "
            f"{100 * (with_checks / without - 1):+.1f}% |"
        )


if __name__ == "__main__":
    main()
