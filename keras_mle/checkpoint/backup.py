"""The backup folder of a training run: two generations, each verified before it is restored.

The layout of `keras.callbacks.BackupAndRestore(double_checkpoint=True)`: `latest.weights.h5`
(weights, optimizer iterations and slot variables), the previous generation
`latest.weights.h5.bkp`, and `training_metadata.json` (`{"epoch": completed_epochs, ...}`, with
its `.bkp`). `write_backup` seals the metadata and a checksum inside the weights file
(`sealed.seal`), the single commit point; the JSON files are kept for Keras' own callback, which
reads only them. Restoring verifies the checksum and falls back to the previous generation when
the latest fails. Every write holds the folder's lock (`lock.folder_locked`); none is made from a
non-finite state.
"""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
import warnings

import numpy as np

from keras_mle.checkpoint import atomic, model_file, sealed
from keras_mle.checkpoint.lock import FolderLock, folder_locked
from keras_mle.errors import DivergenceWarning

__all__ = [
    "WEIGHTS_FILE",
    "METADATA_FILE",
    "PREVIOUS_WEIGHTS_FILE",
    "PREVIOUS_METADATA_FILE",
    "write_backup",
    "read_backup",
    "restore_backup",
    "delete_backup",
    "backup_exists",
    "remove_stale_temporaries",
    "numpy_random_state",
    "set_numpy_random_state",
]

#: File names of `keras.callbacks.BackupAndRestore` (with `double_checkpoint=True`), shared with it.
WEIGHTS_FILE = "latest.weights.h5"
METADATA_FILE = "training_metadata.json"
PREVIOUS_WEIGHTS_FILE = WEIGHTS_FILE + ".bkp"
PREVIOUS_METADATA_FILE = METADATA_FILE + ".bkp"
_GENERATIONS = ((WEIGHTS_FILE, METADATA_FILE), (PREVIOUS_WEIGHTS_FILE, PREVIOUS_METADATA_FILE))


def write_backup(
    model, directory, metadata: dict, *, keep_previous: bool = True, lock: FolderLock | None = None
) -> bool:
    """Writes a new backup generation, keeping the one it replaces as the previous generation.

    The new `latest.weights.h5` holds `metadata` and a checksum of its content;
    `training_metadata.json` gets a copy of `metadata` for Keras' own `BackupAndRestore`. Nothing
    is written when the model's weights or optimizer variables hold a NaN or an Inf: a
    `keras_mle.DivergenceWarning` says so, and the last good backup stays as it is.

    Takes the folder's lock for the write, unless this thread's training run already holds it.

    Args:
        model: A built model; its optimizer state is saved with the weights.
        directory: The backup directory (created if missing).
        metadata: At least `{"epoch": completed_epochs}`; JSON-serializable.
        keep_previous: Move the current `latest.weights.h5` to `latest.weights.h5.bkp` if it
            verifies (if it does not, the existing `.bkp` is kept instead). `False` starts the
            folder over: the new backup replaces the latest and the previous generation is
            removed. Defaults to `True`.
        lock: The `FolderLock` the caller holds on `directory` (a `BackupAndRestore`'s): it is
            checked instead of taken, and remembers the file written, so that the next write
            need not read it back to keep it as the previous generation. Defaults to `None`.

    Returns:
        Whether the backup was written.

    Raises:
        BackupInUseError: Another training run holds the folder, or `lock` lost it.
    """
    directory = os.fspath(directory)
    sealed.check_metadata(metadata, "metadata")
    os.makedirs(directory, exist_ok=True)
    with folder_locked(directory, lock):
        bad = model_file.non_finite_variables(model)
        if bad:
            warnings.warn(
                f"The backup in {directory!r} was not written (epoch {metadata['epoch']}): the "
                f"model's state is not finite (NaN or Inf in {', '.join(bad[:5])}). The last good "
                "backup was kept.",
                DivergenceWarning,
                stacklevel=2,
            )
            return False
        latest = os.path.join(directory, WEIGHTS_FILE)
        previous = None
        if keep_previous and os.path.exists(latest):
            previous = _verified_latest(directory, lock)
        _write_generation(model, directory, metadata, previous, drop_previous=not keep_previous)
        if lock is not None:
            lock.latest_known = (_identity(latest), metadata)
    return True


def _verified_latest(directory, lock):
    """The metadata of the folder's latest file if it verifies (warns and gives `None` if not)."""
    latest = os.path.join(directory, WEIGHTS_FILE)
    if lock is not None and lock.latest_known is not None:
        identity, metadata = lock.latest_known
        if identity == _identity(latest):
            return metadata  # the very file this run wrote or verified
    try:
        return sealed.verify_file(latest, os.path.join(directory, METADATA_FILE))[0]
    except sealed.BadBackupFile as bad:
        warnings.warn(
            f"The backup file {latest!r} fails verification ({bad}): it is replaced, "
            "and the previous generation is kept instead of it.",
            UserWarning,
            stacklevel=3,
        )
    return None


def _write_generation(model, directory, metadata, previous_metadata, drop_previous):
    """Commits a new `latest.weights.h5`; the current one becomes the `.bkp` when
    `previous_metadata` (its metadata) is given. The folder's lock must be held."""
    latest = os.path.join(directory, WEIGHTS_FILE)

    def keep_previous():
        if previous_metadata is not None and os.path.exists(latest):
            atomic.replace_with_link(latest, os.path.join(directory, PREVIOUS_WEIGHTS_FILE))
            atomic.write_json(os.path.join(directory, PREVIOUS_METADATA_FILE), previous_metadata)

    model_file.write_model_file(
        model, latest, weights_only=True, metadata=metadata, before_commit=keep_previous
    )
    if drop_previous:
        for name in (PREVIOUS_WEIGHTS_FILE, PREVIOUS_METADATA_FILE):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(directory, name))
    atomic.write_json(os.path.join(directory, METADATA_FILE), metadata)


def read_backup(directory) -> dict | None:
    """The metadata of the backup `restore_backup` would load, or `None` when there is none.

    The latest generation is verified first (its checksum, or for a backup written by Keras' own
    `BackupAndRestore`, which has none, that every dataset can be read); if it fails, the
    previous generation is used with a `UserWarning` naming the bad file and the reason.

    Raises:
        ValueError: Backup files exist but none verifies (each file and reason named).
    """
    found = _find_backup(os.fspath(directory))
    return None if found is None else found[0]


def restore_backup(model, directory, *, lock: FolderLock | None = None) -> dict | None:
    """Loads the backup in `directory` into `model` (weights and optimizer state).

    The backup is verified as in `read_backup` (falling back to the previous generation with a
    warning), and the very bytes verified are loaded, even if another process replaces the files
    meanwhile. The model must be built; its optimizer, if any, is built first so that its state
    is loaded rather than dropped. The NumPy global random state saved with the backup, if any,
    is restored, so that `shuffle=True` draws the same orders as an uninterrupted run.

    Args:
        model: The built model to load into.
        directory: The backup folder.
        lock: The caller's `FolderLock` on `directory`, which then remembers the latest file if
            it verifies (see `write_backup`). Defaults to `None`.

    Returns:
        The backup's metadata, or `None` (and nothing changed) when there is no backup.

    Raises:
        ValueError: Backup files exist but none verifies, or the verified file does not fit the
            model.
    """
    directory = os.fspath(directory)
    with tempfile.TemporaryDirectory(prefix="keras_mle-restore-") as scratch:
        copy = os.path.join(scratch, WEIGHTS_FILE)
        found = _find_backup(directory, copy_to=copy, lock=lock)
        if found is None:
            return None
        metadata, path = found
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            optimizer.build(model.trainable_variables)
        try:
            model.load_weights(copy)
        except Exception as error:
            raise ValueError(
                f"The backup {path!r} could not be loaded into the model {model.name!r} (a "
                f"different model or optimizer?): {error}"
            ) from error
    if metadata.get("numpy_random_state") is not None:
        set_numpy_random_state(metadata["numpy_random_state"])
    if metadata.get("shuffle_seed") is not None:
        model.shuffle_seed = int(metadata["shuffle_seed"])  # the shuffled fit it continues
    return metadata


def delete_backup(directory, *, lock: FolderLock | None = None) -> None:
    """Removes the backup files, both generations (not the folder, its lock file or anything
    else in it). Takes the folder's lock, unless this thread's training run holds it (or the
    caller passes its own `lock`).

    Raises:
        BackupInUseError: Another training run holds the folder.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        return
    with folder_locked(directory, lock):
        # The previous generation first: an interrupted deletion never leaves an old backup alone.
        for name in (PREVIOUS_WEIGHTS_FILE, PREVIOUS_METADATA_FILE, WEIGHTS_FILE, METADATA_FILE):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(directory, name))
        if lock is not None:
            lock.latest_known = None


def backup_exists(directory) -> bool:
    """Whether `directory` holds a backup weights file of either generation (verified or not)."""
    return any(os.path.exists(os.path.join(directory, name)) for name, _ in _GENERATIONS)


def remove_stale_temporaries(directory) -> None:
    """Removes the temporary files of the backup's own files; call it holding the folder's lock
    (then no writer of this folder is alive, and each temporary file is a killed save's)."""
    for name in (WEIGHTS_FILE, METADATA_FILE, PREVIOUS_WEIGHTS_FILE, PREVIOUS_METADATA_FILE):
        for path in glob.glob(atomic.temporary_pattern(directory, name)):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)


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


def _find_backup(directory, copy_to=None, lock=None):
    """`(metadata, path)` of the first generation that verifies, or `None` with no backup files.

    Warns (`UserWarning`) when the latest generation is skipped; raises `ValueError` naming every
    file and reason when backup files exist but none verifies.
    """
    if not backup_exists(directory):
        return None
    failures = []
    for weights, metadata_file in _GENERATIONS:
        path = os.path.join(directory, weights)
        try:
            metadata, identity = sealed.verify_file(
                path, os.path.join(directory, metadata_file), copy_to
            )
        except sealed.BadBackupFile as bad:
            failures.append(f"{path!r}: {bad}")
            continue
        if lock is not None:
            lock.latest_known = None if failures else (identity, metadata)
        if failures:
            warnings.warn(
                f"The backup file {failures[0]}; restoring the previous generation {path!r} "
                f"(epoch {metadata['epoch']}) instead.",
                UserWarning,
                stacklevel=3,
            )
        return metadata, path
    raise ValueError(
        f"No backup in {directory!r} can be restored: {'; '.join(failures)}. Move the files away "
        "(or pass restore=False / resume=False) to start over."
    )


def _identity(path):
    try:
        return sealed.file_identity(os.stat(path))
    except FileNotFoundError:
        return None
