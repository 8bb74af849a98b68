"""Rates and peak memory of training data read from files, against the same data in memory.

`LinearRegression` on 3 features in batches of 50,000, one `fit()` epoch per measurement (after
a warm-up epoch), each path in its own process so that its peak memory (`ru_maxrss`) is its own:

- in memory: `fit()` on a cached `tf.data.Dataset` of the arrays;
- binary shards: `keras_mle.data.shard_dataset` (written once by `write_shards`), read alone
  and through `fit()`, at N and at 10 N rows (peak memory must stay flat);
- CSV: `tf.data.experimental.CsvDataset` alone (the reader's own rate), and
  `keras_mle.data.csv_dataset` read alone and through `fit()`.

    python benchmarks/bench_files.py                 # N=10M (shards also 100M), CSV 2M rows
    python benchmarks/bench_files.py --quick         # N=1M, CSV 200k rows
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BATCH = 50_000
FEATURES = 3
#: What each row of the table measures, as the `--one` argument of a child process.
_MODES = {
    "memory fit": "memory-fit",
    "shards read": "shards-read",
    "shards fit": "shards-fit",
    "shards 10x read": "shards10x-read",
    "CsvDataset alone": "CsvDataset-read",
    "csv_dataset read": "csv-read",
    "csv_dataset fit": "csv-fit",
}


def table(n, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, FEATURES)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5], np.float32) + 3 + rng.normal(size=n)).astype(np.float32)
    return x, y


def write_inputs(folder, n, csv_rows):
    """Shards of n and 10 n rows (written in slices) and a CSV file of csv_rows rows."""
    import numpy as np

    from keras_mle import data

    x, y = table(n)
    data.write_shards(os.path.join(folder, "small"), x, y, rows_per_shard=1_000_000)
    # 10 n rows, without holding them in memory: the same rows, ten times, one shard each.
    big = os.path.join(folder, "big")
    manifest = json.load(open(data.write_shards(big, x, y, rows_per_shard=n)))
    shards = []
    for i in range(10):
        name = f"big-{i:05d}-of-00010.bin"
        os.link(os.path.join(folder, manifest["shards"][0]["file"]), os.path.join(folder, name))
        shards.append({"file": name, "rows": n})
    manifest["shards"] = shards
    with open(big + ".manifest.json", "w") as file:
        json.dump(manifest, file)
    with open(os.path.join(folder, "rows.csv"), "w") as file:
        file.write("a,b,c,y\n")
        np.savetxt(file, np.column_stack([x[:csv_rows], y[:csv_rows]]), fmt="%.9g", delimiter=",")


def one(path, folder, n):
    """Runs one measurement in this process; prints a JSON line."""
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_mle
    from keras_mle import data

    def dataset():
        if path.startswith("memory"):
            x, y = table(n)
            return tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).cache(), n
        if path.startswith("shards"):
            name = "big" if path.startswith("shards10x") else "small"
            manifest = os.path.join(folder, name + ".manifest.json")
            rows = sum(s["rows"] for s in json.load(open(manifest))["shards"])
            return data.shard_dataset(manifest, batch_size=BATCH), rows
        csv_path = os.path.join(folder, "rows.csv")
        rows = sum(1 for _ in open(csv_path)) - 1
        if path.startswith("CsvDataset"):
            defaults = [tf.float32] * (FEATURES + 1)
            return tf.data.experimental.CsvDataset(csv_path, defaults, header=True).batch(
                BATCH
            ), rows
        return data.csv_dataset(csv_path, x=["a", "b", "c"], y="y", batch_size=BATCH), rows

    source, rows = dataset()
    if path.endswith("-read"):
        times = []
        for _ in range(2):
            start = time.perf_counter()
            for _ in source:
                pass
            times.append(time.perf_counter() - start)
        seconds = times[-1]
    else:
        model = keras_mle.LinearRegression()
        model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=True)
        model.fit(source, epochs=1, verbose=0)  # warm-up: tracing, compilation, caching
        start = time.perf_counter()
        model.fit(source, epochs=1, verbose=0)
        seconds = time.perf_counter() - start
        assert np.all(np.isfinite(model.params["m"]))
    peak = _peak_mb()
    print(json.dumps({"path": path, "rows": rows, "seconds": seconds, "peak_mb": peak}))


def _peak_mb():
    """This process's peak resident memory: VmHWM, which (unlike `ru_maxrss`) starts afresh at
    `exec`, so a child does not report its parent's peak."""
    try:
        with open("/proc/self/status") as file:
            for line in file:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.one, args.folder, args.n)
        return
    n = 1_000_000 if args.quick else 10_000_000
    csv_rows = n // 5
    paths = [
        "memory fit",
        "shards read",
        "shards fit",
        "shards 10x read",
        "CsvDataset alone",
        "csv_dataset read",
        "csv_dataset fit",
    ]
    with tempfile.TemporaryDirectory() as folder:
        write_inputs(folder, n, csv_rows)
        results = {}
        for path in paths:
            command = [sys.executable, __file__, "--one", _MODES[path], "--folder", folder]
            out = subprocess.run(
                [*command, "--n", str(n)], capture_output=True, text=True, check=True
            )
            results[path] = json.loads(out.stdout.strip().splitlines()[-1])
    memory_rate = results["memory fit"]["rows"] / results["memory fit"]["seconds"] / 1e6
    print(
        f"N={n:,} rows x {FEATURES} features (shards also {10 * n:,}), CSV {csv_rows:,} "
        f"rows, batches of {BATCH:,}; one epoch after a warm-up, each path in its own process"
    )
    print("\n| path | rows | M rows/s | vs in-memory fit | peak memory |")
    print("|---|---:|---:|---:|---:|")
    for path, r in results.items():
        rate = r["rows"] / r["seconds"] / 1e6
        print(f"| {path} | {r['rows']:,} | {rate:.2f} | {rate / memory_rate:.2f} | "
              f"{r['peak_mb']:.0f} MB |")  # fmt: skip
    small, big = results["shards read"]["peak_mb"], results["shards 10x read"]["peak_mb"]
    print(f"\nPeak memory, shards read at 10x the rows: {big / small:.2f}x (target <= 1.2x).")
    csv = results["csv_dataset read"]["rows"] / results["csv_dataset read"]["seconds"]
    alone = results["CsvDataset alone"]["rows"] / results["CsvDataset alone"]["seconds"]
    print(f"csv_dataset against CsvDataset alone: {csv / alone:.2f}x (target >= 1).")


if __name__ == "__main__":
    main()
