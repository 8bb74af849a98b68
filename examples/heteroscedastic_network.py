"""Noise that grows with x: a GaussianNetwork learns the mean and sigma(x) together.

The data are `y = sin(2 pi x) + (0.1 + 0.5 x) e` on [0, 1]. The network's sigma(x) is compared
with the truth on a grid, the 95% interval's coverage is measured on held-out data, and the
fit is written to TensorBoard (the calibration pictures of `keras_mle.calibration` and the
per-epoch metrics) and drawn to `<out>/sigma_of_x.png`.

```bash
.venv/bin/python examples/heteroscedastic_network.py --out hetero_output          # quick
.venv/bin/python examples/heteroscedastic_network.py --out hetero_output --full   # n=20,000
.venv/bin/tensorboard --logdir hetero_output/logs
```
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_mle import calibration, metrics, plots  # noqa: E402
from keras_mle.models.gaussian_network import GaussianNetwork  # noqa: E402


def true_sigma(x):
    return 0.1 + 0.5 * x


def make_data(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, 1)).astype(np.float32)
    y = np.sin(2 * np.pi * x[:, 0]) + true_sigma(x[:, 0]) * rng.normal(size=n)
    return x, y.astype(np.float32)


def main(out: str, n: int, epochs: int, batch_size: int, learning_rate: float) -> dict:
    keras.utils.set_random_seed(0)
    x, y = make_data(n, seed=0)
    x_new, y_new = make_data(10_000, seed=1)
    backbone = keras.Sequential(
        [keras.layers.Dense(64, activation="relu"), keras.layers.Dense(64, activation="relu")]
    )
    model = GaussianNetwork(backbone)
    steps = epochs * -(-int(n * 0.8) // batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps, alpha=0.05)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        metrics=["mae", metrics.IntervalCoverage(0.95), metrics.GaussianCRPS()],
    )
    logs = os.path.join(out, "logs")
    model.fit(
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        validation_split=0.2,
        verbose=0,
        callbacks=[
            keras.callbacks.TensorBoard(logs),
            calibration.CalibrationTensorBoard(logs, (x_new, y_new), every=max(1, epochs // 4)),
        ],
    )
    grid = np.linspace(0.05, 0.95, 19, dtype=np.float32)[:, None]
    fitted = model.predict_distribution(grid)
    relative = fitted["sigma"] / true_sigma(grid[:, 0]) - 1
    low, high = model.prediction_interval(x_new, level=0.95)
    coverage = float(np.mean((y_new >= low) & (y_new <= high)))

    figure, ax = plots.new_figure()
    ax.plot(grid[:, 0], true_sigma(grid[:, 0]), "k--", label="true sigma(x)")
    ax.plot(grid[:, 0], fitted["sigma"], "r", label="fitted sigma(x)")
    ax.set_xlabel("x")
    ax.set_ylabel("sigma")
    ax.set_title(f"n={n}: max error {np.max(np.abs(relative)):.1%}, 95% coverage {coverage:.1%}")
    ax.legend()
    figure.tight_layout()
    path = os.path.join(out, "sigma_of_x.png")
    figure.savefig(path)
    model.save(os.path.join(out, "hetero.keras"))

    print(f"{'x':>5} {'true sigma':>11} {'fitted':>8}")
    for xi, si in zip(grid[::3, 0], fitted["sigma"][::3], strict=True):
        print(f"{xi:5.2f} {true_sigma(xi):11.3f} {si:8.3f}")
    print(f"largest relative error of sigma(x): {np.max(np.abs(relative)):.1%}")
    print(f"95% interval coverage on 10,000 held-out points: {coverage:.1%}")
    print(f"plot: {path}; TensorBoard logs: {logs}")
    return {"max_relative_error": float(np.max(np.abs(relative))), "coverage": coverage}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="hetero_output", help="output folder")
    parser.add_argument("--full", action="store_true", help="n=20,000 and 40 epochs")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.full:
        main(args.out, n=20_000, epochs=40, batch_size=256, learning_rate=0.005)
    else:
        main(args.out, n=4000, epochs=40, batch_size=128, learning_rate=0.01)
