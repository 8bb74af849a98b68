"""`model.fit` with `tf.distribute.MultiWorkerMirroredStrategy`: two workers on this machine.

Run it with `python examples/multi_worker.py`. It starts itself twice as a worker (CPU only),
each with a `TF_CONFIG` naming the same two-worker cluster on free local ports and its own
index, waits for both and prints what each one printed: the same parameters on both, those of
one process taking the same SGD steps on the same global batches. On real machines, run the
worker part (`python examples/multi_worker.py worker`) on each, with `TF_CONFIG` set there.
See `docs/distributed.md`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

WORKERS = 2


def launch():
    """Starts the workers with their `TF_CONFIG` and prints their output."""
    ports = []
    for _ in range(WORKERS):
        with socket.socket() as s:  # a free port (released just before the worker binds it)
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    processes = []
    for index in range(WORKERS):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        env = dict(
            os.environ,
            TF_CONFIG=json.dumps(tf_config),
            CUDA_VISIBLE_DEVICES="",
            TF_CPP_MIN_LOG_LEVEL="3",
        )
        processes.append(
            subprocess.Popen(
                [sys.executable, __file__, "worker"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    failed = False
    for index, process in enumerate(processes):
        try:
            out, err = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            raise SystemExit(f"worker {index} did not finish in 300 s") from None
        if process.returncode:
            failed = True
            print(f"worker {index} failed:\n{err[-3000:]}", file=sys.stderr)
        print(out, end="")
    if failed:
        raise SystemExit(1)


def worker():
    """One worker: the strategy first (it reads TF_CONFIG), then the model in its scope."""
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()

    import keras

    import keras_mle

    task = json.loads(os.environ["TF_CONFIG"])["task"]
    # Every worker holds the same arrays; each step's global batch of 32 rows is split
    # between them (16 each), and every worker ends with the same parameters.
    x, y = keras_mle.data.noisy_line(m=1.0, b=2.0, n=200, noise=0.15, seed=0)
    with strategy.scope():
        model = keras_mle.LinearRegression(m_initializer="zeros")
        model.compile(optimizer=keras.optimizers.SGD(0.1))
    history = model.fit(x, y, batch_size=32, epochs=20, shuffle=False, verbose=0)
    params = model.params
    print(
        f"worker {task['index']} of {strategy.num_replicas_in_sync}: "
        f"m = {float(params['m'][0]):.6f}, b = {float(params['b']):.6f}, "
        f"loss = {history.history['loss'][-1]:.6f}",
        flush=True,
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["worker"]:
        worker()
    else:
        launch()
