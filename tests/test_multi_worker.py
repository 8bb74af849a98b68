"""`fit()` under `tf.distribute.MultiWorkerMirroredStrategy`: two worker processes on 127.0.0.1.

Each test launches this file as two workers (CPU only, `TF_CONFIG` on free local ports); every
worker writes what it trained to a JSON file. The reference is one process (this one, on one
device) running the same plain SGD steps on the same global batches: SGD exposes a wrongly
scaled or wrongly sharded step where Adam would hide it. The parameters start at zero so that
both sides start alike.
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

# Two workers sum a step's partial sums in another order than one process: float32 rounding,
# of order 1e-7 per step, over about twenty steps: 1e-5 leaves a factor of ten of margin.
PARITY_ATOL = 1e-5
# Two workers importing TensorFlow on shared cores, then training a few epochs.
WORKER_TIMEOUT_S = 120

N, BATCH, EPOCHS, LR = 103, 16, 3, 0.1  # 6 batches of 16 and a last one of 7 rows (4 + 3)
ROWS_PER_SHARD = 40
# The network's NLL steps scale with 1 / sigma^2: a smaller rate keeps float32 rounding small.
NETWORK_LR = 0.01  # three files of 40, 40 and 23 rows


# ---------------------------------------------------------------- launching workers
def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start(folder, scenario, *, workers=2, env_for=None):
    """Starts the workers of `scenario`; returns their `Popen`s."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(workers)]}
    processes = []
    for index in range(workers):
        env = dict(
            os.environ,
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
            CUDA_VISIBLE_DEVICES="",
            TF_CPP_MIN_LOG_LEVEL="2",
            **(env_for(index) if env_for else {}),
        )
        processes.append(
            subprocess.Popen(
                [sys.executable, __file__, scenario, str(folder), str(index)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    return processes


def _wait(processes, timeout=WORKER_TIMEOUT_S):
    """Waits for every worker, killing those still running after `timeout`; their outputs."""
    deadline = time.monotonic() + timeout
    outputs = []
    for process in processes:
        try:
            out, _ = process.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            out, _ = process.communicate()
        outputs.append(out)
    return outputs


def _run(folder, scenario, **kwargs):
    outputs = _wait(_start(folder, scenario, **kwargs))
    results = []
    for index, out in enumerate(outputs):
        path = folder / f"{scenario}-{index}.json"
        assert path.exists(), f"worker {index} wrote no result:\n{out[-4000:]}"
        results.append(json.loads(path.read_text()))
    return results


def _data(folder):
    """The data of every scenario, written once to `folder` for the workers to read."""
    from helpers import plane

    from keras_mle import data

    x, y = plane(N, seed=3)
    w = np.random.default_rng(4).uniform(0.5, 2.0, size=N).astype(np.float32)
    np.savez(folder / "data.npz", x=x, y=y, w=w)
    data.write_shards(str(folder / "rows"), x, y, w, rows_per_shard=ROWS_PER_SHARD)
    return x, y, w


def _reference(x, y, w, *, epochs=EPOCHS, batch_size=BATCH, shuffle=False, validation=None):
    """One process, one device: the same SGD steps on the same global batches."""
    import keras

    import keras_mle

    model = keras_mle.LinearRegression(m_initializer="zeros")
    model.compile(optimizer=keras.optimizers.SGD(LR))
    history = model.fit(
        x,
        y,
        sample_weight=w,
        batch_size=batch_size,
        epochs=epochs,
        shuffle=shuffle,
        validation_data=validation,
        verbose=0,
    )
    return {k: np.asarray(v).tolist() for k, v in model.params.items()}, history.history


def _assert_params(result, expected):
    for name, value in expected.items():
        np.testing.assert_allclose(result[name], value, atol=PARITY_ATOL, err_msg=name)


# ---------------------------------------------------------------- the tests
# Two worker processes each import TensorFlow and build their cluster: 25-65 s on 2 shared cores.
@pytest.mark.slow
def test_two_workers_match_one_process(tmp_path):
    x, y, w = _data(tmp_path)
    results = _run(tmp_path, "parity")
    files_params, files_history = _reference(x, y, w, validation=(x, y, w))
    full_params, _ = _reference(x, y, w, batch_size=N)
    for index, result in enumerate(results):
        assert result["replicas"] == 2
        assert result["chief"] == (index == 0)
        # An OFF shard policy would have each worker train on all rows: refused.
        assert "auto_shard_policy=OFF" in result["off_error"]
        assert "y has NaN or Inf values in epoch 1, batch 3" in result["nan_error"]
        assert result["nan_iterations"] == 2
        # Files (DATA-sharded global batches, uneven last batch) and arrays alike.
        for run in ("files", "arrays"):
            _assert_params(result[run]["params"], files_params)
            assert result[run]["iterations"] == EPOCHS * 7
            # The logged loss is the global weighted mean, not one worker's share.
            np.testing.assert_allclose(
                result[run]["history"]["loss"], files_history["loss"], rtol=1e-5
            )
        # Validation batches are split across the workers too, and reduced.
        np.testing.assert_allclose(
            result["files"]["history"]["val_loss"], files_history["val_loss"], rtol=1e-5
        )
        # Shuffled full batches: both workers cut the same permutation, or rows would be
        # counted twice and others missed; the full batch's step does not depend on the order.
        _assert_params(result["shuffled_full_batch"]["params"], full_params)
    assert results[0]["files"] == results[1]["files"]


@pytest.mark.slow
def test_resume_after_a_worker_dies_gives_the_uninterrupted_result(tmp_path):
    x, y, w = _data(tmp_path)
    epochs = 4
    # Worker 1 dies at the end of epoch 2, after its part of that epoch's backup; the chief is
    # then stuck in the next step's all-reduce, and is killed like a lost machine.
    processes = _start(tmp_path, "resume", env_for=_die_on_worker_1)
    try:
        processes[1].wait(timeout=WORKER_TIMEOUT_S)
    finally:
        outputs = _wait(processes, timeout=5)
    assert processes[1].returncode == 3, f"worker 1 did not die at epoch 2:\n{outputs[1][-3000:]}"
    assert (tmp_path / "backup" / "latest.weights.h5").exists()
    results = _run(tmp_path, "resume")
    expected, _ = _reference(x, y, w, epochs=epochs)
    for result in results:
        assert result["initial_epoch"] in (1, 2)  # the last backup the chief completed
        _assert_params(result["params"], expected)
        assert result["iterations"] == epochs * 7
    # Only the chief writes into the backup folder (the other worker's copy is temporary).
    assert not [p for p in (tmp_path / "backup").iterdir() if "worker" in p.name]


def _network(strategy=None):
    """A GaussianNetwork over named inputs (a dict: two features and a 4-pixel image)."""
    import contextlib

    import keras

    import keras_mle

    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        tabular = keras.Input((2,), name="tabular")
        image = keras.Input((2, 2, 1), name="image")
        joined = keras.layers.Concatenate()([tabular, keras.layers.Flatten()(image)])
        backbone = keras.Model(
            {"tabular": tabular, "image": image},
            keras.layers.Dense(3, activation="tanh")(joined),
        )
        model = keras_mle.GaussianNetwork(backbone)
        model.compile(optimizer=keras.optimizers.SGD(NETWORK_LR))
    return model


def _named_inputs(folder):
    rng = np.random.default_rng(5)
    tabular = rng.normal(size=(N, 2)).astype(np.float32)
    image = rng.normal(size=(N, 2, 2, 1)).astype(np.float32)
    y = (tabular[:, 0] - image[:, 0, 0, 0] + 0.3 * rng.normal(size=N)).astype(np.float32)
    np.savez(folder / "named.npz", tabular=tabular, image=image, y=y)
    return {"tabular": tabular, "image": image}, y


@pytest.mark.slow
def test_a_network_of_named_inputs_on_two_workers_matches_one_process(tmp_path):
    import keras  # (the workers import TensorFlow only after making their strategy)

    _data(tmp_path)  # (what every worker reads first)
    x, y = _named_inputs(tmp_path)
    model = _network()
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)  # builds it
    model.save_weights(tmp_path / "init.weights.h5")
    expected = {}
    for shuffle in (False, True):
        model.load_weights(tmp_path / "init.weights.h5")
        keras.utils.set_random_seed(11)  # as each worker does: the same seed of the order
        model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=shuffle, verbose=0)
        expected[shuffle] = [w.numpy() for w in model.trainable_weights]
    results = _run(tmp_path, "network")
    for result in results:
        for shuffle, key in ((False, "in_order"), (True, "shuffled")):
            for got, want in zip(result[key], expected[shuffle], strict=True):
                np.testing.assert_allclose(np.asarray(got), want, atol=PARITY_ATOL)
    assert results[0]["seed"] == results[1]["seed"] is not None


def _die_on_worker_1(index):
    return {"DIE_AFTER_EPOCH": "2"} if index == 1 else {}


@pytest.mark.slow
def test_example_prints_the_same_parameters_on_both_workers():
    example = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "multi_worker.py")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, example], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = sorted(line for line in result.stdout.splitlines() if line.startswith("worker "))
    assert [line.split(":")[0] for line in lines] == ["worker 0 of 2", "worker 1 of 2"]
    assert lines[0].split(":")[1] == lines[1].split(":")[1]


# ---------------------------------------------------------------- the workers
def _worker(scenario, folder, index):
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import keras

    import keras_mle
    from keras_mle import data, distributed
    from keras_mle.checkpoint import BackupAndRestore

    arrays = np.load(os.path.join(folder, "data.npz"))
    x, y, w = arrays["x"], arrays["y"], arrays["w"]
    manifest = os.path.join(folder, "rows.manifest.json")

    def new_model():
        with strategy.scope():
            model = keras_mle.LinearRegression(m_initializer="zeros")
            model.build((None, x.shape[1]))
            model.compile(optimizer=keras.optimizers.SGD(LR))
        return model

    def outcome(model, history):
        return {
            "params": {k: np.asarray(v).tolist() for k, v in model.params.items()},
            "iterations": int(model.optimizer.iterations.numpy()),
            "history": {k: list(map(float, v)) for k, v in history.history.items()},
        }

    out = {"replicas": strategy.num_replicas_in_sync, "chief": distributed.is_chief(strategy)}
    if scenario == "parity":
        off = tf.data.Options()
        off.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        try:
            new_model().fit(data.shard_dataset(manifest, batch_size=BATCH).with_options(off))
        except ValueError as error:
            out["off_error"] = str(error)
        # A NaN target in the third global batch: refused on both workers, before that step.
        bad_y = y.copy()
        bad_y[2 * BATCH + 1] = np.nan
        model = new_model()
        try:
            model.fit(tf.data.Dataset.from_tensor_slices((x, bad_y)).batch(BATCH), verbose=0)
        except ValueError as error:
            out["nan_error"] = str(error)
        out["nan_iterations"] = int(model.optimizer.iterations.numpy())
        model = new_model()
        history = model.fit(
            data.shard_dataset(manifest, batch_size=BATCH),
            epochs=EPOCHS,
            validation_data=(x, y, w),
            verbose=0,
        )
        out["files"] = outcome(model, history)
        model = new_model()
        history = model.fit(
            x, y, sample_weight=w, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0
        )
        out["arrays"] = outcome(model, history)
        keras.utils.set_random_seed(index)  # different seeds: the chief's order must prevail
        model = new_model()
        history = model.fit(x, y, sample_weight=w, batch_size=N, epochs=EPOCHS, verbose=0)
        out["shuffled_full_batch"] = outcome(model, history)
    elif scenario == "network":
        named = np.load(os.path.join(folder, "named.npz"))
        x_named = {"tabular": named["tabular"], "image": named["image"]}
        for shuffle, key in ((False, "in_order"), (True, "shuffled")):
            model = _network(strategy)
            with strategy.scope():
                model.build({"tabular": (None, 2), "image": (None, 2, 2, 1)})
            model.load_weights(os.path.join(folder, "init.weights.h5"))
            keras.utils.set_random_seed(11)
            model.fit(
                x_named, named["y"], batch_size=BATCH, epochs=EPOCHS, shuffle=shuffle, verbose=0
            )
            out[key] = [w.numpy().tolist() for w in model.trainable_weights]
        out["seed"] = model.shuffle_seed
    elif scenario == "resume":
        die_after = int(os.environ.get("DIE_AFTER_EPOCH", "0"))

        class Die(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch + 1 == die_after:
                    os._exit(3)

        backup = BackupAndRestore(os.path.join(folder, "backup"), delete_checkpoint=False)
        model = new_model()
        history = model.fit(
            data.shard_dataset(manifest, batch_size=BATCH),
            epochs=4,
            callbacks=[backup, Die()],
            verbose=0,
        )
        out.update(outcome(model, history), initial_epoch=backup.restored_epoch)
        if not out["chief"]:
            out["initial_epoch"] = int(4 - len(history.history["loss"]))
    path = os.path.join(folder, f"{scenario}-{index}.json")
    with open(path + ".tmp", "w") as file:
        json.dump(out, file)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2], int(sys.argv[3]))
