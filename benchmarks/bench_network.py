"""Per-epoch time of a GaussianNetwork against the same network trained by stock Keras on MSE.

Both models are a 2x64 ReLU MLP on 100,000 rows of one feature, Adam, the same batch size;
the GaussianNetwork adds its two Dense(1) heads and the NLL, trained by keras_mle's step (input
checks, divergence guard); the reference is the backbone plus a Dense(1), `loss="mse"`. Epochs
alternate between the two in one run; times are medians after a warm-up epoch each, measured
by `fit` itself (one epoch per call). The machine may be shared: the ratio is what matters.

    python benchmarks/bench_network.py            # 6 epochs each, batch 256
    python benchmarks/bench_network.py --epochs 3 --batch-size 1024
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

from keras_mle.models.gaussian_network import GaussianNetwork  # noqa: E402


def backbone():
    return keras.Sequential(
        [keras.layers.Dense(64, activation="relu"), keras.layers.Dense(64, activation="relu")]
    )


def main(n: int, epochs: int, batch_size: int) -> float:
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(n, 1)).astype(np.float32)
    y = (np.sin(2 * np.pi * x[:, 0]) + (0.1 + 0.5 * x[:, 0]) * rng.normal(size=n)).astype(
        np.float32
    )
    keras.utils.set_random_seed(0)
    network = GaussianNetwork(backbone())
    network.compile(optimizer=keras.optimizers.Adam(1e-3))
    stock = keras.Sequential([keras.Input((1,)), backbone(), keras.layers.Dense(1)])
    stock.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    # Stock Keras also on a prebuilt tf.data pipeline: its step cost without its array adapter.
    stock_data = keras.Sequential([keras.Input((1,)), backbone(), keras.layers.Dense(1)])
    stock_data.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    dataset = tf.data.Dataset.from_tensor_slices((x, y[:, None])).batch(batch_size).prefetch(2)
    runs = {
        "GaussianNetwork": lambda: network.fit(
            x, y, batch_size=batch_size, epochs=1, shuffle=True, verbose=0
        ),
        "stock Keras mse": lambda: stock.fit(
            x, y[:, None], batch_size=batch_size, epochs=1, shuffle=True, verbose=0
        ),
        "stock, tf.data": lambda: stock_data.fit(dataset, epochs=1, verbose=0),
    }
    times = {name: [] for name in runs}
    for epoch in range(epochs + 1):
        for name, fit in runs.items():
            start = time.perf_counter()
            fit()
            if epoch > 0:  # epoch 0 compiles
                times[name].append(time.perf_counter() - start)
    print(
        f"{platform.node()} | TF {tf.__version__} | Keras {keras.__version__} | "
        f"{os.cpu_count()} CPUs | GPUs {len(tf.config.list_physical_devices('GPU'))}"
    )
    print(f"n={n}, batch_size={batch_size}, {epochs} timed epochs each (alternating)")
    for name, values in times.items():
        print(
            f"{name:>16}: median {np.median(values):.3f} s/epoch  (all: "
            f"{', '.join(f'{v:.2f}' for v in values)})"
        )
    ratio = float(np.median(times["GaussianNetwork"]) / np.median(times["stock Keras mse"]))
    print(f"ratio GaussianNetwork / stock: {ratio:.2f}x (target <= 1.3x)")
    step = float(np.median(times["GaussianNetwork"]) / np.median(times["stock, tf.data"]))
    print(f"ratio GaussianNetwork / stock on tf.data: {step:.2f}x")
    return ratio


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    main(args.n, args.epochs, args.batch_size)
