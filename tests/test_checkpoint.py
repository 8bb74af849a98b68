"""Checkpoints and resume: exact after an exception or a SIGKILL, never half-written.

The guarantee under test (docs/checkpointing.md): a run interrupted at any point and resumed from
its last epoch-boundary backup ends at *exactly* (bitwise) the parameters and optimizer state
(iterations, slot variables) of an uninterrupted run with the same seed.
"""

import functools
import glob
import inspect
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

import keras_mle
from keras_mle import checkpoint
from keras_mle.checkpoint import BackupAndRestore, ModelCheckpoint

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS = 8
#: Backups written before the child process is killed in the middle of the next one.
SAVES_BEFORE_KILL = 4
#: Seconds allowed for a child process to start TensorFlow and reach the kill point.
CHILD_TIMEOUT = 240


def run_training(
    checkpoint_dir=None,
    *,
    epochs,
    resume=False,
    seed=0,
    mode="function",
    callbacks=(),
    checkpoint_every=1,
):
    """The training run every test repeats: Adam, shuffled mini-batches, a 2-feature model.

    Self-contained (its source is also run in a child process): data fixed, initialisation and
    shuffling from `seed`.
    """
    import keras
    import numpy as np

    import keras_mle

    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 2)).astype("float32")
    y = (x @ np.array([1.5, -0.5]) + 2.0 + 0.3 * rng.normal(size=64)).astype("float32")
    keras.utils.set_random_seed(seed)
    model = keras_mle.GaussianRegression(initial_sigma=0.5)
    model(x[:2])
    keras_mle.loops.train(
        model,
        x,
        y,
        epochs=epochs,
        batch_size=16,
        optimizer=keras.optimizers.Adam(0.05),
        mode=mode,
        shuffle=True,
        verbose=0,
        callbacks=list(callbacks),
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        checkpoint_every=checkpoint_every,
    )
    return model


def training_state(model):
    """Parameters and every optimizer variable (iterations, learning rate, Adam's slots)."""
    state = {f"param/{k}": np.asarray(v) for k, v in model.params.items()}
    # Variable paths carry the model's unique name: key the optimizer's by position.
    state.update({f"optimizer/{i}": np.asarray(v) for i, v in enumerate(model.optimizer.variables)})
    state["optimizer/iterations"] = np.asarray(model.optimizer.iterations)
    return state


def assert_same_state(resumed, reference):
    a, b = training_state(resumed), training_state(reference)
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


class RaiseAt(keras.callbacks.Callback):
    """Raises from `on_train_batch_end` at a given epoch and batch: an interruption mid-epoch."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.target = (epoch, batch)
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) >= self.target:
            raise KeyboardInterrupt(f"interrupted at epoch {self.epoch}, batch {batch}")


@pytest.fixture(scope="module")
def reference():
    return run_training(epochs=EPOCHS)


# ------------------------------------------------------------------- custom loop
@pytest.mark.parametrize("mode", ["eager", "function", pytest.param("xla", marks=pytest.mark.slow)])
def test_loop_resumes_exactly_after_an_exception_mid_epoch(tmp_path, mode, reference):
    # In "function"/"xla" the batch hooks run once per epoch, after its steps: the interruption
    # then comes after the epoch's updates and before its backup.
    with pytest.raises(KeyboardInterrupt):
        run_training(tmp_path, epochs=EPOCHS, mode=mode, callbacks=[RaiseAt(5, 1)])
    assert checkpoint.read_backup(tmp_path)["epoch"] == 5
    # A different seed: initial values and shuffling must all come from the backup.
    resumed = run_training(tmp_path, epochs=EPOCHS, mode=mode, resume=True, seed=123)
    if mode == "xla":
        # XLA fuses differently from the reference's "function" mode (about 1 ulp, see the
        # notes): compare with an uninterrupted XLA run instead.
        reference = run_training(epochs=EPOCHS, mode="xla")
    assert_same_state(resumed, reference)
    assert checkpoint.read_backup(tmp_path)["epoch"] == EPOCHS


def test_loop_resumes_from_a_sparse_backup(tmp_path, reference):
    with pytest.raises(KeyboardInterrupt):
        run_training(tmp_path, epochs=EPOCHS, checkpoint_every=3, callbacks=[RaiseAt(7, 3)])
    assert checkpoint.read_backup(tmp_path)["epoch"] == 6
    resumed = run_training(tmp_path, epochs=EPOCHS, checkpoint_every=3, resume=True, seed=7)
    assert_same_state(resumed, reference)
    # The last epoch is backed up even when it is not a multiple of checkpoint_every.
    assert checkpoint.read_backup(tmp_path)["epoch"] == EPOCHS


def test_continue_training_from_a_finished_run(tmp_path, reference):
    first = run_training(tmp_path, epochs=4)
    assert int(first.optimizer.iterations) == 4 * 4
    continued = run_training(tmp_path, epochs=EPOCHS, resume=True, seed=5)
    assert_same_state(continued, reference)


def test_resume_without_backup_starts_from_scratch(tmp_path, reference):
    resumed = run_training(tmp_path / "empty", epochs=EPOCHS, resume=True)
    assert_same_state(resumed, reference)


def test_resume_needs_a_checkpoint_dir():
    x, y = keras_mle.data.noisy_line(n=10)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        keras_mle.loops.train(
            keras_mle.LinearRegression(),
            x,
            y,
            epochs=1,
            batch_size=10,
            optimizer="sgd",
            resume=True,
        )
    with pytest.raises(ValueError, match="checkpoint_every"):
        keras_mle.loops.train(
            keras_mle.LinearRegression(),
            x,
            y,
            epochs=1,
            batch_size=10,
            optimizer="sgd",
            checkpoint_dir="unused",
            checkpoint_every=0,
        )


# ------------------------------------------------------------------- SIGKILL
CHILD_SCRIPT = """
import os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from keras_mle.checkpoint import atomic

checkpoint_dir, marker, block_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
commits = []
commit = atomic.commit


def blocking_commit(temporary, path):
    if path.endswith(".weights.h5"):
        commits.append(path)
        if len(commits) == block_at:
            # The new backup is fully written to its temporary file but not yet moved into
            # place: the parent kills this process with SIGKILL now.
            open(marker, "w").close()
            time.sleep(3600)
    commit(temporary, path)


atomic.commit = blocking_commit
{run_training}
run_training(checkpoint_dir, epochs={epochs})
"""


def test_sigkill_during_a_save_then_resume_is_exact(tmp_path, reference):
    backup_dir, marker = tmp_path / "backup", tmp_path / "killed-here"
    script = tmp_path / "child.py"
    source = textwrap.dedent(inspect.getsource(run_training))
    script.write_text(CHILD_SCRIPT.format(run_training=source, epochs=EPOCHS))
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    child = subprocess.Popen(
        [sys.executable, str(script), str(backup_dir), str(marker), str(SAVES_BEFORE_KILL + 1)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + CHILD_TIMEOUT
        while not marker.exists():
            if child.poll() is not None or time.monotonic() > deadline:
                output = child.stdout.read().decode(errors="replace")[-3000:]
                pytest.fail(f"child never reached the save (rc={child.returncode}):\n{output}")
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    # The killed save left its temporary file; the previous backup is whole and consistent.
    assert glob.glob(str(backup_dir / ".latest.weights.h5.tmp-*"))
    assert checkpoint.read_backup(backup_dir)["epoch"] == SAVES_BEFORE_KILL
    restored = run_training(epochs=1, seed=42)  # any built and compiled model of the same kind
    checkpoint.restore_backup(restored, backup_dir)
    assert_same_state(restored, run_training(epochs=SAVES_BEFORE_KILL))

    resumed = run_training(backup_dir, epochs=EPOCHS, resume=True, seed=99)
    assert_same_state(resumed, reference)
    assert not glob.glob(str(backup_dir / ".latest.weights.h5.tmp-*"))


KILLED_CHILD_SCRIPT = """
import os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras

class Slow(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        time.sleep(0.05)

{run_training}
run_training(sys.argv[1], epochs={epochs}, callbacks=[Slow()])
"""


@pytest.mark.slow
def test_sigkill_at_an_arbitrary_moment_then_resume_is_exact(tmp_path):
    epochs = 200
    backup_dir = tmp_path / "backup"
    script = tmp_path / "child.py"
    source = textwrap.dedent(inspect.getsource(run_training))
    script.write_text(KILLED_CHILD_SCRIPT.format(run_training=source, epochs=epochs))
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    child = subprocess.Popen([sys.executable, str(script), str(backup_dir)], env=env)
    try:
        deadline = time.monotonic() + CHILD_TIMEOUT
        while (checkpoint.read_backup(backup_dir) or {"epoch": 0})["epoch"] < 20:
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.137)  # somewhere inside a later epoch or save
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    stopped_at = checkpoint.read_backup(backup_dir)["epoch"]
    assert 20 <= stopped_at < epochs
    resumed = run_training(backup_dir, epochs=epochs, resume=True, seed=3)
    assert_same_state(resumed, run_training(epochs=epochs))


# ------------------------------------------------------------------- atomic writes
def test_failure_between_write_and_rename_keeps_the_previous_backup(tmp_path, monkeypatch):
    model = run_training(tmp_path, epochs=3)
    before = training_state(model)
    model.optimizer.learning_rate.assign(0.5)
    for variable in model.trainable_variables:
        variable.assign(variable + 1.0)

    def failing_commit(temporary, path):
        assert os.path.getsize(temporary) > 0
        raise OSError("disk full (injected)")

    monkeypatch.setattr(checkpoint.atomic, "commit", failing_commit)
    with pytest.raises(OSError, match="injected"):
        checkpoint.write_backup(model, tmp_path, {"epoch": 4})
    with pytest.raises(OSError, match="injected"):
        checkpoint.save_model_atomic(model, tmp_path / "model.keras")
    monkeypatch.undo()

    # No temporary file is left: only the two generations and the lock file.
    assert sorted(os.listdir(tmp_path)) == sorted(
        [
            checkpoint.LOCK_FILE,
            checkpoint.WEIGHTS_FILE,
            checkpoint.METADATA_FILE,
            checkpoint.PREVIOUS_WEIGHTS_FILE,
            checkpoint.PREVIOUS_METADATA_FILE,
        ]
    )
    assert checkpoint.read_backup(tmp_path)["epoch"] == 3
    restored = run_training(epochs=1, seed=11)
    checkpoint.restore_backup(restored, tmp_path)
    after = training_state(restored)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)


def test_backup_metadata_inside_the_weights_file_wins(tmp_path):
    # A kill between the weights file and the JSON file leaves the JSON one epoch behind.
    model = run_training(tmp_path, epochs=3)
    checkpoint.write_backup(model, tmp_path, {"epoch": 3})
    (tmp_path / checkpoint.METADATA_FILE).write_text('{"epoch": 2, "batch": 0}')
    assert checkpoint.read_backup(tmp_path)["epoch"] == 3


# ------------------------------------------------------------------- fit() and Keras callbacks
def _fit_model(name, seed=0):
    keras.utils.set_random_seed(seed)
    model = {
        "LinearRegression": lambda: keras_mle.LinearRegression(),
        "GaussianMLE": lambda: keras_mle.GaussianMLE(initial_mu=1.4, initial_sigma=1.3),
        "GaussianRegression": lambda: keras_mle.GaussianRegression(initial_sigma=0.5),
    }[name]()
    x, y = keras_mle.data.noisy_line(n=48, seed=2)
    if name == "GaussianMLE":
        x, y = keras_mle.data.gaussian_sample(n=48, seed=2), None
    model(x[:2])
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    return model, x, y


@functools.cache
def _fit_reference(name):
    """An uninterrupted 6-epoch fit of each model, shared by the tests."""
    model, x, y = _fit_model(name)
    _fit(model, x, y, [])
    return model


def _fit(model, x, y, callbacks, epochs=6):
    return model.fit(
        x, y, epochs=epochs, batch_size=16, shuffle=False, verbose=0, callbacks=callbacks
    )


MODEL_NAMES = ["LinearRegression", "GaussianMLE", "GaussianRegression"]


def test_fit_backup_and_restore_is_exact_after_an_exception_mid_epoch(tmp_path):
    model, x, y = _fit_model("GaussianRegression")
    with pytest.raises(KeyboardInterrupt):
        _fit(model, x, y, [BackupAndRestore(tmp_path), RaiseAt(3, 1)])
    resumed, x, y = _fit_model("GaussianRegression", seed=8)
    history = _fit(resumed, x, y, [BackupAndRestore(tmp_path)])
    assert history.epoch == [3, 4, 5]
    assert_same_state(resumed, _fit_reference("GaussianRegression"))
    assert not os.path.exists(tmp_path / checkpoint.WEIGHTS_FILE)  # deleted at the end, as Keras


def test_fit_resumes_with_the_same_callback_and_model_after_an_exception(tmp_path):
    # The interrupted run never reached on_train_end: the next fit must still reload the backup
    # into the (half-trained) model rather than take the first run's restore as its own.
    model, x, y = _fit_model("GaussianRegression")
    backup = BackupAndRestore(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        _fit(model, x, y, [backup, RaiseAt(3, 1)])
    history = _fit(model, x, y, [backup])
    assert history.epoch == [3, 4, 5]
    assert_same_state(model, _fit_reference("GaussianRegression"))
    # And a third fit with the same callback starts over: the backup was deleted at the end.
    assert _fit(model, x, y, [backup], epochs=1).epoch == [0]


class StopAtEpoch(keras.callbacks.Callback):
    """Raises at the start of an epoch: an interruption at an epoch boundary."""

    def __init__(self, epoch):
        super().__init__()
        self.stop_epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.stop_epoch:
            raise KeyboardInterrupt


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_keras_model_checkpoint_and_backup_and_restore_with_every_model(tmp_path, name):
    """Keras' own callbacks and the package's atomic ones, `.keras` and `.weights.h5`."""
    model, x, y = _fit_model(name)
    paths = {
        "keras/stock": tmp_path / "stock.keras",
        "weights/stock": tmp_path / "stock.weights.h5",
        "keras/atomic": tmp_path / "atomic-{epoch:02d}.keras",
        "weights/atomic": tmp_path / "atomic.weights.h5",
    }
    callbacks = [
        keras.callbacks.BackupAndRestore(tmp_path / "backup"),
        keras.callbacks.ModelCheckpoint(paths["keras/stock"]),
        keras.callbacks.ModelCheckpoint(paths["weights/stock"], save_weights_only=True),
        ModelCheckpoint(str(paths["keras/atomic"])),
        ModelCheckpoint(paths["weights/atomic"], save_weights_only=True),
        StopAtEpoch(4),
    ]
    with pytest.raises(KeyboardInterrupt):
        _fit(model, x, y, callbacks)

    # Every checkpoint holds the state after epoch 4: the model's at the interruption.
    expected = training_state(model)
    assert os.path.exists(tmp_path / "atomic-01.keras")
    loaded = {
        "keras/stock": keras.models.load_model(paths["keras/stock"]),
        "keras/atomic": keras.models.load_model(tmp_path / "atomic-04.keras"),
    }
    for kind in ("weights/stock", "weights/atomic"):
        fresh, _, _ = _fit_model(name, seed=21)
        fresh.optimizer.build(fresh.trainable_variables)
        fresh.load_weights(paths[kind])
        loaded[kind] = fresh
    for kind, restored in loaded.items():
        assert type(restored) is type(model), kind
        state = training_state(restored)
        for key in expected:
            np.testing.assert_array_equal(state[key], expected[key], err_msg=f"{kind}: {key}")
    assert not glob.glob(str(tmp_path / ".*tmp*"))

    # Keras' BackupAndRestore resumes exactly from an epoch boundary.
    resumed, x, y = _fit_model(name, seed=4)
    history = _fit(resumed, x, y, [keras.callbacks.BackupAndRestore(tmp_path / "backup")])
    assert history.epoch == [4, 5]
    assert_same_state(resumed, _fit_reference(name))


def test_backup_and_restore_rejects_batch_level_saving(tmp_path):
    with pytest.raises(ValueError, match="save_every"):
        BackupAndRestore(tmp_path, save_every=0)
    with pytest.raises(TypeError):
        BackupAndRestore(tmp_path, save_freq=10)


# ------------------------------------------------------------------- the callbacks' own pieces
BATCHES_PER_EPOCH = 3  # 48 samples in batches of 16 (`_fit_model`, `_fit`)


def _backed_up_fit(backup_dir, epochs=3):
    """A keras_mle model fitted `epochs` epochs, its final state kept as a backup."""
    model, x, y = _fit_model("GaussianRegression")
    np.random.seed(17)
    _fit(model, x, y, [BackupAndRestore(backup_dir, delete_checkpoint=False)], epochs=epochs)
    return model


def test_initial_epoch_restores_weights_optimizer_and_numpy_state(tmp_path):
    trained = _backed_up_fit(tmp_path)
    metadata = checkpoint.read_backup(tmp_path)
    assert metadata["epoch"] == 3 and metadata["batch"] == 0
    # A different seed: every restored value must come from the backup.
    resumed, _, _ = _fit_model("GaussianRegression", seed=8)
    np.random.seed(123)
    backup = BackupAndRestore(tmp_path)
    assert checkpoint.initial_epoch([keras.callbacks.History(), backup], resumed) == 3
    assert backup.restored_epoch == 3
    assert int(resumed.optimizer.iterations) == 3 * BATCHES_PER_EPOCH
    assert_same_state(resumed, trained)
    assert checkpoint.numpy_random_state() == metadata["numpy_random_state"]

    # The caller's initial_epoch wins when it is later; nothing to restore gives `requested`.
    other, _, _ = _fit_model("GaussianRegression", seed=9)
    assert checkpoint.initial_epoch([BackupAndRestore(tmp_path)], other, requested=5) == 5
    assert checkpoint.initial_epoch(None, other, requested=2) == 2
    assert checkpoint.initial_epoch((), other) == 0
    assert checkpoint.initial_epoch([BackupAndRestore(tmp_path / "none")], other) == 0
    # restore=False loads nothing.
    fresh, _, _ = _fit_model("GaussianRegression", seed=10)
    keep = [np.asarray(v) for v in fresh.trainable_variables]
    assert checkpoint.initial_epoch([BackupAndRestore(tmp_path, restore=False)], fresh) == 0
    for value, variable in zip(keep, fresh.trainable_variables, strict=True):
        np.testing.assert_array_equal(np.asarray(variable), value)


def test_initial_epoch_twice_in_one_run_does_not_reload(tmp_path):
    _backed_up_fit(tmp_path)
    model, _, _ = _fit_model("GaussianRegression", seed=8)
    backup = BackupAndRestore(tmp_path)
    assert checkpoint.initial_epoch([backup], model) == 3
    variable = model.trainable_variables[0]
    variable.assign(variable + 1.0)
    changed = np.asarray(variable)
    # Same run (training has not begun): same epoch, the model is left alone.
    assert checkpoint.initial_epoch([backup], model) == 3
    assert backup.restore_state(model) == 3
    np.testing.assert_array_equal(np.asarray(variable), changed)

    # The run begins and is interrupted (no on_train_end): the next call is a new run.
    backup.set_model(model)
    backup.on_train_begin()
    assert checkpoint.initial_epoch([backup], model) == 3
    assert not np.array_equal(np.asarray(variable), changed)

    # After a run that ended normally, too.
    variable.assign(variable + 1.0)
    changed = np.asarray(variable)
    backup.on_train_begin()
    backup.on_train_end()  # delete_checkpoint=True: the backup goes
    assert checkpoint.read_backup(tmp_path) is None
    assert checkpoint.initial_epoch([backup], model) == 0
    np.testing.assert_array_equal(np.asarray(variable), changed)


def test_initial_epoch_rejects_two_backups(tmp_path):
    model, _, _ = _fit_model("LinearRegression")
    callbacks = [BackupAndRestore(tmp_path / "a"), BackupAndRestore(tmp_path / "b")]
    with pytest.raises(ValueError, match="at most one"):
        checkpoint.initial_epoch(callbacks, model)
    with pytest.raises(ValueError, match="requested"):
        checkpoint.initial_epoch([], model, requested=-1)


def test_restore_state_needs_a_built_model(tmp_path):
    _backed_up_fit(tmp_path)
    with pytest.raises(ValueError, match="built model"):
        BackupAndRestore(tmp_path).restore_state(keras_mle.GaussianRegression())
    # Without a backup there is nothing to load, and nothing to build.
    assert BackupAndRestore(tmp_path / "none").restore_state(keras_mle.GaussianRegression()) == 0


def test_restore_state_into_another_model_is_refused_at_train_begin(tmp_path):
    backup = BackupAndRestore(tmp_path)
    restored, _, _ = _fit_model("LinearRegression")
    trained, _, _ = _fit_model("LinearRegression", seed=1)
    backup.restore_state(restored)
    backup.set_model(trained)
    with pytest.raises(ValueError, match="another model"):
        backup.on_train_begin()


def _plain_model(seed=0, learning_rate=0.02):
    """A plain Keras model (no keras_mle fit()), its data and validation data."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9), loss="mse")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(32, 2)).astype("float32")
    y = (x @ np.array([1.0, -2.0]) + 0.5).astype("float32")
    x_val = rng.normal(size=(16, 2)).astype("float32")
    y_val = (x_val @ np.array([1.0, -2.0]) + 0.5 + rng.normal(size=16)).astype("float32")
    return model, x, y, (x_val, y_val)


def _record_backups(monkeypatch):
    """The epochs of every backup `BackupAndRestore` writes, in order."""
    written = []
    write = checkpoint.backup.write_backup

    def recording_write(model, directory, metadata, **kwargs):
        written.append(metadata["epoch"])
        return write(model, directory, metadata, **kwargs)

    monkeypatch.setattr(checkpoint.backup, "write_backup", recording_write)
    return written


def test_plain_keras_model_gets_backups_at_epoch_boundaries(tmp_path, monkeypatch):
    written = _record_backups(monkeypatch)
    model, x, y, _ = _plain_model()
    backup = BackupAndRestore(tmp_path, save_every=2)
    model.fit(x, y, epochs=5, batch_size=8, verbose=0, callbacks=[backup])
    assert written == [2, 4]  # at epoch boundaries; deleted at the end (delete_checkpoint)
    assert checkpoint.read_backup(tmp_path) is None

    # The same callback serves a second fit; kept, the last epoch is backed up too.
    written.clear()
    backup.delete_checkpoint = False
    model.fit(x, y, epochs=5, batch_size=8, verbose=0, callbacks=[backup])
    assert written == [2, 4, 5]
    assert checkpoint.read_backup(tmp_path)["epoch"] == 5
    kept = [np.asarray(v) for v in model.weights]
    restored, _, _, _ = _plain_model(seed=1)
    checkpoint.restore_backup(restored, tmp_path)
    for value, variable in zip(kept, restored.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(variable), value)
    # Epochs are counted from fit()'s epoch index: a user's initial_epoch counts.
    written.clear()
    checkpoint.delete_backup(tmp_path)
    backup.delete_checkpoint = True
    model.fit(x, y, epochs=4, batch_size=8, verbose=0, callbacks=[backup], initial_epoch=3)
    assert written == [4]


def test_plain_keras_model_with_a_backup_to_resume_raises(tmp_path, monkeypatch):
    model, x, y, _ = _plain_model()
    model.fit(
        x,
        y,
        epochs=2,
        batch_size=8,
        verbose=0,
        callbacks=[BackupAndRestore(tmp_path, delete_checkpoint=False)],
    )
    assert checkpoint.read_backup(tmp_path)["epoch"] == 2
    weights = [np.asarray(v) for v in model.weights]
    with pytest.raises(ValueError, match=r"keras_mle model's fit\(\)") as raised:
        model.fit(x, y, epochs=4, batch_size=8, verbose=0, callbacks=[BackupAndRestore(tmp_path)])
    assert "keras.callbacks.BackupAndRestore" in str(raised.value)
    assert "keras_mle.loops.train" in str(raised.value)
    for value, variable in zip(weights, model.weights, strict=True):  # nothing trained
        np.testing.assert_array_equal(np.asarray(variable), value)
    # restore=False starts over and overwrites the backup.
    written = _record_backups(monkeypatch)
    model.fit(
        x,
        y,
        epochs=1,
        batch_size=8,
        verbose=0,
        callbacks=[BackupAndRestore(tmp_path, restore=False, delete_checkpoint=False)],
    )
    assert written == [1]
    assert checkpoint.read_backup(tmp_path)["epoch"] == 1


def test_model_checkpoint_save_best_only_in_a_plain_keras_fit(tmp_path, capsys):
    model, x, y, validation = _plain_model()
    best = ModelCheckpoint(
        tmp_path / "best" / "model-{epoch:02d}.keras", save_best_only=True, verbose=1
    )
    every = ModelCheckpoint(
        str(tmp_path / "every" / "{epoch}-{val_loss:.4f}.weights.h5"), save_weights_only=True
    )
    history = model.fit(
        x,
        y,
        epochs=8,
        batch_size=8,
        shuffle=False,
        verbose=0,
        validation_data=validation,
        callbacks=[best, every],
    )
    val_loss = history.history["val_loss"]
    improving = [e for e in range(len(val_loss)) if val_loss[e] < min(val_loss[:e], default=np.inf)]
    assert 1 < len(improving) < len(val_loss)  # the test sees saves and skips
    assert sorted(os.listdir(tmp_path / "best")) == [f"model-{e + 1:02d}.keras" for e in improving]
    assert best.best == min(val_loss)
    assert sorted(os.listdir(tmp_path / "every")) == sorted(
        f"{e + 1}-{v:.4f}.weights.h5" for e, v in enumerate(val_loss)
    )
    # The best file holds the model of its epoch: its validation loss is the best one.
    last_best = keras.models.load_model(tmp_path / "best" / f"model-{improving[-1] + 1:02d}.keras")
    np.testing.assert_allclose(last_best.evaluate(*validation, verbose=0), min(val_loss), 1e-5)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == len(val_loss)
    assert lines[0].startswith("Epoch 1: val_loss improved from None to ")
    assert sum("did not improve" in line for line in lines) == len(val_loss) - len(improving)


def test_model_checkpoint_skips_a_missing_monitor_with_a_warning(tmp_path):
    model, x, y, _ = _plain_model()
    callback = ModelCheckpoint(tmp_path / "m.keras", save_best_only=True)
    with pytest.warns(UserWarning, match="'val_loss' is missing"):
        model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[callback])
    assert os.listdir(tmp_path) == []
    # Without save_best_only the monitor is not needed.
    model.fit(
        x, y, epochs=1, batch_size=8, verbose=0, callbacks=[ModelCheckpoint(tmp_path / "m.keras")]
    )
    assert os.listdir(tmp_path) == ["m.keras"]


def test_model_checkpoint_modes_and_threshold(tmp_path):
    path = tmp_path / "m.keras"
    assert ModelCheckpoint(path).monitor_op is np.less
    assert ModelCheckpoint(path, monitor="val_accuracy").monitor_op is np.greater
    assert ModelCheckpoint(path, monitor="fmeasure").monitor_op is np.greater
    assert ModelCheckpoint(path, monitor="acc", mode="min").monitor_op is np.less
    model, x, y, validation = _plain_model()
    callback = ModelCheckpoint(path, save_best_only=True, initial_value_threshold=0.0)
    model.fit(
        x, y, epochs=2, batch_size=8, verbose=0, validation_data=validation, callbacks=[callback]
    )
    assert not path.exists()  # no validation loss beats 0


def test_model_checkpoint_rejects_what_cannot_resume_or_load(tmp_path):
    with pytest.raises(ValueError, match="save_freq"):
        ModelCheckpoint(tmp_path / "m.keras", save_freq=5)
    with pytest.raises(ValueError, match="filepath"):
        ModelCheckpoint(tmp_path / "m.h5")
    with pytest.raises(ValueError, match="filepath"):
        ModelCheckpoint(tmp_path / "m.keras", save_weights_only=True)
    with pytest.raises(ValueError, match="filepath"):
        ModelCheckpoint(tmp_path / "m.weights.h5")
    with pytest.raises(ValueError, match="mode"):
        ModelCheckpoint(tmp_path / "m.keras", mode="lowest")
    (tmp_path / "folder.keras").mkdir()
    with pytest.raises(ValueError, match="folder"):
        ModelCheckpoint(tmp_path / "folder.keras")
    (tmp_path / "2.keras").mkdir()
    model, x, y, _ = _plain_model()
    callback = ModelCheckpoint(str(tmp_path / "{epoch}.keras"))
    with pytest.raises(IsADirectoryError, match="folder"):
        model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[callback])
    assert (tmp_path / "1.keras").is_file()
    with pytest.raises(KeyError, match="val_mae"):
        model.fit(
            x,
            y,
            epochs=1,
            batch_size=8,
            verbose=0,
            callbacks=[ModelCheckpoint(str(tmp_path / "{val_mae:.2f}.keras"))],
        )


def test_checkpoint_uses_no_private_keras_attribute():
    modules = [checkpoint.atomic, checkpoint.lock, checkpoint.sealed, checkpoint.model_file]
    modules += [checkpoint.backup, checkpoint.callbacks, checkpoint]
    source = "".join(inspect.getsource(module) for module in modules)
    assert not re.findall(r"\b(model|self\.model|optimizer)\._[a-z]", source)
    # The callbacks are plain Keras callbacks, not subclasses of Keras' checkpoint callbacks.
    for cls in (BackupAndRestore, ModelCheckpoint):
        assert cls.__bases__ == (keras.callbacks.Callback,)
