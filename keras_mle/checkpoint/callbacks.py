"""The callbacks that keep a training run: `BackupAndRestore` and `ModelCheckpoint`.

Both use public Keras API only, and write through the package's atomic writers:

- `BackupAndRestore` writes a backup (`backup.write_backup`) at epoch boundaries. Resuming is
  the training loop's job: a keras_mle model's `fit()` and `keras_mle.loops.train` call
  `initial_epoch(callbacks, model)` before training, which locks the folder, loads the backup
  into the model and returns the epoch to start from;
- `ModelCheckpoint` writes `.keras` / `.weights.h5` files at the end of epochs, as Keras'
  callback of that name does.
"""

from __future__ import annotations

import os
import warnings

import keras
import numpy as np

from keras_mle import data as data_lib
from keras_mle.checkpoint import backup as backup_lib
from keras_mle.checkpoint import model_file
from keras_mle.checkpoint.lock import FolderLock
from keras_mle.checkpoint.model_file import check_folder, check_path
from keras_mle.errors import DivergenceWarning

__all__ = ["BackupAndRestore", "initial_epoch", "release_backups", "ModelCheckpoint"]


class BackupAndRestore(keras.callbacks.Callback):
    """Backs up the training state at epoch boundaries, atomically, so that a resume is exact.

    Writes the files of `keras.callbacks.BackupAndRestore(double_checkpoint=True)`
    (`latest.weights.h5`, `training_metadata.json` and their `.bkp` previous generation in
    `backup_dir`), with these differences from Keras' callback:

    - backups are taken at epoch boundaries only (every `save_every` epochs, and at the end of
      training when the backup is kept), because a restart from a mid-epoch backup replays that
      epoch from its first batch and is not exact;
    - each backup is written atomically (`write_backup`) with its metadata and a checksum inside
      the weights file: a process killed while saving leaves the previous backup whole, and a
      damaged file is detected on restore, which then falls back to the previous generation
      with a warning (or raises `ValueError` when none verifies);
    - a state holding a NaN or an Inf is never written (`keras_mle.DivergenceWarning`);
    - the run holds an exclusive lock on `backup_dir` from the restore (or `on_train_begin`) to
      `on_train_end`: another process, or another run in this process, gets
      `BackupInUseError` before it trains;
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

    A run that ends with an exception gets no `on_train_end` from Keras; the lock it holds is
    released by `release()` (which `release_backups` calls), when the callback is
    garbage-collected, when the process ends, or taken over by the next run started in the same
    thread or after its thread ended (a thread runs one training at a time; see
    `keras_mle.checkpoint.lock`). Only a live run in another thread or process keeps a new run
    out.

    Attributes:
        backup_dir: The backup folder.
        restored_epoch: The completed epochs loaded by the last `restore_state` call (`0` when
            there was nothing to restore), or `None` before any call.
        current_epoch: Completed epochs of the current run, counted from the `epoch` argument of
            `on_epoch_end` (so it includes the restored ones), or `None` before the first epoch
            ends.
        saved_epoch: The completed epochs in the last backup this run wrote, or `None`.
        lock: The `keras_mle.checkpoint.FolderLock` this callback holds on `backup_dir` from
            the restore (or `on_train_begin`) to `on_train_end`, or `None`.

    Args:
        backup_dir: Folder of the backup (dedicated to one training run).
        save_every: Epochs between two backups. Defaults to `1`.
        restore: Resume from an existing backup at the start of training. Defaults to `True`
            (as Keras does); with `False` training starts from the model's current state and its
            first backup replaces both generations of the old one.
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
        self.backup_dir = check_folder("backup_dir", backup_dir)
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
        # Whether the run's next backup starts the folder over (nothing was restored or written).
        self._fresh = True
        self.lock = None

    def restore_state(self, model) -> int:
        """Locks the folder and loads the backup, if any, into `model`; returns its epoch count.

        Called by the training loop before `on_train_begin` (see `initial_epoch`). Takes the
        folder's lock (held until `on_train_end`), removes temporary files left by a killed
        save, then loads the weights, the optimizer state (building the optimizer first) and the
        NumPy global random state of the newest backup that verifies. A second call for the same
        model before training starts returns the same epoch and loads nothing.

        Args:
            model: The built (and compiled) model about to be trained.

        Returns:
            The completed epochs stored in the backup: the epoch to start training from. `0` when
            there is no backup or `restore` is `False`.

        Raises:
            BackupInUseError: Another run holds the folder.
            ValueError: The model is not built, or backup files exist and none verifies.
        """
        if self._pending_restore_model is model:
            return self.restored_epoch
        self._acquire()
        try:
            epoch = 0
            self._fresh = True
            if self.restore and backup_lib.backup_exists(self.backup_dir):
                if not model.built:
                    raise ValueError(
                        f"BackupAndRestore needs a built model to restore the backup in "
                        f"{self.backup_dir!r}: call the model on a batch (model(x[:2])) first."
                    )
                metadata = backup_lib.restore_backup(model, self.backup_dir, lock=self.lock)
                self._fresh = False
                epoch = int(metadata.get("epoch", 0))
                batch = int(metadata.get("batch", 0) or 0)
                if batch:
                    warnings.warn(
                        f"The backup in {self.backup_dir!r} was taken in the middle of epoch "
                        f"{epoch + 1} (after batch {batch}), e.g. by keras.callbacks."
                        "BackupAndRestore(save_freq=<batches>): training restarts that epoch from "
                        "its first batch, so the resumed run is not exactly an uninterrupted one.",
                        stacklevel=2,
                    )
        except BaseException:
            self.release()
            raise
        self.restored_epoch = epoch
        self._pending_restore_model = model
        return epoch

    def release(self) -> None:
        """Releases the folder's lock if this callback holds it (`on_train_end` does this)."""
        lock, self.lock = self.lock, None
        if lock is not None:
            lock.close()  # a lock taken over by a later run is left to that run

    def on_train_begin(self, logs=None):
        restored_into, self._pending_restore_model = self._pending_restore_model, None
        self.current_epoch = None
        self.saved_epoch = None
        if restored_into is None:
            self._acquire()
            self._fresh = True
            if self.restore and backup_lib.backup_exists(self.backup_dir):
                self.release()
                raise ValueError(
                    f"A backup exists in {self.backup_dir!r}, but this training loop did not "
                    "restore it: keras_mle.checkpoint.BackupAndRestore resumes through a "
                    "keras_mle model's fit() or keras_mle.loops.train (which call "
                    "keras_mle.checkpoint.initial_epoch(callbacks, model) before training). "
                    "For other models use keras.callbacks.BackupAndRestore, which reads the same "
                    "files; or pass restore=False to start over and overwrite the backup."
                )
        elif restored_into is not self.model:
            self.release()
            raise ValueError(
                "BackupAndRestore.restore_state loaded the backup into another model than the "
                "one being trained."
            )

    def on_epoch_end(self, epoch, logs=None):
        self.current_epoch = epoch + 1
        if self.current_epoch % self.save_every == 0:
            self._write()

    def on_train_end(self, logs=None):
        try:
            if self.delete_checkpoint:
                self._ensure_lock()
                backup_lib.delete_backup(self.backup_dir, lock=self.lock)
            elif self.current_epoch is not None and self.saved_epoch != self.current_epoch:
                self._write()
        finally:
            # The same callback may serve a later fit.
            self.release()
            self._pending_restore_model = None
            self.current_epoch = None
            self.saved_epoch = None

    def _write(self):
        self._ensure_lock()
        metadata = {
            "epoch": self.current_epoch,
            "batch": 0,
            "numpy_random_state": backup_lib.numpy_random_state(),
            "shuffle_seed": getattr(self.model, "shuffle_seed", None),
        }
        written = backup_lib.write_backup(
            self.model, self.backup_dir, metadata, keep_previous=not self._fresh, lock=self.lock
        )
        if written:
            self._fresh = False
            self.saved_epoch = self.current_epoch

    def _acquire(self):
        """Takes the folder's lock for a new run (see the class docstring for who may hold it)."""
        check_folder("backup_dir", self.backup_dir)  # a file may have taken its place since
        if self.lock is None or not self.lock.held():
            self.release()
            self.lock = FolderLock.acquire(self.backup_dir)
        backup_lib.remove_stale_temporaries(self.backup_dir)

    def _ensure_lock(self):
        """Takes the lock if this callback has none (a lost one is refused by the write)."""
        if self.lock is None:
            self._acquire()


def initial_epoch(callbacks, model, requested: int = 0) -> int:
    """Restores the backup of the `BackupAndRestore` in `callbacks`; the epoch to start from.

    For training loops (a keras_mle model's `fit()`, `keras_mle.loops.train`): call it before
    `on_train_begin` and start at the epoch it returns; the callback then holds its backup
    folder's lock until `on_train_end` (call `release_backups(callbacks)` in a `finally` block
    so that a run ended by an exception releases it too). Other callbacks are ignored.

    Args:
        callbacks: The run's callbacks: a list or tuple, a `keras.callbacks.CallbackList`, or
            `None`.
        model: The built model about to be trained.
        requested: The epoch asked for by the caller (`fit(initial_epoch=...)`). Defaults to
            `0`.

    Returns:
        `max(requested, completed epochs of the restored backup)`.

    Raises:
        BackupInUseError: Another training run holds the backup folder.
        ValueError: Bad arguments, or backup files exist and none verifies.
    """
    if isinstance(requested, bool) or not isinstance(requested, (int, np.integer)):
        raise ValueError(f"requested must be an integer >= 0, got {requested!r}.")
    if requested < 0:
        raise ValueError(f"requested must be an integer >= 0, got {requested!r}.")
    backups = _backups_in(callbacks)
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


def release_backups(callbacks) -> None:
    """Releases the folder lock of each `BackupAndRestore` in `callbacks` (a no-op if released).

    For training loops, in a `finally` block around training: Keras calls no `on_train_end`
    when a run ends with an exception.
    """
    for backup in _backups_in(callbacks):
        backup.release()


def _backups_in(callbacks):
    if isinstance(callbacks, keras.callbacks.CallbackList):
        callbacks = callbacks.callbacks
    return [c for c in (callbacks or ()) if isinstance(c, BackupAndRestore)]


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
    warning. No file is written from weights or optimizer variables holding a NaN or an Inf
    (`keras_mle.DivergenceWarning`): the last good file stays.

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
        filepath = check_path("filepath", filepath)
        if not isinstance(monitor, str) or not monitor:
            raise TypeError(f"monitor must be the name of a logged value, got {monitor!r}.")
        if initial_value_threshold is not None:
            initial_value_threshold = data_lib.check_finite_scalar(
                "initial_value_threshold", initial_value_threshold
            )
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
            if not self._save(filepath, epoch):
                return
            self.best = float(current)
            message = (
                f"{self.monitor} improved from {best} to {current:.5f}, saving model to {filepath}"
            )
        else:
            if not self._save(filepath, epoch):
                return
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

    def _save(self, filepath, epoch):
        """Writes the file unless the state is not finite; returns whether it wrote it."""
        if os.path.isdir(filepath):
            raise IsADirectoryError(
                f"ModelCheckpoint needs a file path, got the existing folder {filepath!r}."
            )
        bad = model_file.save_model_if_finite(
            self.model, filepath, weights_only=self.save_weights_only
        )
        if bad:
            warnings.warn(
                f"ModelCheckpoint did not write {filepath!r} at epoch {epoch + 1}: the model's "
                f"state is not finite (NaN or Inf in {', '.join(bad[:5])}). The last good "
                "checkpoint was kept.",
                DivergenceWarning,
                stacklevel=3,
            )
            return False
        return True


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
