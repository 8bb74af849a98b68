"""Backups under faults: a shared folder, damaged files, a diverged state, file modes.

Each fault is injected by hand (a second process or thread on the folder, a flipped bit, a
truncated or zeroed file, a NaN assigned to a variable) and the test checks what
docs/checkpointing.md promises: a clear error before any work, or a fall back to the previous
generation with a warning, whose resumed numbers equal an uninterrupted run's exactly.
"""

import fcntl
import gc
import json
import os
import subprocess
import sys
import textwrap
import threading
import warnings

import h5py
import keras
import numpy as np
import pytest

import keras_mle
from keras_mle import checkpoint
from keras_mle.checkpoint import BackupAndRestore, BackupInUseError, ModelCheckpoint

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Seconds for the child process to import TensorFlow and reach the lock.
CHILD_TIMEOUT = 240
STEPS_PER_EPOCH = 4  # 64 samples in batches of 16

_rng = np.random.default_rng(1)
X = _rng.normal(size=(64, 2)).astype("float32")
Y = (X @ np.array([1.5, -0.5]) + 2.0 + 0.3 * _rng.normal(size=64)).astype("float32")


def new_model(seed=0):
    """A built, compiled GaussianRegression, its Adam state built; initial values from `seed`."""
    keras.utils.set_random_seed(seed)
    model = keras_mle.GaussianRegression(initial_sigma=0.5)
    model(X[:2])
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    model.optimizer.build(model.trainable_variables)
    return model


def train(checkpoint_dir, epochs, *, seed=0, resume=True, callbacks=()):
    """Eager custom loop, shuffled mini-batches: backups every epoch in `checkpoint_dir`."""
    model = new_model(seed)
    keras_mle.loops.train(
        model,
        X,
        Y,
        epochs=epochs,
        batch_size=16,
        optimizer=model.optimizer,
        mode="eager",
        shuffle=True,
        verbose=0,
        callbacks=list(callbacks),
        checkpoint_dir=checkpoint_dir,
        resume=resume and checkpoint_dir is not None,
    )
    return model


def state(model):
    """Every parameter and optimizer variable (iterations, learning rate, Adam's slots)."""
    values = {f"param/{k}": np.asarray(v) for k, v in model.params.items()}
    values.update(
        {f"optimizer/{i}": np.asarray(v) for i, v in enumerate(model.optimizer.variables)}
    )
    return values


def assert_same_state(model, reference):
    a, b = state(model), state(reference)
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def folder_bytes(directory):
    """Every file of a folder (hidden ones included) and its bytes."""
    return {name: (directory / name).read_bytes() for name in sorted(os.listdir(directory))}


def another_process_can_lock(directory):
    """Whether a new lock on the folder's lock file would succeed, as in another process.

    `flock` locks belong to an open file description, so a second `open` in this process
    conflicts with a held lock exactly as another process's would.
    """
    fd = os.open(directory / checkpoint.LOCK_FILE, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def epoch_2():
    """An uninterrupted 2-epoch run: the previous generation of a 3-epoch backup."""
    return train(None, 2)


@pytest.fixture(scope="module")
def epoch_4():
    return train(None, 4)


@pytest.fixture
def two_generations(tmp_path):
    """A backup folder after 3 epochs: latest is epoch 3, the previous generation epoch 2."""
    train(tmp_path, 3)
    assert checkpoint.read_backup(tmp_path)["epoch"] == 3
    with h5py.File(tmp_path / checkpoint.PREVIOUS_WEIGHTS_FILE) as file:
        assert '"epoch": 2' in file.attrs[checkpoint.METADATA_ATTR]
    return tmp_path


# ------------------------------------------------------------------- the lock
CHILD = """
import sys
import keras_mle
from keras_mle import checkpoint

x, y = keras_mle.data.noisy_line(n=8)
for attempt in ("train", "delete_backup"):
    try:
        if attempt == "train":
            model = keras_mle.LinearRegression()
            keras_mle.loops.train(model, x, y, epochs=50, batch_size=8, optimizer="sgd",
                                  verbose=0, checkpoint_dir=sys.argv[1], resume=True)
            print("train: no error; iterations", int(model.optimizer.iterations))
        else:
            checkpoint.delete_backup(sys.argv[1])
            print("delete_backup: no error")
    except checkpoint.BackupInUseError as error:
        print(f"{attempt}: refused: {error}")
"""


def test_a_second_process_is_refused_and_the_first_runs_files_survive(two_generations):
    folder = two_generations
    holder = BackupAndRestore(folder)
    assert checkpoint.initial_epoch([holder], new_model(5)) == 3  # this run holds the folder
    # A save of the live run in flight: its temporary file must survive the other process.
    in_flight = folder / f".{checkpoint.WEIGHTS_FILE}.tmp-{os.getpid()}-0000.weights.h5"
    in_flight.write_bytes(b"half-written")
    before = folder_bytes(folder)

    env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    lines = child.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["train", "delete_backup"], child.stdout
    for line in lines:
        assert "refused: The backup folder" in line, line
        assert f"{str(folder)!r} is in use by another training run (process {os.getpid()})" in line
    assert folder_bytes(folder) == before

    # Once the holder ends its run, another process may lock, and the next run clears the
    # temporary files (now stale) while it holds the folder.
    assert not another_process_can_lock(folder)
    holder.on_train_end()  # delete_checkpoint defaults to True: the backup files go
    assert another_process_can_lock(folder)
    assert in_flight.exists()
    later = BackupAndRestore(folder)
    assert later.restore_state(new_model()) == 0
    assert not in_flight.exists()
    later.release()


def test_a_run_in_another_thread_is_refused_while_it_holds_the_folder(tmp_path):
    holding, finish, errors, holders = threading.Event(), threading.Event(), [], []

    def first_run():
        try:
            backup = BackupAndRestore(tmp_path)
            holders.append(backup)  # kept alive: only the thread's end tells its run is over
            model = new_model()
            checkpoint.initial_epoch([backup], model)
            backup.set_model(model)
            backup.on_train_begin()
            holding.set()
            finish.wait(60)
            # The run ends here without on_train_end, as a run that raised.
        except BaseException as error:
            errors.append(error)
            holding.set()

    thread = threading.Thread(target=first_run, name="first-run")
    thread.start()
    try:
        assert holding.wait(60) and not errors
        second = BackupAndRestore(tmp_path)
        with pytest.raises(BackupInUseError, match=r"in this process \(thread first-run\)"):
            checkpoint.initial_epoch([second], new_model())
        with pytest.raises(BackupInUseError, match="another thread"):
            checkpoint.write_backup(new_model(), tmp_path, {"epoch": 1})
        assert not another_process_can_lock(tmp_path)
    finally:
        finish.set()
        thread.join(60)
    assert not errors
    assert os.listdir(tmp_path) == [checkpoint.LOCK_FILE]  # nothing was written
    # That thread is over: its run cannot be running, and a new run takes the folder over.
    assert not another_process_can_lock(tmp_path)
    assert checkpoint.initial_epoch([second], new_model()) == 0
    with pytest.raises(BackupInUseError, match="taken over"):
        holders[0].on_epoch_end(0)
    second.release()
    assert another_process_can_lock(tmp_path)


def test_a_run_of_the_same_thread_takes_over_and_the_old_callback_writes_no_more(tmp_path):
    first = BackupAndRestore(tmp_path)
    model = new_model()
    assert checkpoint.initial_epoch([first], model) == 0
    first.set_model(model)
    first.on_train_begin()  # ... and the run ends with an exception: no on_train_end
    assert first.lock.held()
    second = BackupAndRestore(tmp_path)
    assert checkpoint.initial_epoch([second], new_model()) == 0  # this thread's run is over
    assert second.lock.held() and not first.lock.held()
    with pytest.raises(BackupInUseError, match="taken over"):
        first.on_epoch_end(0)
    assert os.listdir(tmp_path) == [checkpoint.LOCK_FILE]  # the old run wrote nothing
    second.release()
    assert another_process_can_lock(tmp_path)
    first.release()  # releases nothing that is not its own
    assert another_process_can_lock(tmp_path)


@pytest.mark.parametrize("kind", ["symbolic link", "dangling symbolic link", "folder"])
def test_a_lock_file_that_is_not_a_regular_file_is_refused_and_left_alone(tmp_path, kind):
    folder, users_file = tmp_path / "backup", tmp_path / "notes.txt"
    folder.mkdir()
    users_file.write_bytes(b"the user's own notes\n")
    lock_file = folder / checkpoint.LOCK_FILE
    if kind == "folder":
        lock_file.mkdir()
    else:
        os.symlink(users_file if kind == "symbolic link" else tmp_path / "missing", lock_file)
    what = "not a regular file" if kind == "folder" else "a symbolic link"
    model = new_model()
    for attempt in (
        lambda: checkpoint.initial_epoch([BackupAndRestore(folder)], model),
        lambda: checkpoint.write_backup(model, folder, {"epoch": 1}),
        lambda: train(folder, 1),
    ):
        with pytest.raises(ValueError, match=f"lock file .* is {what}"):
            attempt()
    assert users_file.read_bytes() == b"the user's own notes\n"
    assert not (tmp_path / "missing").exists()
    assert sorted(os.listdir(folder)) == [checkpoint.LOCK_FILE]  # no backup was written
    assert os.path.islink(lock_file) == (kind != "folder")


class Interrupted(Exception):
    """Stands for a crash of the training run."""


class RaiseAtEpoch(keras.callbacks.Callback):
    """Raises `Interrupted` at the start of an epoch: a run that ends with an exception."""

    def __init__(self, epoch):
        super().__init__()
        self.stop = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.stop:
            raise Interrupted(f"interrupted at epoch {epoch}")


def test_after_a_run_that_raised_a_new_run_locks_and_resumes_exactly(tmp_path, epoch_4):
    backup = BackupAndRestore(tmp_path, delete_checkpoint=False)
    callbacks = [backup, RaiseAtEpoch(2)]
    model = new_model()
    with pytest.raises(Interrupted):
        model.fit(X, Y, epochs=4, batch_size=16, shuffle=False, verbose=0, callbacks=callbacks)
    # Keras called no on_train_end; fit() frees the folder in its `finally`.
    assert another_process_can_lock(tmp_path)
    # A new run, with a new callback, locks the folder and resumes.
    resumed = new_model(seed=3)
    history = resumed.fit(
        X,
        Y,
        epochs=4,
        batch_size=16,
        shuffle=False,
        verbose=0,
        callbacks=[BackupAndRestore(tmp_path, delete_checkpoint=False)],
    )
    assert history.epoch == [2, 3]
    reference = new_model()
    reference.fit(X, Y, epochs=4, batch_size=16, shuffle=False, verbose=0)
    assert_same_state(resumed, reference)
    assert another_process_can_lock(tmp_path)  # released at train end

    # release_backups, the training loops' `finally`, and garbage collection also release.
    first = BackupAndRestore(tmp_path)
    checkpoint.initial_epoch([first], new_model())
    assert not another_process_can_lock(tmp_path)
    checkpoint.release_backups([first])
    assert another_process_can_lock(tmp_path)
    checkpoint.initial_epoch([first], new_model())
    del first
    gc.collect()
    assert another_process_can_lock(tmp_path)


# ------------------------------------------------------------------- damaged backups
def flip_bit(path, offset, bit=0):
    with open(path, "r+b") as file:
        file.seek(offset)
        byte = file.read(1)[0]
        file.seek(offset)
        file.write(bytes([byte ^ (1 << bit)]))


def dataset_offset(path, name):
    with h5py.File(path) as file:
        offset = file[name].id.get_offset()
    assert offset is not None, name  # contiguous storage
    return offset


def text_offset(path, text):
    content = path.read_bytes()
    assert content.count(text) == 1, text
    return content.find(text)


FLIPS = {
    # The lowest mantissa bit of the slope m: a change of one ulp, invisible to any range check.
    "a weight": lambda path: flip_bit(path, dataset_offset(path, "vars/0")),
    # The optimizer's iteration count (int64, 12 after 3 epochs of 4 steps) becomes 13.
    "the iteration count": lambda path: flip_bit(path, dataset_offset(path, "optimizer/vars/0")),
    # "epoch": 3 becomes "epoch": 2 (0x33 -> 0x32) in the stored metadata.
    "the stored epoch": lambda path: flip_bit(path, text_offset(path, b'"epoch": 3') + 9),
    # keras_mle_checksum becomes keras_mle_chebksum: the file must not pass as a Keras one.
    "the checksum's name": lambda path: flip_bit(path, text_offset(path, b"checksum") + 3, 1),
}


@pytest.mark.parametrize("fault", list(FLIPS))
def test_a_flipped_bit_falls_back_to_the_previous_generation(two_generations, fault, epoch_2):
    latest = two_generations / checkpoint.WEIGHTS_FILE
    FLIPS[fault](latest)
    reason = "a keras_mle backup without its checksum" if "name" in fault else "checksum mismatch"
    message = rf"{str(latest)!r}: {reason}.*previous generation .*\.bkp' \(epoch 2\)"
    with pytest.warns(UserWarning, match=message):
        assert checkpoint.read_backup(two_generations)["epoch"] == 2
    restored = new_model(seed=9)
    with pytest.warns(UserWarning, match=message):
        assert checkpoint.restore_backup(restored, two_generations)["epoch"] == 2
    assert int(restored.optimizer.iterations) == 2 * STEPS_PER_EPOCH
    assert_same_state(restored, epoch_2)


def test_resuming_from_the_previous_generation_is_exact(two_generations, epoch_4):
    latest = two_generations / checkpoint.WEIGHTS_FILE
    FLIPS["a weight"](latest)
    with pytest.warns(UserWarning, match="checksum mismatch"):
        resumed = train(two_generations, 4, seed=7)
    assert_same_state(resumed, epoch_4)
    # The damaged file was replaced by good generations, and each verifies.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert checkpoint.read_backup(two_generations)["epoch"] == 4
    os.remove(latest)
    with pytest.warns(UserWarning, match="missing"):
        assert checkpoint.read_backup(two_generations)["epoch"] == 3


DAMAGE = {
    "truncated": lambda path: os.truncate(path, os.path.getsize(path) // 2),
    "zeroed": lambda path: path.write_bytes(bytes(os.path.getsize(path))),
    "emptied": lambda path: path.write_bytes(b""),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_an_unreadable_latest_falls_back_with_a_warning_naming_it(two_generations, damage, epoch_2):
    latest = two_generations / checkpoint.WEIGHTS_FILE
    DAMAGE[damage](latest)
    reason = "empty file" if damage == "emptied" else "not a readable HDF5 file"
    restored = new_model(seed=9)
    with pytest.warns(UserWarning, match=rf"{str(latest)!r}: {reason}"):
        assert checkpoint.restore_backup(restored, two_generations)["epoch"] == 2
    assert_same_state(restored, epoch_2)


def test_when_no_generation_verifies_nothing_trains_and_nothing_is_lost(two_generations):
    folder = two_generations
    DAMAGE["zeroed"](folder / checkpoint.WEIGHTS_FILE)
    FLIPS["the iteration count"](folder / checkpoint.PREVIOUS_WEIGHTS_FILE)
    before = folder_bytes(folder)
    for attempt in (checkpoint.read_backup, lambda f: train(f, 5)):
        with pytest.raises(ValueError) as raised:
            attempt(folder)
        message = str(raised.value)
        assert f"No backup in {str(folder)!r} can be restored" in message
        assert f"{str(folder / checkpoint.WEIGHTS_FILE)!r}: not a readable HDF5 file" in message
        assert f"{str(folder / checkpoint.PREVIOUS_WEIGHTS_FILE)!r}: checksum mismatch" in message
    assert folder_bytes(folder) == before
    assert another_process_can_lock(folder)  # the refused run released the folder
    # Starting over is allowed, and replaces both generations.
    train(folder, 1, resume=False)
    assert checkpoint.read_backup(folder)["epoch"] == 1
    assert not (folder / checkpoint.PREVIOUS_WEIGHTS_FILE).exists()


def test_a_keras_backup_has_no_checksum_and_is_read_unverified(tmp_path):
    model = new_model()
    keras_backup = keras.callbacks.BackupAndRestore(tmp_path, double_checkpoint=True)
    with pytest.raises(Interrupted):
        model.fit(
            X, Y, epochs=4, batch_size=16, verbose=0, callbacks=[keras_backup, RaiseAtEpoch(3)]
        )
    with h5py.File(tmp_path / checkpoint.WEIGHTS_FILE) as file:
        assert checkpoint.CHECKSUM_ATTR not in file.attrs
    restored = new_model(seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert checkpoint.restore_backup(restored, tmp_path)["epoch"] == 3
    assert_same_state(restored, model)
    # Its previous generation (Keras' .bkp files) is the fall back here too.
    DAMAGE["truncated"](tmp_path / checkpoint.WEIGHTS_FILE)
    with pytest.warns(UserWarning, match=r"latest.weights.h5': not a readable HDF5 file"):
        assert checkpoint.read_backup(tmp_path)["epoch"] == 2


# ------------------------------------------------------------------- non-finite state
@pytest.mark.parametrize("where", ["a weight", "an optimizer slot"])
def test_a_non_finite_state_is_never_written(two_generations, where):
    folder = two_generations
    model = new_model()
    backup = BackupAndRestore(folder, save_every=1)
    assert checkpoint.initial_epoch([backup], model) == 3
    backup.set_model(model)
    backup.on_train_begin()
    variables = model.trainable_variables if where == "a weight" else model.optimizer.variables[2:]
    variables[0].assign(np.full(variables[0].shape, np.nan, "float32"))
    before = folder_bytes(folder)
    with pytest.warns(keras_mle.DivergenceWarning, match="not finite.*last good backup was kept"):
        backup.on_epoch_end(3)
    assert backup.saved_epoch is None
    with pytest.warns(keras_mle.DivergenceWarning, match=f"{str(folder)!r} was not written"):
        assert checkpoint.write_backup(model, folder, {"epoch": 4}) is False
    backup.release()
    assert folder_bytes(folder) == before

    path = folder / "model.weights.h5"
    callback = ModelCheckpoint(path, save_weights_only=True)
    callback.set_model(model)
    with pytest.warns(keras_mle.DivergenceWarning, match="did not write"):
        callback.on_epoch_end(0, {"loss": 1.0})
    assert not path.exists()


# ------------------------------------------------------------------- file modes
@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path):
    return os.stat(path).st_mode & 0o777


def test_new_files_get_the_umask_mode_and_replaced_files_keep_theirs(tmp_path, umask_022):
    model = new_model()
    checkpoint.save_model_atomic(model, tmp_path / "m.keras")
    checkpoint.write_backup(model, tmp_path / "backup", {"epoch": 1})
    checkpoint.write_backup(model, tmp_path / "backup", {"epoch": 2})  # makes the .bkp files
    assert mode(tmp_path / "m.keras") == 0o644  # 0o666 & ~0o022, as open(path, "w") gives
    for name in os.listdir(tmp_path / "backup"):
        assert mode(tmp_path / "backup" / name) == 0o644, name

    os.chmod(tmp_path / "m.keras", 0o640)
    checkpoint.save_model_atomic(model, tmp_path / "m.keras")
    assert mode(tmp_path / "m.keras") == 0o640
    os.chmod(tmp_path / "backup" / checkpoint.WEIGHTS_FILE, 0o640)
    checkpoint.write_backup(model, tmp_path / "backup", {"epoch": 3})
    assert mode(tmp_path / "backup" / checkpoint.WEIGHTS_FILE) == 0o640


def test_model_checkpoint_scans_the_state_once_per_save(tmp_path, monkeypatch):
    scans = []
    scan = checkpoint.model_file.non_finite_variables

    def counting_scan(model):
        scans.append(model)
        return scan(model)

    monkeypatch.setattr(checkpoint.model_file, "non_finite_variables", counting_scan)
    model = new_model()
    callback = ModelCheckpoint(tmp_path / "{epoch}.weights.h5", save_weights_only=True)
    callback.set_model(model)
    callback.on_epoch_end(0, {"loss": 1.0})
    callback.on_epoch_end(1, {"loss": 0.5})
    assert len(scans) == 2  # one scan per file written
    assert (tmp_path / "1.weights.h5").is_file() and (tmp_path / "2.weights.h5").is_file()
    model.trainable_variables[0].assign(np.full(model.trainable_variables[0].shape, np.inf))
    with pytest.warns(keras_mle.DivergenceWarning, match="did not write"):
        callback.on_epoch_end(2, {"loss": 0.1})
    assert len(scans) == 3 and not (tmp_path / "3.weights.h5").exists()


# ------------------------------------------------------------------- what a run remembers
def test_the_run_remembers_the_file_it_wrote_only_while_it_holds_the_folder(tmp_path):
    model = new_model()
    backup = BackupAndRestore(tmp_path, delete_checkpoint=False)
    checkpoint.initial_epoch([backup], model)
    backup.set_model(model)
    backup.on_train_begin()
    backup.on_epoch_end(0)
    identity, metadata = backup.lock.latest_known
    assert metadata["epoch"] == 1
    assert identity[:2] == (
        os.stat(tmp_path / checkpoint.WEIGHTS_FILE).st_dev,
        os.stat(tmp_path / checkpoint.WEIGHTS_FILE).st_ino,
    )
    backup.on_epoch_end(1)
    assert backup.lock.latest_known[1]["epoch"] == 2
    backup.on_train_end()
    assert backup.lock is None  # what it knew went with the lock
    # A new run verifies what it finds: it trusts nothing from the last one.
    FLIPS["the iteration count"](tmp_path / checkpoint.WEIGHTS_FILE)
    later = BackupAndRestore(tmp_path)
    with pytest.warns(UserWarning, match="checksum mismatch"):
        assert later.restore_state(new_model()) == 1
    assert later.lock.latest_known is None  # the latest failed: nothing to remember
    later.release()


# ------------------------------------------------------------------- the atomic writer
def test_write_bytes_and_json_replace_a_file_whole_with_the_umask_mode(tmp_path, umask_022):
    path = tmp_path / "record.json"
    checkpoint.atomic.write_json(path, {"epochs": 3})
    assert json.loads(path.read_text()) == {"epochs": 3}
    assert mode(path) == 0o644  # as open(path, "w") gives, not mkstemp's 0o600
    os.chmod(path, 0o640)
    checkpoint.atomic.write_bytes(path, b"replaced")
    assert path.read_bytes() == b"replaced" and mode(path) == 0o640
    assert os.listdir(tmp_path) == ["record.json"]


def test_atomic_writers_keep_the_old_file_and_leave_no_temporary_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "record.json"
    path.write_bytes(b"old")

    def failing_commit(temporary, target):
        assert open(temporary, "rb").read() == b'{"new": 1}'
        raise OSError(28, "No space left on device (injected)")

    monkeypatch.setattr(checkpoint.atomic, "commit", failing_commit)
    with pytest.raises(OSError, match="injected") as raised:
        checkpoint.atomic.write_json(path, {"new": 1})
    assert raised.value.errno == 28  # unchanged
    monkeypatch.undo()
    with pytest.raises(TypeError):
        checkpoint.atomic.write_json(path, {"not JSON": object()})
    with pytest.raises(FileNotFoundError):
        checkpoint.atomic.write_bytes(tmp_path / "missing" / "x.json", b"{}")

    def failing_write(temporary):
        with open(temporary, "wb") as file:
            file.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        checkpoint.atomic.write_file(path, failing_write)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["record.json"]
