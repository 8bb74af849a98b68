"""Peak memory of plain `fit(x, y)` above the user's own arrays, each variant in its own process.

`keras_mle.LinearRegression` fitted as a user writes it, `fit(x, y, batch_size=100_000,
epochs=3)` with `shuffle=True` and `shuffle=False` (default settings: the in-graph epochs of
`keras_mle.data.epoch_arrays`), against a stock `keras.Sequential([Dense(1)])` with
`loss="mse"` and SGD on the same arrays, on N rows of 3 float32 features.

Each variant runs in a fresh process that imports TensorFlow, builds and compiles the model,
makes a small warm-up fit (so that graph building, XLA's compiler and thread pools are in the
baseline), creates `x` and `y` with NumPy, then resets the kernel's peak-RSS counter
(`/proc/self/clear_refs`, "5") and reads `VmRSS`: the baseline, arrays included. After the fit
the peak above the arrays is `VmHWM - baseline`. A thread sampling `VmRSS` every few
milliseconds cross-checks that peak. A reference row measures `tf.constant(x), tf.constant(y)`
alone: what converting the arrays to TensorFlow costs by itself, as `epoch_arrays` does.
Sizes are MiB (2**20 bytes), as `/proc` counts them; ratios are to `x.nbytes + y.nbytes`.

    python benchmarks/bench_memory.py            # N=10M and N=1M (about 2 minutes on 2 cores)
    python benchmarks/bench_memory.py --quick    # N=1M only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FEATURES = 3
BATCH = 100_000
EPOCHS = 3
#: Rows of the warm-up fit: the package's `fit` compiles in-memory epochs of 100,000 rows or
#: more with XLA (`_XLA_ROWS`), so a smaller warm-up would leave XLA's one-off start-up in the
#: measurement. 100,000 rows are 1.6 MB, 1% of the data at N=10M.
WARMUP_ROWS = 100_000
TARGET = 1.5
#: Table label -> the `--one` argument of a child process.
VARIANTS = {
    "keras_mle `fit(x, y)`, shuffled": "mle-shuffle",
    "keras_mle `fit(x, y, shuffle=False)`": "mle-noshuffle",
    "stock Keras `Dense(1)`, mse, shuffled": "stock-shuffle",
    "stock Keras `Dense(1)`, mse, `shuffle=False`": "stock-noshuffle",
    "reference: `tf.constant(x)`, `tf.constant(y)` alone": "tf-constant",
}


def _status():
    """VmRSS and VmHWM of this process, in MiB."""
    values = {}
    with open("/proc/self/status") as file:
        for line in file:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                values[key] = int(value.split()[0]) / 1024
    return values


class _Sampler(threading.Thread):
    """Largest VmRSS seen by polling, a lower bound on the true peak (a cross-check of VmHWM)."""

    def __init__(self, period=0.002):
        super().__init__(daemon=True)
        self.period, self.peak, self._stop_event = period, 0.0, threading.Event()

    def run(self):
        while not self._stop_event.is_set():
            self.peak = max(self.peak, _status()["VmRSS"])
            time.sleep(self.period)

    def stop(self):
        self._stop_event.set()
        self.join()
        self.peak = max(self.peak, _status()["VmRSS"])
        return self.peak


def make_data(n, seed=0):
    """`x` of shape (n, 3) and `y` of shape (n,), float32, made without float64 temporaries."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, FEATURES), dtype=np.float32)
    y = x @ np.array([1.0, -2.0, 0.5], np.float32)
    y += 3.0
    y += rng.standard_normal(n, dtype=np.float32)
    return x, y


def one(variant, n, warmup_rows=WARMUP_ROWS):
    """Measures one variant in this process; prints a JSON line."""
    import gc

    import keras
    import numpy as np
    import tensorflow as tf

    import keras_mle

    shuffle = variant.endswith("-shuffle")
    if variant.startswith("mle"):
        model = keras_mle.LinearRegression()
        model.compile(optimizer=keras.optimizers.SGD(0.1))

        def fit(x, y, batch_size):
            model.fit(x, y, batch_size=batch_size, epochs=EPOCHS, shuffle=shuffle, verbose=0)
    elif variant.startswith("stock"):
        model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")

        def fit(x, y, batch_size):
            model.fit(
                x, y[:, None], batch_size=batch_size, epochs=EPOCHS, shuffle=shuffle, verbose=0
            )
    else:  # tf-constant: one copy of the arrays in TensorFlow, nothing else

        def fit(x, y, batch_size):
            tensors = tf.constant(x), tf.constant(y)
            assert tensors[0].shape[0] == len(y)
            # (the tensors are kept until the end of this call, as a fit keeps its data)

    warm_x, warm_y = make_data(warmup_rows, seed=1)
    fit(warm_x, warm_y, max(1, warmup_rows // 10))
    del warm_x, warm_y
    gc.collect()
    after_warmup = _status()

    x, y = make_data(n)
    gc.collect()
    before_reset = _status()
    with open("/proc/self/clear_refs", "w") as file:
        file.write("5")  # VmHWM := VmRSS now (Linux)
    baseline = _status()
    sampler = _Sampler()
    sampler.start()
    start = time.perf_counter()
    fit(x, y, BATCH)
    seconds = time.perf_counter() - start
    sampled = sampler.stop()
    gc.collect()
    end = _status()
    if variant != "tf-constant":
        weights = [np.asarray(w) for w in model.get_weights()]
        assert all(np.all(np.isfinite(w)) for w in weights), weights
    result = {
        "variant": variant,
        "n": n,
        "data_mib": (x.nbytes + y.nbytes) / 2**20,
        "rss_after_warmup_mib": after_warmup["VmRSS"],
        "hwm_after_warmup_mib": after_warmup["VmHWM"],
        "hwm_before_reset_mib": before_reset["VmHWM"],
        "baseline_rss_mib": baseline["VmRSS"],
        "baseline_hwm_mib": baseline["VmHWM"],
        "peak_hwm_mib": end["VmHWM"],
        "peak_sampled_mib": sampled,
        "rss_after_fit_mib": end["VmRSS"],
        "seconds": seconds,
        "warmup_rows": warmup_rows,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
    print(json.dumps(result))


def _row(label, r):
    base = r["baseline_rss_mib"]
    above = r["peak_hwm_mib"] - base
    cells = [
        label,
        f"{r['n']:,}",
        f"{r['data_mib']:.0f} MiB",
        f"{above:.0f} MiB",
        f"{above / r['data_mib']:.2f}x",
        f"{r['peak_sampled_mib'] - base:.0f} MiB",
        f"{r['rss_after_fit_mib'] - base:.0f} MiB",
        f"{base:.0f} MiB",
        f"{r['hwm_before_reset_mib']:.0f} MiB",
        f"{r['seconds']:.1f} s",
    ]
    return "| " + " | ".join(cells) + " |"


def run(variant, n, warmup_rows):
    command = [sys.executable, os.path.abspath(__file__), "--one", variant, "--n", str(n)]
    command += ["--warmup-rows", str(warmup_rows)]
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"{variant} at N={n:,} failed (exit status {out.returncode})")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=1M only")
    parser.add_argument(
        "--warmup-rows", type=int, default=WARMUP_ROWS, help="rows of the warm-up fit"
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        one(args.one, args.n, args.warmup_rows)
        return
    sizes = [1_000_000] if args.quick else [10_000_000, 1_000_000]
    print(
        f"# Memory above the user's arrays\n\n{platform.node()}: {os.cpu_count()} cores; "
        f"{FEATURES} float32 features, batch_size={BATCH:,}, epochs={EPOCHS}, warm-up fit on "
        f"{args.warmup_rows:,} rows; each row a fresh process; peak above the arrays = VmHWM "
        "after the fit - VmRSS with the arrays made (VmHWM reset there through "
        "/proc/self/clear_refs)\n"
    )
    print(
        "| variant | N | data | peak above the arrays | ratio to data | sampled peak above "
        "| left after fit | baseline RSS | VmHWM before reset | fit time |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    results = []
    for n in sizes:
        for label, variant in VARIANTS.items():
            r = run(variant, n, args.warmup_rows)
            results.append((label, r))
            print(_row(label, r), flush=True)
    print()
    for label, r in results:
        if r["variant"].startswith("mle"):
            ratio = (r["peak_hwm_mib"] - r["baseline_rss_mib"]) / r["data_mib"]
            verdict = "meets" if ratio <= TARGET else "does NOT meet"
            print(
                f"N={r['n']:,}, {label}: {ratio:.2f}x the data, {verdict} the target "
                f"(<= {TARGET}x)."
            )


if __name__ == "__main__":
    main()
