"""Scale: streamed inference on many rows, and training with two workers.

1. **Streamed inference.** A `GaussianRegression` of 3 features, set to its closed form (OLS
   slopes and intercept, `sigma = sqrt(RSS / n)`) on N rows, then `keras_mle.inference` timed
   on the arrays in memory, on a `shard_dataset` of the same rows (written by `write_shards` in
   float64, so the streamed sums differ from the in-memory ones by their order only) in batches
   of 100,000 and of 1,000,000, and on `tf.data.Dataset.from_tensor_slices((x, y)).batch(
   100_000)`. Each path runs in its own process (its peak memory, `VmHWM`, is its own), timed
   (best of two calls) after a warm-up on its first batch; the parameters, standard errors and
   log-likelihood are compared with the in-memory ones.
2. **Two workers.** A `LinearRegression` trained by plain SGD on shards, in one process (one
   device), and by two worker processes under `MultiWorkerMirroredStrategy` (CPU, AUTO
   collectives, `TF_CONFIG` on free 127.0.0.1 ports, as `examples/multi_worker.py` starts
   them). Both take the same steps on the same global batches: their parameters must agree to
   float32 rounding. On a 2-core machine two workers share the cores one process had: they run,
   and agree, but are not faster.

    python benchmarks/bench_scale.py             # N=10M inference rows; 2M training rows
    python benchmarks/bench_scale.py --quick     # N=1M; 200k training rows
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FEATURES = 3
SLOPES = (1.0, -2.0, 0.5)
INFERENCE_BATCH = 100_000
#: Timed inference calls per path (the table shows the fastest: the machine's cores are shared).
REPEATS = 2
#: Streamed-inference paths: (table label, `--one` mode).
INFERENCE_PATHS = (
    ("`inference(model, x, y)`, in memory", "memory"),
    (f"`shard_dataset` (float64), batches of {INFERENCE_BATCH:,}", "shards"),
    ("`shard_dataset` (float64), batches of 1,000,000", "shards-1m"),
    (f"`from_tensor_slices((x, y)).batch({INFERENCE_BATCH:,})`", "slices"),
)
TRAIN_BATCH, TRAIN_EPOCHS, LR = 50_000, 3, 0.1
WORKERS = 2
WORKER_TIMEOUT_S = 300


def table(n, dtype="float64", seed=0):
    """`n` rows of `y = x @ SLOPES + 3 + N(0, 1)`, `x` uniform on [0, 1): the same every call."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, FEATURES))
    y = x @ np.array(SLOPES) + 3.0 + rng.normal(size=n)
    return x.astype(dtype), y.astype(dtype)


def _peak_mb():
    """This process's peak resident memory (`VmHWM`, which starts afresh at `exec`)."""
    with open("/proc/self/status") as file:
        for line in file:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _plain(tree):
    import numpy as np

    return {name: np.asarray(value, np.float64).tolist() for name, value in tree.items()}


# ---------------------------------------------------------------- part 1: streamed inference
def inference_child(mode, folder, n):
    """Times one inference path in this process; prints a JSON line."""
    import warnings

    import tensorflow as tf

    import keras_mle
    from keras_mle import data

    with open(os.path.join(folder, "params.json")) as file:
        params = json.load(file)
    model = keras_mle.GaussianRegression()
    model.build((None, FEATURES))
    model.set_params(params)
    manifest = os.path.join(folder, "rows.manifest.json")
    if mode == "memory":
        x, y = table(n)
        args, warm_up = (x, y), (x[:INFERENCE_BATCH], y[:INFERENCE_BATCH])
    else:
        if mode == "slices":
            x, y = table(n)
            dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(INFERENCE_BATCH)
        else:
            batch = 1_000_000 if mode == "shards-1m" else INFERENCE_BATCH
            dataset = data.shard_dataset(manifest, batch_size=batch)
        args, warm_up = (dataset,), (dataset.take(1),)
    with warnings.catch_warnings():  # the first batch alone is not at its own optimum
        warnings.simplefilter("ignore", keras_mle.InferenceWarning)
        keras_mle.inference(model, *warm_up)
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        result = keras_mle.inference(model, *args)
        times.append(time.perf_counter() - start)
    out = {
        "seconds": min(times),
        "times": times,
        "peak_mb": _peak_mb(),
        "params": _plain(result.params),
        "bse": _plain(result.bse),
        "llf": float(result.llf),
        "nobs": float(result.nobs),
        "converged": bool(result.converged),
        "warnings": list(result.warnings),
    }
    print(json.dumps(out))


def _relative(a, b):
    """Largest `|a - b| / |b|` over the components of two dicts of (lists of) floats."""
    import numpy as np

    return max(float(np.max(np.abs(np.subtract(a[k], b[k])) / np.abs(np.asarray(b[k])))) for k in b)


def streamed_inference(n, folder):
    import keras_mle
    from keras_mle import data

    x, y = table(n)
    model = keras_mle.GaussianRegression()
    model.build((None, FEATURES))
    model.set_params(model.closed_form(x, y))
    with open(os.path.join(folder, "params.json"), "w") as file:
        json.dump(_plain(model.params), file)  # the stored (float32) values, exactly
    start = time.perf_counter()
    data.write_shards(os.path.join(folder, "rows"), x, y, dtype="float64")
    write_s = time.perf_counter() - start
    del x, y
    results = {}
    for _, mode in INFERENCE_PATHS:
        command = [sys.executable, __file__, "--one", mode, "--folder", folder, "--n", str(n)]
        out = subprocess.run(command, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"inference path {mode!r} failed:\n{out.stderr[-3000:]}")
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])

    reference = results["memory"]
    print(
        f"\n### Streamed inference: GaussianRegression, N={n:,} rows x {FEATURES} features\n\n"
        "Parameters set to the closed form (OLS, `sigma = sqrt(RSS / n)`); each path in its own "
        f"process, timed after a warm-up on its first batch (best of {REPEATS} calls); writing "
        f"the float64 shards took {write_s:.2f} s. Differences: largest relative difference to "
        "the in-memory result.\n"
    )
    print("| path | seconds (best) | M rows/s | peak memory | params | bse | llf |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, mode in INFERENCE_PATHS:
        r = results[mode]
        if mode == "memory":
            diffs = "(reference) | - | -"
        else:
            diffs = (
                f"{_relative(r['params'], reference['params']):.1e} | "
                f"{_relative(r['bse'], reference['bse']):.1e} | "
                f"{abs(r['llf'] - reference['llf']) / abs(reference['llf']):.1e}"
            )
        print(
            f"| {label} | {r['seconds']:.2f} | {n / r['seconds'] / 1e6:.2f} | "
            f"{r['peak_mb']:.0f} MB | {diffs} |"
        )
    notes = {mode: r["warnings"] for mode, r in results.items() if r["warnings"]}
    print(
        f"\nIn memory: llf = {reference['llf']:.6f}, nobs = {reference['nobs']:,.0f}. Same nobs "
        f"on every path: {all(r['nobs'] == reference['nobs'] for r in results.values())}; "
        f"converged on every path: {all(r['converged'] for r in results.values())}"
        + (f"; warnings: {notes}." if notes else "; no warnings.")
    )
    runs = "; ".join(
        f"{mode} " + ", ".join(f"{t:.2f}" for t in r["times"]) for mode, r in results.items()
    )
    print(f"Every timed call (s): {runs}.")
    return results


# ---------------------------------------------------------------- part 2: two workers
def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()  # released just before the workers bind them
    return ports


def training_child(mode, folder):
    """One process of part 2: `single` (no strategy) or `worker` (reads TF_CONFIG)."""
    import tensorflow as tf

    # The strategy first, before any other TensorFlow operation (docs/distributed.md).
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if mode == "worker" else None

    import contextlib

    import keras

    import keras_mle
    from keras_mle import data

    class EpochTimes(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    times = []
    with strategy.scope() if strategy else contextlib.nullcontext():
        model = keras_mle.LinearRegression(m_initializer="zeros")
        model.build((None, FEATURES))
        model.compile(optimizer=keras.optimizers.SGD(LR))
    dataset = data.shard_dataset(
        os.path.join(folder, "train.manifest.json"), batch_size=TRAIN_BATCH
    )
    history = model.fit(dataset, epochs=TRAIN_EPOCHS, verbose=0, callbacks=[EpochTimes()])
    out = {
        "replicas": strategy.num_replicas_in_sync if strategy else 1,
        "epoch_s": times,
        "loss": [float(v) for v in history.history["loss"]],
        "params": _plain(model.params),
        "iterations": int(model.optimizer.iterations.numpy()),
    }
    print(json.dumps(out), flush=True)


def _launch(folder, mode, workers):
    """Starts `workers` processes of `mode` (with a TF_CONFIG cluster if more than one)."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(workers)]}
    processes = []
    for index in range(workers):
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
        if mode == "worker":
            task = {"type": "worker", "index": index}
            env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": task})
        processes.append(
            subprocess.Popen(
                [sys.executable, __file__, "--one", mode, "--folder", folder],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    results, failed = [], []
    for index, process in enumerate(processes):
        try:
            out, err = process.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            raise SystemExit(f"{mode} {index} did not finish in {WORKER_TIMEOUT_S} s") from None
        if process.returncode:
            failed.append(f"{mode} {index} failed (exit {process.returncode}):\n{err[-3000:]}")
        else:
            results.append(json.loads(out.strip().splitlines()[-1]))
    if failed:
        raise SystemExit("\n".join(failed))
    return results


def two_workers(n, folder):
    import numpy as np

    from keras_mle import data

    x, y = table(n, dtype="float32", seed=1)
    data.write_shards(os.path.join(folder, "train"), x, y)
    del x, y
    runs = {}
    for mode, workers in (("single", 1), ("worker", WORKERS)):
        start = time.perf_counter()
        results = _launch(folder, mode, workers)
        runs[mode] = {"results": results, "wall_s": time.perf_counter() - start}
    single = runs["single"]["results"][0]
    chief, other = runs["worker"]["results"]

    def max_abs(a, b):
        return max(float(np.max(np.abs(np.subtract(a[k], b[k])))) for k in b)

    steps = -(-n // TRAIN_BATCH)
    print(
        f"\n### Two workers: LinearRegression, SGD({LR}), {n:,} rows x {FEATURES} features "
        f"(float32 shards), batches of {TRAIN_BATCH:,} ({steps} steps an epoch), "
        f"{TRAIN_EPOCHS} epochs\n\n"
        "Parameters start at zero; epoch times from a callback in each process (for the "
        "workers: worker 0's); 'whole run' is from launch to exit (imports, cluster start-up, "
        "tracing).\n"
    )
    header = "| run | epoch 1 (with tracing) | later epochs, mean | M rows/s (later epochs) |"
    print(header + " whole run | final loss | max abs param diff to one process |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    to_single = max(max_abs(r["params"], single["params"]) for r in (chief, other))
    rows = (
        ("one process, one device", single, runs["single"]["wall_s"], "(reference)"),
        (
            f"{WORKERS} workers, MultiWorkerMirroredStrategy (CPU, AUTO collectives)",
            chief,
            runs["worker"]["wall_s"],
            f"{to_single:.1e}",
        ),
    )
    for label, r, wall, diff in rows:
        later = float(np.mean(r["epoch_s"][1:]))
        print(
            f"| {label} | {r['epoch_s'][0]:.2f} s | {later:.2f} s | {n / later / 1e6:.2f} | "
            f"{wall:.1f} s | {r['loss'][-1]:.6f} | {diff} |"
        )
    between = max_abs(chief["params"], other["params"])
    print(
        f"\nReplicas in sync: {chief['replicas']}; optimizer steps: one process "
        f"{single['iterations']}, workers {chief['iterations']} and {other['iterations']}; "
        f"largest difference between the two workers' parameters: {between:.1e}; worker 1's "
        f"epochs: {', '.join(f'{s:.2f}' for s in other['epoch_s'])} s."
    )
    print(
        f"On this machine ({os.cpu_count()} cores) the two workers share the cores one process "
        "had, and every step adds an all-reduce over local gRPC: they are not faster, nor meant "
        "to be here. The point is that they run and take the steps of one process."
    )
    return runs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one in ("single", "worker"):
        training_child(args.one, args.folder)
        return
    if args.one:
        inference_child(args.one, args.folder, args.n)
        return
    n_inference = 1_000_000 if args.quick else 10_000_000
    n_train = 200_000 if args.quick else 2_000_000
    import platform

    import keras
    import tensorflow as tf

    print(
        f"TF {tf.__version__}, Keras {keras.__version__}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs{', --quick' if args.quick else ''}"
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        streamed_inference(n_inference, folder)
    with tempfile.TemporaryDirectory() as folder:
        two_workers(n_train, folder)
    print(f"\nTotal: {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
