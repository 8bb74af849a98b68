"""Checkpoint files that are never half-written, and the epoch-boundary backup of a training run.

Two kinds of file, both the ones Keras itself uses:

- a model file (`.keras` archive, or `.weights.h5` with weights and optimizer state), written by
  `save_model_atomic`: Keras writes to a temporary file beside the target, which is then moved
  onto it with `os.replace`. A process killed during a save leaves the previous file whole (and a
  stray hidden `*.tmp*` file, removed by the next save);
- a backup directory in the layout of `keras.callbacks.BackupAndRestore`: `latest.weights.h5`
  (weights, optimizer iterations and slot variables) and `training_metadata.json`
  (`{"epoch": completed_epochs, "batch": 0, ...}`). `write_backup` stores the metadata inside the
  weights file as well, so that the file is the single commit point: weights, epoch and NumPy
  random state always come from the same moment, even if the process died between the two
  writes. The JSON file is kept for Keras' own `BackupAndRestore`, which reads only it.

Two callbacks write them, through public Keras API only:

- `BackupAndRestore` writes a backup at epoch boundaries. Resuming is the training loop's job:
  a keras_mle model's `fit()` and `keras_mle.loops.train` call `initial_epoch(callbacks, model)`
  before training, which loads the backup into the model and returns the epoch to start from;
- `ModelCheckpoint` writes `.keras` / `.weights.h5` files at the end of epochs, as Keras' callback
  of that name does.

See `docs/checkpointing.md` for the resume guarantee.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
import warnings

import keras
import numpy as np

from keras_mle import data as data_lib

__all__ = [
    "WEIGHTS_FILE",
    "METADATA_FILE",
    "save_model_atomic",
    "write_backup",
    "read_backup",
    "restore_backup",
    "delete_backup",
    "numpy_random_state",
    "set_numpy_random_state",
    "BackupAndRestore",
    "initial_epoch",
    "ModelCheckpoint",
]

#: File names of `keras.callbacks.BackupAndRestore`, shared with it.
WEIGHTS_FILE = "latest.weights.h5"
METADATA_FILE = "training_metadata.json"
#: HDF5 root attribute holding the backup's metadata (JSON) inside the weights file.
METADATA_ATTR = "keras_mle_training_metadata"

_TEMP_MARK = ".tmp-"


def save_model_atomic(model, filepath, *, weights_only: bool | None = None, metadata=None) -> str:
    """Saves `model` to `filepath` through a temporary file and `os.replace`.

    Args:
        model: A built Keras model.
        filepath: Target path, ending in `.keras` or `.weights.h5`.
        weights_only: Save weights (and optimizer state) only. Defaults to `None`: decided by the
            file name (`.weights.h5`).
        metadata: JSON-serializable dict stored as an HDF5 attribute of a `.weights.h5` file.
            Defaults to `None`.

    Returns:
        `filepath`.
    """
    filepath = os.fspath(filepath)
    if weights_only is None:
        weights_only = filepath.endswith(".weights.h5")
    suffix = ".weights.h5" if weights_only else ".keras"
    if not filepath.endswith(suffix):
        raise ValueError(f"filepath must end in {suffix!r}, got {filepath!r}.")
    if metadata is not None and not weights_only:
        raise ValueError("metadata can only be stored in a .weights.h5 file.")
    directory = os.path.dirname(os.path.abspath(filepath))
    os.makedirs(directory, exist_ok=True)
    name = os.path.basename(filepath)
    _remove_stale_temporaries(directory, name, suffix)
    # Keras picks the format from the name, so the temporary file keeps the suffix.
    handle, temporary = tempfile.mkstemp(
        prefix=f".{name}{_TEMP_MARK}", suffix=suffix, dir=directory
    )
    os.close(handle)
    try:
        if weights_only:
            model.save_weights(temporary, overwrite=True)
        else:
            model.save(temporary, overwrite=True)
        if metadata is not None:
            import h5py

            with h5py.File(temporary, "a") as file:
                file.attrs[METADATA_ATTR] = json.dumps(metadata)
        _fsync(temporary)
        _commit(temporary, filepath)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise
    _fsync_directory(directory)
    return filepath


def write_backup(model, directory, metadata: dict) -> None:
    """Writes `latest.weights.h5` (with `metadata` inside) and `training_metadata.json`.

    Args:
        model: A built model; its optimizer state is saved with the weights.
        directory: The backup directory (created if missing).
        metadata: At least `{"epoch": completed_epochs}`; JSON-serializable.
    """
    save_model_atomic(model, os.path.join(directory, WEIGHTS_FILE), metadata=metadata)
    _write_text_atomic(os.path.join(directory, METADATA_FILE), json.dumps(metadata))


def read_backup(directory) -> dict | None:
    """The metadata of the backup in `directory`, or `None` when there is none.

    The copy inside the weights file wins over `training_metadata.json`; a backup written by
    Keras' own `BackupAndRestore` has only the JSON file.
    """
    weights = os.path.join(directory, WEIGHTS_FILE)
    if not os.path.exists(weights):
        return None
    import h5py

    with h5py.File(weights, "r") as file:
        stored = file.attrs.get(METADATA_ATTR)
    if stored is not None:
        return json.loads(stored)
    json_path = os.path.join(directory, METADATA_FILE)
    if os.path.exists(json_path):
        with open(json_path) as file:
            return json.load(file)
    return {"epoch": 0, "batch": 0}


def restore_backup(model, directory) -> dict | None:
    """Loads the backup in `directory` into `model` (weights and optimizer state).

    The model must be built; its optimizer, if any, is built first so that its state is loaded
    rather than dropped. The NumPy global random state saved with the backup, if any, is restored,
    so that `shuffle=True` draws the same orders as an uninterrupted run.

    Returns:
        The backup's metadata, or `None` (and nothing changed) when there is no backup.
    """
    metadata = read_backup(directory)
    if metadata is None:
        return None
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)
    model.load_weights(os.path.join(directory, WEIGHTS_FILE))
    if metadata.get("numpy_random_state") is not None:
        set_numpy_random_state(metadata["numpy_random_state"])
    return metadata


def delete_backup(directory) -> None:
    """Removes the backup files (not the directory or anything else in it)."""
    for name in (WEIGHTS_FILE, METADATA_FILE):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(directory, name))


def numpy_random_state() -> list:
    """NumPy's global random state (`np.random.get_state()`) as JSON-serializable values."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return [name, keys.tolist(), int(position), int(has_gauss), float(cached_gaussian)]


def set_numpy_random_state(state) -> None:
    """Restores a state returned by `numpy_random_state`."""
    name, keys, position, has_gauss, cached_gaussian = state
    np.random.set_state(
        (name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian)
    )


# -------------------------------------------------------------------- BackupAndRestore
class BackupAndRestore(keras.callbacks.Callback):
    """Backs up the training state at epoch boundaries, atomically, so that a resume is exact.

    Writes the files of `keras.callbacks.BackupAndRestore` (`latest.weights.h5`,
    `training_metadata.json` in `backup_dir`), with three differences from Keras' callback:

    - backups are taken at epoch boundaries only (every `save_every` epochs, and at the end of
      training when the backup is kept), because a restart from a mid-epoch backup replays that
      epoch from its first batch and is not exact;
    - each backup is written atomically (`write_backup`): a process killed while saving leaves
      the previous backup whole, and the epoch number stored inside the weights file always
      matches the weights;
    - the NumPy global random state is saved and restored with it, so the custom loops'
      `shuffle=True` draws the same orders after a resume.

    Resuming is done by the training loop: a keras_mle model's `fit()` and
    `keras_mle.loops.train` call `initial_epoch(callbacks, model)` before training, which calls
    `restore_state` (weights, optimizer state, NumPy random state) and starts training at the
    restored epoch. A callback cannot make another model's `fit()` skip epochs, so when a
    backup exists (and `restore=True`) but nothing restored it for this run, as with a plain
    `keras.Model`, `on_train_begin` raises `ValueError`: use `keras.callbacks.BackupAndRestore`,
    which reads the same files, for such models. Without a backup to resume from, any model can
    use this callback to write backups.

    Attributes:
        backup_dir: The backup folder.
        restored_epoch: The completed epochs loaded by the last `restore_state` call (`0` when
            there was nothing to restore), or `None` before any call.
        current_epoch: Completed epochs of the current run, counted from the `epoch` argument of
            `on_epoch_end` (so it includes the restored ones), or `None` before the first epoch
            ends.
        saved_epoch: The completed epochs in the last backup this run wrote, or `None`.

    Args:
        backup_dir: Folder of the backup (dedicated to one training run).
        save_every: Epochs between two backups. Defaults to `1`.
        restore: Resume from an existing backup at the start of training. Defaults to `True`
            (as Keras does); with `False` training starts from the model's current state and
            overwrites the backup.
        delete_checkpoint: Delete the backup files when training ends. Defaults to `True`
            (as Keras does); set `False` to keep the final state for a later resumption.

    Example:

    ```python
    backup = keras_mle.checkpoint.BackupAndRestore("run1", delete_checkpoint=False)
    model.fit(x, y, epochs=200, callbacks=[backup])  # re-run the same line to resume
    ```
    """

    def __init__(
        self,
        backup_dir,
        *,
        save_every: int = 1,
        restore: bool = True,
        delete_checkpoint: bool = True,
    ):
        super().__init__()
        data_lib.check_positive_int("save_every", save_every)
        self.backup_dir = os.fspath(backup_dir)
        self.save_every = save_every
        self.restore = restore
        self.delete_checkpoint = delete_checkpoint
        self.restored_epoch = None
        self.current_epoch = None
        self.saved_epoch = None
        # The model `restore_state` loaded the backup into, until `on_train_begin` consumes it:
        # a later call then belongs to a new run (also after a run ended by an exception, which
        # gets no `on_train_end`).
        self._pending_restore_model = None

    def restore_state(self, model) -> int:
        """Loads the backup, if any, into `model`; returns the number of epochs it completed.

        Called by the training loop before `on_train_begin` (see `initial_epoch`). Loads the
        weights, the optimizer state (building the optimizer first) and the NumPy global random
        state. A second call for the same model before training starts returns the same epoch
        and loads nothing.

        Args:
            model: The built (and compiled) model about to be trained.

        Returns:
            The completed epochs stored in the backup: the epoch to start training from. `0` when
            there is no backup or `restore` is `False`.
        """
        if self._pending_restore_model is model:
            return self.restored_epoch
        epoch = 0
        if self.restore and read_backup(self.backup_dir) is not None:
            if not model.built:
                raise ValueError(
                    f"BackupAndRestore needs a built model to restore the backup in "
                    f"{self.backup_dir!r}: call the model on a batch (model(x[:2])) first."
                )
            metadata = restore_backup(model, self.backup_dir)
            epoch = int(metadata.get("epoch", 0))
            batch = int(metadata.get("batch", 0) or 0)
            if batch:
                warnings.warn(
                    f"The backup in {self.backup_dir!r} was taken in the middle of epoch "
                    f"{epoch + 1} (after batch {batch}), e.g. by keras.callbacks.BackupAndRestore"
                    "(save_freq=<batches>): training restarts that epoch from its first batch, so "
                    "the resumed run is not exactly an uninterrupted one.",
                    stacklevel=2,
                )
        self.restored_epoch = epoch
        self._pending_restore_model = model
        return epoch

    def on_train_begin(self, logs=None):
        restored_into, self._pending_restore_model = self._pending_restore_model, None
        self.current_epoch = None
        self.saved_epoch = None
        if restored_into is None:
            if self.restore and read_backup(self.backup_dir) is not None:
                raise ValueError(
                    f"A backup exists in {self.backup_dir!r}, but this training loop did not "
                    "restore it: keras_mle.checkpoint.BackupAndRestore resumes through a "
                    "keras_mle model's fit() or keras_mle.loops.train (which call "
                    "keras_mle.checkpoint.initial_epoch(callbacks, model) before training). "
                    "For other models use keras.callbacks.BackupAndRestore, which reads the same "
                    "files; or pass restore=False to start over and overwrite the backup."
                )
        elif restored_into is not self.model:
            raise ValueError(
                "BackupAndRestore.restore_state loaded the backup into another model than the "
                "one being trained."
            )

    def on_epoch_end(self, epoch, logs=None):
        self.current_epoch = epoch + 1
        if self.current_epoch % self.save_every == 0:
            self._write()

    def on_train_end(self, logs=None):
        if self.delete_checkpoint:
            delete_backup(self.backup_dir)
        elif self.current_epoch is not None and self.saved_epoch != self.current_epoch:
            self._write()
        # The same callback may serve a later fit.
        self._pending_restore_model = None
        self.current_epoch = None
        self.saved_epoch = None

    def _write(self):
        metadata = {
            "epoch": self.current_epoch,
            "batch": 0,
            "numpy_random_state": numpy_random_state(),
        }
        write_backup(self.model, self.backup_dir, metadata)
        self.saved_epoch = self.current_epoch


def initial_epoch(callbacks, model, requested: int = 0) -> int:
    """Restores the backup of the `BackupAndRestore` in `callbacks`; the epoch to start from.

    For training loops (a keras_mle model's `fit()`, `keras_mle.loops.train`): call it before
    `on_train_begin` and start at the epoch it returns. Other callbacks are ignored.

    Args:
        callbacks: The run's callbacks: a list or tuple, a `keras.callbacks.CallbackList`, or
            `None`.
        model: The built model about to be trained.
        requested: The epoch asked for by the caller (`fit(initial_epoch=...)`). Defaults to
            `0`.

    Returns:
        `max(requested, completed epochs of the restored backup)`.
    """
    if isinstance(requested, bool) or not isinstance(requested, (int, np.integer)):
        raise ValueError(f"requested must be an integer >= 0, got {requested!r}.")
    if requested < 0:
        raise ValueError(f"requested must be an integer >= 0, got {requested!r}.")
    if isinstance(callbacks, keras.callbacks.CallbackList):
        callbacks = callbacks.callbacks
    backups = [c for c in (callbacks or ()) if isinstance(c, BackupAndRestore)]
    if len(backups) > 1:
        folders = ", ".join(repr(b.backup_dir) for b in backups)
        raise ValueError(
            f"Give at most one keras_mle.checkpoint.BackupAndRestore callback, got "
            f"{len(backups)} (backup_dir {folders}): a run resumes from one backup."
        )
    epoch = int(requested)
    for backup in backups:
        epoch = max(epoch, backup.restore_state(model))
    return epoch


# -------------------------------------------------------------------- ModelCheckpoint
class ModelCheckpoint(keras.callbacks.Callback):
    """Saves the model (or its weights) at the end of epochs, each file written atomically.

    The arguments and file names of `keras.callbacks.ModelCheckpoint`, but each file is written
    to a temporary file and moved into place (`save_model_atomic`), so a process killed during a
    save leaves the previous checkpoint loadable. Checkpoints are taken at epoch ends only
    (`save_freq="epoch"`): a mid-epoch checkpoint cannot be resumed exactly.

    `filepath` may hold placeholders filled with the epoch (counted from 1) and the epoch's logs,
    `filepath.format(epoch=epoch + 1, **logs)`, e.g. `"run/{epoch:02d}-{val_loss:.3f}.keras"`.

    With `save_best_only`, a file is written only when the monitored value improves on `best`
    (`initial_value_threshold` at first, then the best value so far, kept across `fit()` calls);
    an epoch whose logs lack the monitored value (or hold a non-scalar one) is skipped with a
    warning.

    Args:
        filepath: Path of the file, ending in `.keras`, or `.weights.h5` with
            `save_weights_only`; may hold `{epoch}` and log-key placeholders.
        monitor: Name of the logged value watched by `save_best_only`. Defaults to
            `"val_loss"`.
        verbose: 1 prints one line per epoch when it saves (or, with `save_best_only`, does not
            improve). Defaults to `0`.
        save_best_only: Save only when `monitor` improves. Defaults to `False`.
        save_weights_only: Save the weights and optimizer state (`model.save_weights`) instead of
            the whole model (`model.save`). Defaults to `False`.
        mode: `"min"`, `"max"` or `"auto"`: whether a lower or a higher `monitor` is better;
            `"auto"` is `"max"` for accuracies (`monitor` containing `"acc"` or starting with
            `"fmeasure"`) and `"min"` otherwise. Defaults to `"auto"`.
        save_freq: Only `"epoch"` is supported. Defaults to `"epoch"`.
        initial_value_threshold: The value `monitor` must improve on for the first save with
            `save_best_only`, or `None` for no threshold. Defaults to `None`.
    """

    def __init__(
        self,
        filepath,
        monitor: str = "val_loss",
        verbose: int = 0,
        save_best_only: bool = False,
        save_weights_only: bool = False,
        mode: str = "auto",
        save_freq="epoch",
        initial_value_threshold: float | None = None,
    ):
        super().__init__()
        filepath = os.fspath(filepath)
        if not isinstance(filepath, str):
            raise ValueError(f"filepath must be a text path, got {filepath!r}.")
        suffix = ".weights.h5" if save_weights_only else ".keras"
        if not filepath.endswith(suffix):
            what = "save_weights_only=True" if save_weights_only else "a whole model"
            raise ValueError(
                f"ModelCheckpoint's filepath must end in {suffix!r} for {what}; got "
                f"filepath={filepath!r}."
            )
        if os.path.isdir(filepath):
            raise ValueError(
                f"ModelCheckpoint's filepath must be a file path, got the folder {filepath!r}."
            )
        if isinstance(save_freq, bool) or save_freq != "epoch":
            raise ValueError(
                f"ModelCheckpoint only supports save_freq='epoch', got save_freq={save_freq!r}: "
                "a checkpoint taken in the middle of an epoch cannot be resumed exactly (the "
                "epoch restarts from its first batch)."
            )
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}.")
        if mode == "auto":
            mode = "max" if "acc" in monitor or monitor.startswith("fmeasure") else "min"
        self.filepath = filepath
        self.monitor = monitor
        self.verbose = verbose
        self.save_best_only = save_best_only
        self.save_weights_only = save_weights_only
        self.mode = mode
        self.save_freq = save_freq
        self.monitor_op = np.greater if mode == "max" else np.less
        self.best = None if initial_value_threshold is None else float(initial_value_threshold)

    def on_epoch_end(self, epoch, logs=None):
        logs = {} if logs is None else {k: _python_value(v) for k, v in logs.items()}
        filepath = self._format_filepath(epoch, logs)
        if self.save_best_only:
            current = logs.get(self.monitor)
            if current is None or not isinstance(current, (int, float)):
                found = "is missing" if current is None else f"is not a number ({current!r})"
                warnings.warn(
                    f"ModelCheckpoint(save_best_only=True) skips epoch {epoch + 1}: "
                    f"{self.monitor!r} {found} in the logs (keys: {sorted(logs)}).",
                    stacklevel=2,
                )
                return
            best = "None" if self.best is None else f"{self.best:.5f}"
            if self.best is not None and not self.monitor_op(current, self.best):
                if self.verbose > 0:
                    print(
                        f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {best}",
                        flush=True,
                    )
                return
            self._save(filepath)
            self.best = float(current)
            message = (
                f"{self.monitor} improved from {best} to {current:.5f}, saving model to {filepath}"
            )
        else:
            self._save(filepath)
            message = f"saving model to {filepath}"
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: {message}", flush=True)

    def _format_filepath(self, epoch, logs):
        try:
            return self.filepath.format(**{**logs, "epoch": epoch + 1})
        except (KeyError, IndexError) as error:
            raise KeyError(
                f"ModelCheckpoint could not fill filepath={self.filepath!r} at epoch "
                f"{epoch + 1}: no {error} in the logs (keys: {sorted(logs)})."
            ) from None

    def _save(self, filepath):
        if os.path.isdir(filepath):
            raise IsADirectoryError(
                f"ModelCheckpoint needs a file path, got the existing folder {filepath!r}."
            )
        save_model_atomic(self.model, filepath, weights_only=self.save_weights_only)


def _python_value(value):
    """A log value as a Python scalar where it is one (tensors and NumPy scalars included)."""
    if isinstance(value, (str, bytes)):
        return value
    try:
        array = np.asarray(value)
    except Exception:
        return value
    if array.ndim == 0 and array.dtype.kind in "biuf":
        return array.item()
    return value


def _commit(temporary, filepath):
    # The one step that makes a new checkpoint visible; atomic on POSIX and Windows.
    os.replace(temporary, filepath)


def _write_text_atomic(path, text):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}{_TEMP_MARK}", dir=directory
    )
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        _commit(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


def _remove_stale_temporaries(directory, name, suffix):
    for path in glob.glob(
        os.path.join(glob.escape(directory), f".{glob.escape(name)}{_TEMP_MARK}*{suffix}")
    ):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def _fsync(path):
    with open(path, "rb") as file:
        os.fsync(file.fileno())


def _fsync_directory(directory):
    # Makes the rename itself durable; not possible (nor needed) on every platform.
    with contextlib.suppress(OSError, AttributeError):
        handle = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)
