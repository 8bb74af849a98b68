"""Times one fit of `LinearRegression` through every training path, in one run.

Paths: the eager loop (the articles'), the `tf.function` loop, the XLA loop, `fit()` as a user
calls it (`fit(x, y, batch_size=B, epochs=E)`), and `fit()` with the recommended fast settings
(`keras_mle.data.epoch_dataset` + `jit_compile=True`), against a NumPy pass over the sufficient
statistics (sum x, sum y, sum x^2, sum xy) as the floor.

Two sizes: N=100 full batch (one optimizer step per epoch) and N=10,000,000 in batches of
100,000. Times are medians of per-epoch wall times after a warm-up epoch (compilation excluded),
taken with a callback, so the same clock measures `fit()` and the loops. Ratios matter, not
absolutes: the machines are shared.

    python benchmarks/bench_training.py            # full run (a few minutes)
    python benchmarks/bench_training.py --quick    # N=1e6 instead of 1e7, fewer epochs
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_mle  # noqa: E402


class EpochTimer(keras.callbacks.Callback):
    """Wall time of every epoch, for `fit()` and `keras_mle.loops.train` alike."""

    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)

    def median(self):
        return float(np.median(self.times[1:] if len(self.times) > 1 else self.times))


def make_model(x):
    model = keras_mle.LinearRegression(m_initializer="zeros")
    model(x[:2])
    return model


def time_loop(mode, x, y, batch_size, epochs):
    model = make_model(x)
    timer = EpochTimer()
    keras_mle.loops.train(
        model,
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        optimizer=keras.optimizers.SGD(0.1),
        mode=mode,
        callbacks=[timer],
        verbose=0,
    )
    return timer.median(), 1


def time_plain_fit(x, y, batch_size, epochs, shuffle=True, jit_compile="auto"):
    model = make_model(x)
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit_compile)
    timer = EpochTimer()
    model.fit(
        x, y, batch_size=batch_size, epochs=epochs, shuffle=shuffle, callbacks=[timer], verbose=0
    )
    return timer.median(), 1


def time_fast_fit(x, y, batch_size, epochs, repeats):
    model = make_model(x)
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=True)
    dataset = keras_mle.data.epoch_dataset(
        *model.check_data(x, y), batch_size=batch_size, repeats=repeats
    )
    timer = EpochTimer()
    model.fit(
        dataset,
        epochs=max(2, epochs // repeats),
        steps_per_epoch=1,
        shuffle=False,
        callbacks=[timer],
        verbose=0,
    )
    return timer.median(), repeats


def time_numpy_floor(x, y, repeat=20):
    """One pass over the sufficient statistics of the data (the least any epoch must read)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        np.add.reduce(x)
        np.add.reduce(y)
        np.dot(x, x)
        np.dot(x, y)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), 1


def time_numpy_shuffled_floor(x, y, repeat=5):
    """The floor of a shuffled epoch: the rows gathered through a permutation, then one pass.

    The permutation itself is drawn beforehand (not timed): what is left is the random gather
    every shuffled epoch must make, whose cost is memory latency, not arithmetic.
    """
    order = np.random.default_rng(0).permutation(len(x))
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        xs, ys = x[order], y[order]
        np.add.reduce(xs)
        np.add.reduce(ys)
        np.dot(xs, xs)
        np.dot(xs, ys)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), 1


def bench(n, batch_size, epochs, repeats):
    x, y = keras_mle.data.noisy_line(m=1.0, b=2.0, n=n, seed=0)
    steps_per_epoch = -(-n // batch_size)
    variants = {
        "numpy floor (sufficient statistics)": lambda: time_numpy_floor(x, y),
        "numpy floor, shuffled (rows gathered, then the statistics)": lambda: (
            time_numpy_shuffled_floor(x, y)
        ),
        "eager loop": lambda: time_loop("eager", x, y, batch_size, min(epochs, 30)),
        "function loop": lambda: time_loop("function", x, y, batch_size, epochs),
        "xla loop": lambda: time_loop("xla", x, y, batch_size, epochs),
        "fit(x, y), shuffled (Keras' default)": lambda: time_plain_fit(
            x, y, batch_size, min(epochs, 100 if n <= 1000 else 4)
        ),
        "fit(x, y, shuffle='batch')": lambda: time_plain_fit(
            x, y, batch_size, min(epochs, 100 if n <= 1000 else 4), shuffle="batch"
        ),
        "fit(x, y, shuffle=False)": lambda: time_plain_fit(
            x, y, batch_size, min(epochs, 100 if n <= 1000 else 4), shuffle=False
        ),
        "fit(x, y, shuffle=False), jit_compile=True": lambda: time_plain_fit(
            x, y, batch_size, min(epochs, 100 if n <= 1000 else 4), False, True
        ),
        "fit() fast path": lambda: time_fast_fit(x, y, batch_size, epochs, repeats),
    }
    results = {}
    for name, run in variants.items():
        seconds, epochs_per_timing = run()
        results[name] = seconds / epochs_per_timing  # seconds per epoch
    return results, steps_per_epoch


def table(title, results, steps_per_epoch, reference):
    lines = [
        f"### {title}",
        "",
        "| variant | per epoch | per optimizer step | ratio to " + reference + " |",
        "|---|---:|---:|---:|",
    ]
    for name, per_epoch in results.items():
        per_step = per_epoch / steps_per_epoch
        ratio = per_epoch / results[reference]
        lines.append(f"| {name} | {_fmt(per_epoch)} | {_fmt(per_step)} | {ratio:.2f} |")
    return "\n".join(lines)


def _fmt(seconds):
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=1e6 and fewer epochs")
    args = parser.parse_args(argv)
    big = 1_000_000 if args.quick else 10_000_000
    print(
        f"# keras_mle training benchmark\n\n{platform.node()}: {os.cpu_count()} cores, "
        f"tensorflow {tf.__version__}, keras {keras.__version__}, numpy {np.__version__}\n"
    )
    small, small_steps = bench(100, 100, epochs=300 if args.quick else 1000, repeats=100)
    print(table("N=100, full batch", small, small_steps, "function loop"), end="\n\n", flush=True)
    large, large_steps = bench(big, 100_000, epochs=4 if args.quick else 6, repeats=1)
    print(
        table(
            f"N={big:,}, batches of 100,000",
            large,
            large_steps,
            "numpy floor (sufficient statistics)",
        )
    )
    shuffled = large["fit(x, y), shuffled (Keras' default)"]
    floor = large["numpy floor, shuffled (rows gathered, then the statistics)"]
    print(f"\nshuffled fit(x, y) against the shuffled numpy floor: {shuffled / floor:.2f}x")
    by_batch = large["fit(x, y, shuffle='batch')"] / large["fit(x, y, shuffle=False)"]
    print(f"fit(x, y, shuffle='batch') against fit(x, y, shuffle=False): {by_batch:.2f}x")


if __name__ == "__main__":
    main()
