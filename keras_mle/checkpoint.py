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

`keras_mle.callbacks.BackupAndRestore` and `keras_mle.loops.train(checkpoint_dir=...)` write and
read these backups; see `docs/checkpointing.md` for the resume guarantee.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile

import numpy as np

__all__ = [
    "WEIGHTS_FILE",
    "METADATA_FILE",
    "save_model_atomic",
    "write_backup",
    "read_backup",
    "restore_backup",
    "delete_backup",
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
