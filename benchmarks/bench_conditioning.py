"""Conditioning is speed: time to bring a Gaussian regression within 1e-4 of its closed form.

Data: `keras_mle.data.noisy_line` with N=1,000,000 (y = x + 2 + N(0, 0.15^2), x uniform on [0, 1)).
Model: `y ~ N(x m + b, sigma^2)`, parameters m, b, sigma, all started at m=0, b=0, sigma=1 (in the
model's own units). Target: every parameter within 1e-4 relative of the closed-form MLE (OLS m, b
and sigma = sqrt(RSS / n)).

Rows:

- `scipy.optimize.minimize(method="L-BFGS-B")` on the same NLL with its analytic gradient, in
  NumPy float64 (the reference, when SciPy is installed).
- keras_mle, the documented workflow: `model.adapt(x, y)`, then full-batch SGD through `fit()`.
  "one call" is the fast path (`keras_mle.data.epoch_dataset` with all steps in one compiled
  `fit()` call); "cold" includes `adapt`, tracing and compilation, "warm" re-runs the same
  `fit()` from the same start (the steps themselves); "fit(numpy)" is `fit(x, y,
  batch_size=N, epochs=K)` as a user first writes it.
- Plain `fit(numpy)` without `adapt`, Adam(0.1), full batch, stopped as soon as the target is
  met or after `--max-seconds`.

The step counts K are found first by a probe run that records the parameters after each step;
the timed runs then make exactly K steps. Ratios matter, not absolutes: the machines are shared.

    python benchmarks/bench_conditioning.py                  # N=1e6, plain Adam capped at 60 s
    python benchmarks/bench_conditioning.py --max-seconds 10 # cap the slow row sooner
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

TARGET = 1e-4
NAMES = ("m", "b", "sigma")


def relative_error(params, reference):
    return max(
        float(np.max(np.abs(np.asarray(params[k]) - reference[k]) / np.abs(reference[k])))
        for k in NAMES
    )


def closed_form(x, y):
    ols = keras_mle.closed_form.ols(x, y)
    return {"m": ols["m"], "b": ols["b"], "sigma": ols["sigma"]}


# ---------------------------------------------------------------------------- scipy
def scipy_lbfgsb(x, y, reference):
    try:
        from scipy.optimize import minimize
    except ImportError:
        return None
    n = len(x)
    half_log_two_pi = 0.5 * np.log(2 * np.pi)

    def nll_and_gradient(p):
        m, b, sigma = p
        r = y - m * x - b
        rss = r @ r
        nll = n * (half_log_two_pi + np.log(sigma)) + 0.5 * rss / sigma**2
        gradient = np.array([-(r @ x) / sigma**2, -r.sum() / sigma**2, n / sigma - rss / sigma**3])
        return nll / n, gradient / n

    start = time.perf_counter()
    result = minimize(
        nll_and_gradient,
        np.array([0.0, 0.0, 1.0]),
        jac=True,
        method="L-BFGS-B",
        bounds=[(None, None), (None, None), (1e-12, None)],
    )
    elapsed = time.perf_counter() - start
    params = {"m": result.x[:1], "b": result.x[1], "sigma": result.x[2]}
    return {
        "steps": int(result.nit),
        "seconds": elapsed,
        "error": relative_error(params, reference),
    }


# ---------------------------------------------------------------------------- keras_mle
def new_model():
    return keras_mle.GaussianRegression(initial_sigma=1.0, m_initializer="zeros")


def steps_needed(x, y, reference, learning_rate, max_steps):
    """Probe: one step per Keras epoch, parameters read from the History after each step."""
    model = new_model().adapt(x, y)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), jit_compile=True)
    dataset = keras_mle.data.epoch_dataset(*model.check_data(x, y), batch_size=len(x))
    history = model.fit(
        dataset, epochs=max_steps, steps_per_epoch=1, shuffle=False, verbose=0
    ).history
    for step in range(max_steps):
        params = {k: np.asarray(history[k][step]) for k in NAMES}
        if relative_error(params, reference) <= TARGET:
            return step + 1
    raise RuntimeError(f"not within {TARGET} after {max_steps} steps")


def adapted_one_call(x, y, reference, learning_rate, steps):
    start = time.perf_counter()
    model = new_model().adapt(x, y)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), jit_compile=True)
    checked = model.check_data(x, y)
    dataset = keras_mle.data.epoch_dataset(*checked, batch_size=len(x), repeats=steps)
    initial = model.get_weights()
    model.fit(dataset, epochs=1, steps_per_epoch=1, shuffle=False, verbose=0)
    cold = time.perf_counter() - start
    error = relative_error(model.params, reference)
    model.set_weights(initial)
    model.optimizer.iterations.assign(0)
    start = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=1, shuffle=False, verbose=0)
    warm = time.perf_counter() - start
    return {"steps": steps, "cold": cold, "warm": warm, "error": error}


def adapted_fit_numpy(x, y, reference, learning_rate, steps):
    start = time.perf_counter()
    model = new_model().adapt(x, y)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate))
    model.fit(x, y, batch_size=len(x), epochs=steps, shuffle=False, verbose=0)
    return {
        "steps": steps,
        "seconds": time.perf_counter() - start,
        "error": relative_error(model.params, reference),
    }


class StopWithin(keras.callbacks.Callback):
    """Stops `fit` once the parameters are within the target, or after a time budget."""

    def __init__(self, reference, max_seconds):
        super().__init__()
        self.reference, self.max_seconds = reference, max_seconds

    def on_train_begin(self, logs=None):
        self.start, self.epochs, self.reached = time.perf_counter(), 0, False

    def on_epoch_end(self, epoch, logs=None):
        self.epochs = epoch + 1
        self.error = relative_error(self.model.params, self.reference)
        if self.error <= TARGET:
            self.reached = True
            self.model.stop_training = True
        elif time.perf_counter() - self.start > self.max_seconds:
            self.model.stop_training = True


def plain_adam(x, y, reference, max_seconds):
    model = new_model()
    model.compile(optimizer=keras.optimizers.Adam(0.1))
    stop = StopWithin(reference, max_seconds)
    start = time.perf_counter()
    model.fit(x, y, batch_size=len(x), epochs=100_000, shuffle=False, verbose=0, callbacks=[stop])
    return {
        "steps": stop.epochs,
        "seconds": time.perf_counter() - start,
        "error": stop.error,
        "reached": stop.reached,
    }


# ---------------------------------------------------------------------------- report
def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--learning-rate", type=float, default=0.3)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    args = parser.parse_args()

    x, y = keras_mle.data.noisy_line(n=args.n, seed=0)
    x, y = x.astype(np.float64), y.astype(np.float64)
    reference = closed_form(x, y)
    print(
        f"N={args.n:,}, target: all of m, b, sigma within {TARGET:g} relative of the closed form; "
        f"TF {tf.__version__}, Keras {keras.__version__}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )

    rows = []
    scipy_row = scipy_lbfgsb(x, y, reference)
    if scipy_row:
        rows.append(
            (
                "scipy L-BFGS-B, analytic gradient",
                scipy_row["steps"],
                scipy_row["seconds"],
                scipy_row["error"],
            )
        )
    steps = steps_needed(x, y, reference, args.learning_rate, max_steps=200)
    fast = adapted_one_call(x, y, reference, args.learning_rate, steps)
    rows.append(
        (
            f"adapt + fit, SGD({args.learning_rate:g}), one call, warm",
            steps,
            fast["warm"],
            fast["error"],
        )
    )
    rows.append(("  same, cold (adapt, trace, XLA compile)", steps, fast["cold"], fast["error"]))
    plain = adapted_fit_numpy(x, y, reference, args.learning_rate, steps)
    rows.append((f"adapt + fit(numpy), {steps} epochs", steps, plain["seconds"], plain["error"]))
    adam = plain_adam(x, y, reference, args.max_seconds)
    label = "fit(numpy), Adam(0.1), no adapt"
    if not adam["reached"]:
        label += f" (cap {args.max_seconds:g} s: not met)"
    rows.append((label, adam["steps"], adam["seconds"], adam["error"]))

    base = scipy_row["seconds"] if scipy_row else None
    print(f"\n{'method':<58}{'steps':>7}{'time (s)':>10}{'vs scipy':>10}{'rel err':>10}")
    print("-" * 95)
    for label, n_steps, seconds, error in rows:
        ratio = f"{seconds / base:.2f}x" if base else "-"
        print(f"{label:<58}{n_steps:>7}{seconds:>10.3f}{ratio:>10}{error:>10.1e}")


if __name__ == "__main__":
    main()
