"""Checkpoint files that are never half-written, and the epoch-boundary backup of a training run.

Two kinds of file, both the ones Keras itself uses:

- a model file (`.keras` archive, or `.weights.h5` with weights and optimizer state), written by
  `save_model_atomic`: Keras writes to a temporary file beside the target, which is then moved
  onto it with `os.replace`. A process killed during a save leaves the previous file whole (and a
  stray hidden `.<name>.tmp-<pid>-*` file);
- a backup folder in the layout of `keras.callbacks.BackupAndRestore(double_checkpoint=True)`:
  `latest.weights.h5` (weights, optimizer iterations and slot variables), the previous generation
  `latest.weights.h5.bkp`, and `training_metadata.json` (`{"epoch": completed_epochs, ...}`, with
  its `.bkp`). `write_backup` stores the metadata and a SHA-256 checksum of the whole content
  inside the weights file, so that the file is the single, self-verifying commit point; the JSON
  files are kept for Keras' own `BackupAndRestore`, which reads only them.

A training run holds an exclusive lock on its backup folder (`fcntl.flock` on `.keras_mle.lock`),
so two runs never share one; restoring verifies the checksum and falls back to the previous
generation when the latest fails; no file is written from a non-finite state.

Two callbacks write them, through public Keras API only:

- `BackupAndRestore` writes a backup at epoch boundaries. Resuming is the training loop's job:
  a keras_mle model's `fit()` and `keras_mle.loops.train` call `initial_epoch(callbacks, model)`
  before training, which locks the folder, loads the backup into the model and returns the epoch
  to start from;
- `ModelCheckpoint` writes `.keras` / `.weights.h5` files at the end of epochs, as Keras' callback
  of that name does.

See `docs/checkpointing.md` for the resume guarantee and what happens on each fault.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import secrets
import shutil
import stat
import tempfile
import threading
import warnings
import weakref

import keras
import numpy as np

from keras_mle import data as data_lib
from keras_mle.errors import DivergenceWarning

try:
    import fcntl
except ImportError:  # Windows: only the in-process check applies.
    fcntl = None

__all__ = [
    "WEIGHTS_FILE",
    "METADATA_FILE",
    "PREVIOUS_WEIGHTS_FILE",
    "PREVIOUS_METADATA_FILE",
    "LOCK_FILE",
    "BackupInUseError",
    "save_model_atomic",
    "write_backup",
    "read_backup",
    "restore_backup",
    "delete_backup",
    "numpy_random_state",
    "set_numpy_random_state",
    "BackupAndRestore",
    "initial_epoch",
    "release_backups",
    "ModelCheckpoint",
]

#: File names of `keras.callbacks.BackupAndRestore` (with `double_checkpoint=True`), shared with it.
WEIGHTS_FILE = "latest.weights.h5"
METADATA_FILE = "training_metadata.json"
PREVIOUS_WEIGHTS_FILE = WEIGHTS_FILE + ".bkp"
PREVIOUS_METADATA_FILE = METADATA_FILE + ".bkp"
#: The file a training run locks (`fcntl.flock`) to hold its backup folder; never deleted.
LOCK_FILE = ".keras_mle.lock"
#: HDF5 root attributes of a backup: its metadata (JSON), and the SHA-256 of everything else.
METADATA_ATTR = "keras_mle_training_metadata"
CHECKSUM_ATTR = "keras_mle_checksum"

_TEMP_MARK = ".tmp-"


class BackupInUseError(RuntimeError):
    """Another training run holds the backup folder (its lock file is locked)."""


# -------------------------------------------------------------------- model files
def save_model_atomic(model, filepath, *, weights_only: bool | None = None, metadata=None) -> str:
    """Saves `model` to `filepath` through a temporary file and `os.replace`.

    The file gets the mode `open(filepath, "w")` would give it (`0o666` less the umask), or keeps
    the mode of the file it replaces. A temporary file left by a killed save
    (`.<name>.tmp-<pid>-*`) is not removed here: nothing proves it is stale (a backup folder's
    are removed by `BackupAndRestore` while it holds the folder's lock).

    Args:
        model: A built Keras model.
        filepath: Target path, ending in `.keras` or `.weights.h5`.
        weights_only: Save weights (and optimizer state) only. Defaults to `None`: decided by the
            file name (`.weights.h5`).
        metadata: JSON-serializable dict stored as an HDF5 attribute of a `.weights.h5` file,
            with a checksum of the file's content (see `read_backup`). Defaults to `None`.

    Returns:
        `filepath`.

    Raises:
        TypeError: naming `filepath` if it is not a path.
        ValueError: naming `filepath` if its suffix does not match `weights_only`, it is an
            existing folder, or its folder cannot be created (a file is in the way); naming
            `model` if a weight or an optimizer variable holds a NaN or an Inf. Nothing is
            written then, and a file already at `filepath` is kept. (The callbacks, which save
            unattended during training, skip such a state with a `keras_mle.DivergenceWarning`
            and go on; a direct call refuses it, so that a returned path is always a usable
            file.)
    """
    filepath = _check_path("filepath", filepath)
    if weights_only is None:
        weights_only = filepath.endswith(".weights.h5")
    suffix = ".weights.h5" if weights_only else ".keras"
    if not filepath.endswith(suffix):
        raise ValueError(f"filepath must end in {suffix!r}, got {filepath!r}.")
    if metadata is not None and not weights_only:
        raise ValueError("metadata can only be stored in a .weights.h5 file.")
    if os.path.isdir(filepath):
        raise ValueError(f"filepath: {filepath!r} is an existing folder, not a file.")
    blocking = _blocking_file(os.path.dirname(os.path.abspath(filepath)))
    if blocking is not None:
        raise ValueError(
            f"filepath: the folder of {filepath!r} cannot be created: {blocking!r} is a file."
        )
    bad = _non_finite_variables(model)
    if bad:
        raise ValueError(
            f"model: its state is not finite (NaN or Inf in {', '.join(bad[:5])}), so it was "
            f"not saved to {filepath!r} (a file already there is kept)."
        )
    _save_atomic(model, filepath, weights_only, metadata)
    return filepath


def _check_path(name, path) -> str:
    """`path` (a `str` or `os.PathLike` naming text) as a `str`; a `TypeError` naming `name`."""
    if isinstance(path, (str, os.PathLike)):
        path = os.fspath(path)
        if isinstance(path, str) and path:
            return path
    raise TypeError(f"{name} must be a non-empty path (str or os.PathLike), got {path!r}.")


def _blocking_file(path):
    """The existing non-folder at `path` or above it that keeps `path` from being a folder."""
    existing = os.path.abspath(path)
    while not os.path.lexists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            return None
        existing = parent
    return None if os.path.isdir(existing) else existing


def check_folder(name, path) -> str:
    """`path` as a `str`, if it is a folder or can be created as one; else raises naming `name`.

    Raises:
        TypeError: if `path` is not a path.
        ValueError: if `path`, or a folder above it, is an existing file.
    """
    path = _check_path(name, path)
    blocking = _blocking_file(path)
    if blocking is not None:
        where = "" if blocking == os.path.abspath(path) else f" ({blocking!r} is a file)"
        raise ValueError(f"{name}: {path!r} is a file, not a folder{where}.")
    return path


def _save_atomic(model, filepath, weights_only, metadata=None, before_commit=None):
    directory = os.path.dirname(os.path.abspath(filepath))
    os.makedirs(directory, exist_ok=True)
    suffix = ".weights.h5" if weights_only else ".keras"
    # Keras picks the format from the name, so the temporary file keeps the suffix.
    temporary, new_file_mode = _new_temporary(directory, os.path.basename(filepath), suffix)
    try:
        if weights_only:
            model.save_weights(temporary, overwrite=True)
        else:
            model.save(temporary, overwrite=True)
        if metadata is not None:
            _seal(temporary, metadata)
        _fsync(temporary)
        _copy_mode(temporary, filepath, new_file_mode)
        if before_commit is not None:
            before_commit()
        _commit(temporary, filepath)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise
    _fsync_directory(directory)


# -------------------------------------------------------------------- backups
def write_backup(model, directory, metadata: dict, *, keep_previous: bool = True) -> bool:
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

    Returns:
        Whether the backup was written.

    Raises:
        BackupInUseError: Another training run holds the folder.
    """
    directory = os.fspath(directory)
    _check_metadata(metadata, "metadata")
    with _folder_locked(directory):
        bad = _non_finite_variables(model)
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
            previous = _known_good(latest)
            if previous is None:
                try:
                    previous = _verify(directory, WEIGHTS_FILE, METADATA_FILE)[0]
                except _BadBackup as bad:
                    warnings.warn(
                        f"The backup file {latest!r} fails verification ({bad}): it is replaced, "
                        "and the previous generation is kept instead of it.",
                        UserWarning,
                        stacklevel=2,
                    )
        _write_generation(model, directory, metadata, previous, drop_previous=not keep_previous)
    return True


def _write_generation(model, directory, metadata, previous_metadata, drop_previous):
    """Commits a new `latest.weights.h5`; the current one becomes the `.bkp` when
    `previous_metadata` (its metadata) is given. The folder's lock must be held."""
    latest = os.path.join(directory, WEIGHTS_FILE)

    def keep_previous():
        if previous_metadata is not None and os.path.exists(latest):
            _replace_with_link(latest, os.path.join(directory, PREVIOUS_WEIGHTS_FILE))
            _write_text_atomic(
                os.path.join(directory, PREVIOUS_METADATA_FILE), json.dumps(previous_metadata)
            )
            _fsync_directory(directory)

    _save_atomic(model, latest, True, metadata, before_commit=keep_previous)
    _remember_good(latest, metadata)
    if drop_previous:
        for name in (PREVIOUS_WEIGHTS_FILE, PREVIOUS_METADATA_FILE):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(directory, name))
    _write_text_atomic(os.path.join(directory, METADATA_FILE), json.dumps(metadata))


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


def restore_backup(model, directory) -> dict | None:
    """Loads the backup in `directory` into `model` (weights and optimizer state).

    The backup is verified as in `read_backup` (falling back to the previous generation with a
    warning), and the very bytes verified are loaded, even if another process replaces the files
    meanwhile. The model must be built; its optimizer, if any, is built first so that its state
    is loaded rather than dropped. The NumPy global random state saved with the backup, if any,
    is restored, so that `shuffle=True` draws the same orders as an uninterrupted run.

    Returns:
        The backup's metadata, or `None` (and nothing changed) when there is no backup.

    Raises:
        ValueError: Backup files exist but none verifies, or the verified file does not fit the
            model.
    """
    directory = os.fspath(directory)
    with tempfile.TemporaryDirectory(prefix="keras_mle-restore-") as scratch:
        copy = os.path.join(scratch, WEIGHTS_FILE)
        found = _find_backup(directory, copy_to=copy)
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


def delete_backup(directory) -> None:
    """Removes the backup files, both generations (not the folder, its lock file or anything
    else in it). Takes the folder's lock, unless this thread's training run holds it.

    Raises:
        BackupInUseError: Another training run holds the folder.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        return
    with _folder_locked(directory):
        # The previous generation first: an interrupted deletion never leaves an old backup alone.
        for name in (PREVIOUS_WEIGHTS_FILE, PREVIOUS_METADATA_FILE, WEIGHTS_FILE, METADATA_FILE):
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


# -------------------------------------------------------------------- verification
class _BadBackup(Exception):
    """A backup file that fails verification; the message is the reason."""


def _find_backup(directory, copy_to=None):
    """`(metadata, path)` of the first generation that verifies, or `None` with no backup files.

    Warns (`UserWarning`) when the latest generation is skipped; raises `ValueError` naming every
    file and reason when backup files exist but none verifies.
    """
    generations = [(WEIGHTS_FILE, METADATA_FILE), (PREVIOUS_WEIGHTS_FILE, PREVIOUS_METADATA_FILE)]
    if not any(os.path.exists(os.path.join(directory, name)) for name, _ in generations):
        return None
    failures = []
    for weights, metadata_file in generations:
        path = os.path.join(directory, weights)
        try:
            metadata = _verify(directory, weights, metadata_file, copy_to)[0]
        except _BadBackup as bad:
            failures.append(f"{path!r}: {bad}")
            continue
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


def _verify(directory, weights, metadata_file, copy_to=None):
    """`(metadata, identity)` of a backup file that verifies, else raises `_BadBackup`.

    A file with a checksum must match it; one without (written by Keras' own `BackupAndRestore`)
    must only be readable, its metadata coming from `metadata_file`. With `copy_to`, the bytes
    verified are copied there.
    """
    path = os.path.join(directory, weights)
    try:
        metadata, identity = _check_file(path, os.path.join(directory, metadata_file), copy_to)
    except _BadBackup:
        _GOOD.pop(os.path.realpath(path), None)  # never kept as a previous generation
        raise
    _GOOD[os.path.realpath(path)] = (identity, metadata)
    return metadata, identity


def _check_file(path, metadata_path, copy_to):
    import h5py

    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise _BadBackup("missing") from None
    with handle:
        identity = _identity_of(os.fstat(handle.fileno()))
        if identity[2] == 0:
            raise _BadBackup("empty file (0 bytes)")
        try:
            with h5py.File(handle, "r") as file:
                stored = file.attrs.get(CHECKSUM_ATTR)
                text = file.attrs.get(METADATA_ATTR)
                content, datasets = _content_digest(file)
        except Exception as error:  # h5py's errors for a damaged file vary
            raise _BadBackup(
                f"not a readable HDF5 file ({type(error).__name__}: {error})"
            ) from None
        if datasets == 0:
            raise _BadBackup("an HDF5 file that holds no weights")
        if stored is None and text is None:
            metadata = _keras_metadata(metadata_path)
        elif stored is None or text is None:
            missing = "checksum" if stored is None else "metadata"
            raise _BadBackup(f"a keras_mle backup without its {missing} attribute (damaged)")
        elif stored != content:
            raise _BadBackup(
                "checksum mismatch: its content changed after it was written (a damaged file)"
            )
        else:
            try:
                metadata = json.loads(text)
            except (TypeError, ValueError):
                raise _BadBackup("metadata attribute is not JSON") from None
        try:
            _check_metadata(metadata, "the stored metadata")
        except ValueError as error:
            raise _BadBackup(str(error)) from None
        if copy_to is not None:
            handle.seek(0)
            with open(copy_to, "wb") as copy:
                shutil.copyfileobj(handle, copy)
    return metadata, identity


def _keras_metadata(path):
    """The metadata of a backup without checksum: Keras' JSON file, or epoch 0 without one."""
    if not os.path.exists(path):
        return {"epoch": 0, "batch": 0}
    try:
        with open(path) as file:
            return json.load(file)
    except (OSError, ValueError) as error:
        raise _BadBackup(f"its metadata file {path!r} cannot be read ({error})") from None


def _check_metadata(metadata, name):
    if not isinstance(metadata, dict):
        raise ValueError(f"{name} must be a dict, got {metadata!r}.")
    for key in ("epoch", "batch"):
        value = metadata.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name}: {key!r} must be an integer >= 0, got {value!r}.")


def _seal(path, metadata):
    """Stores `metadata` and the checksum of the whole content in a `.weights.h5` file."""
    import h5py

    with h5py.File(path, "a") as file:
        file.attrs[METADATA_ATTR] = json.dumps(metadata)
        file.attrs[CHECKSUM_ATTR] = _content_digest(file)[0]


def _content_digest(file):
    """SHA-256 of every group, dataset and attribute of an HDF5 file but the checksum itself.

    Each object contributes its path, kind and sorted attributes; each dataset its dtype, shape
    and bytes, every field length-prefixed. Returns `("sha256:<hex>", number of datasets)`.
    """
    import h5py

    digest = hashlib.sha256()

    def feed(*parts):
        for part in parts:
            data = part if isinstance(part, bytes) else str(part).encode()
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)

    objects = [("", file)]
    file.visititems(lambda name, item: objects.append((name, item)))
    datasets = 0
    for name, item in sorted(objects, key=lambda entry: entry[0]):
        is_dataset = isinstance(item, h5py.Dataset)
        feed("dataset" if is_dataset else "group", name)
        for key in sorted(item.attrs):
            if not (name == "" and key == CHECKSUM_ATTR):
                feed("attribute", key, *_value_parts(item.attrs[key]))
        if is_dataset:
            datasets += 1
            feed(*_value_parts(item[()]))
    return f"sha256:{digest.hexdigest()}", datasets


def _value_parts(value):
    import h5py

    if isinstance(value, h5py.Empty):
        return ("empty", value.dtype.str)
    if isinstance(value, (str, bytes)):
        return (type(value).__name__, value)
    array = np.asarray(value)
    if array.dtype.kind == "O":
        return ("object", repr(array.tolist()))
    return (array.dtype.str, repr(array.shape), array.tobytes())


#: realpath -> (identity, metadata) of the backup files this process wrote or verified: the
#: file to keep as the previous generation need not be read again.
_GOOD: dict = {}


def _identity_of(status):
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


def _identity(path):
    try:
        return _identity_of(os.stat(path))
    except FileNotFoundError:
        return None


def _remember_good(path, metadata):
    _GOOD[os.path.realpath(path)] = (_identity(path), metadata)


def _known_good(path):
    """The metadata of `path` if this process wrote or verified this very file, else `None`."""
    known = _GOOD.get(os.path.realpath(path))
    identity = _identity(path)
    if known is None or identity is None or known[0] != identity:
        return None
    return known[1]


def _non_finite_variables(model):
    """Paths of the model's and its optimizer's float variables holding a NaN or an Inf."""
    variables = list(model.weights)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and optimizer.built:
        variables += list(optimizer.variables)
    bad = []
    for variable in variables:
        if keras.backend.is_float_dtype(variable.dtype) and not bool(
            keras.ops.all(keras.ops.isfinite(variable))
        ):
            bad.append(getattr(variable, "path", variable.name))
    return bad


# -------------------------------------------------------------------- the folder lock
class _FolderLock:
    """An exclusive `flock` on a folder's lock file, held by one `BackupAndRestore` at a time.

    The descriptor is closed (and the OS lock released) by `close`, or when the object is
    garbage-collected with the callback that owns it; the OS releases it when the process dies.
    """

    def __init__(self, directory, fd):
        self.directory = directory
        self.key = _identity_of(os.fstat(fd))[:2]
        self.owner = None  # weakref to the holding callback
        self.thread = None
        self._close = weakref.finalize(self, os.close, fd)

    @property
    def closed(self):
        return not self._close.alive

    def close(self):
        self._close()


#: (st_dev, st_ino) of a lock file -> the `_FolderLock` this process holds on it.
_LOCKS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_LOCKS_GUARD = threading.Lock()


def _held_here(directory):
    """The `_FolderLock` this process holds on `directory`'s lock file, or `None`."""
    key = _identity(os.path.join(directory, LOCK_FILE))
    lock = None if key is None else _LOCKS.get(key[:2])
    return None if lock is None or lock.closed else lock


def _lock_file(directory):
    """A descriptor of `directory`'s lock file, exclusively locked; `BackupInUseError` if held."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, LOCK_FILE)
    for _ in range(3):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                    raise BackupInUseError(
                        f"The backup folder {directory!r} is in use by another training run "
                        f"(process {holder}): two runs on one folder would overwrite each other's "
                        "backups. Wait for it to end, or give this run its own folder."
                    ) from None
            current = _identity(path)
            if current is not None and current[:2] == _identity_of(os.fstat(fd))[:2]:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())  # for the error message of others
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the lock file was removed or replaced meanwhile: lock the one there now
    raise BackupInUseError(f"The lock file {path!r} keeps being replaced by another process.")


@contextlib.contextmanager
def _folder_locked(directory):
    """Holds `directory`'s lock for a block, or only checks it when this thread's run holds it."""
    with _LOCKS_GUARD:
        held = _held_here(directory)
    if held is not None:
        if held.thread is not threading.current_thread():
            raise BackupInUseError(
                f"The backup folder {directory!r} is in use by a training run in another thread "
                f"({held.thread.name}) of this process."
            )
        yield
        return
    fd = _lock_file(directory)
    try:
        yield
    finally:
        os.close(fd)


def _remove_stale_temporaries(directory):
    """Removes the temporary files of the backup's own files (call with the lock held)."""
    for name in (WEIGHTS_FILE, METADATA_FILE, PREVIOUS_WEIGHTS_FILE, PREVIOUS_METADATA_FILE):
        pattern = os.path.join(glob.escape(directory), f".{glob.escape(name)}{_TEMP_MARK}*")
        for path in glob.glob(pattern):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)


# -------------------------------------------------------------------- BackupAndRestore
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
    thread (a thread runs one training at a time). Only a live run in another thread or process
    keeps a new run out.

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
        # The `_FolderLock` held, `None`, or `_TAKEN_OVER` by a later run in the same thread.
        self._lock = None

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
            if self.restore and _backup_exists(self.backup_dir):
                if not model.built:
                    raise ValueError(
                        f"BackupAndRestore needs a built model to restore the backup in "
                        f"{self.backup_dir!r}: call the model on a batch (model(x[:2])) first."
                    )
                metadata = restore_backup(model, self.backup_dir)
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
        lock, self._lock = self._lock, None
        if isinstance(lock, _FolderLock) and not lock.closed and lock.owner() is self:
            with _LOCKS_GUARD:
                lock.close()
                if _LOCKS.get(lock.key) is lock:
                    del _LOCKS[lock.key]

    def on_train_begin(self, logs=None):
        restored_into, self._pending_restore_model = self._pending_restore_model, None
        self.current_epoch = None
        self.saved_epoch = None
        if restored_into is None:
            self._acquire()
            self._fresh = True
            if self.restore and _backup_exists(self.backup_dir):
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
                self._check_held()
                delete_backup(self.backup_dir)
            elif self.current_epoch is not None and self.saved_epoch != self.current_epoch:
                self._write()
        finally:
            # The same callback may serve a later fit.
            self.release()
            self._pending_restore_model = None
            self.current_epoch = None
            self.saved_epoch = None

    def _write(self):
        self._check_held()
        metadata = {
            "epoch": self.current_epoch,
            "batch": 0,
            "numpy_random_state": numpy_random_state(),
            "shuffle_seed": getattr(self.model, "shuffle_seed", None),
        }
        if write_backup(self.model, self.backup_dir, metadata, keep_previous=not self._fresh):
            self._fresh = False
            self.saved_epoch = self.current_epoch

    def _acquire(self):
        """Takes the folder's lock for a new run (see the class docstring for who may hold it)."""
        check_folder("backup_dir", self.backup_dir)  # a file may have taken its place since
        with _LOCKS_GUARD:
            lock = _held_here(self.backup_dir)
            if lock is None:
                lock = _FolderLock(self.backup_dir, _lock_file(self.backup_dir))
                _LOCKS[lock.key] = lock
            else:
                holder = lock.owner()
                if holder is not None and holder is not self:
                    if lock.thread is not threading.current_thread() and lock.thread.is_alive():
                        raise BackupInUseError(
                            f"The backup folder {self.backup_dir!r} is in use by another training "
                            f"run in this process (thread {lock.thread.name}): two runs on one "
                            "folder would overwrite each other's backups."
                        )
                    holder._lock = _TAKEN_OVER  # its run is over: it must not write again
            lock.owner = weakref.ref(self)
            lock.thread = threading.current_thread()
            self._lock = lock
        _remove_stale_temporaries(self.backup_dir)

    def _check_held(self):
        """Takes the lock if this callback has none; raises if a later run took it over."""
        lock = self._lock
        if lock is None:
            self._acquire()
        elif lock is _TAKEN_OVER:
            raise BackupInUseError(
                f"The backup folder {self.backup_dir!r} was taken over by a later training run "
                "in this thread: this run writes no more backups there."
            )
        elif _held_here(self.backup_dir) is not lock:
            raise BackupInUseError(
                f"The backup folder {self.backup_dir!r} or its lock file was removed or replaced "
                "while this run held it: this run writes no more backups there."
            )


#: What `BackupAndRestore._lock` holds once a later run in the same thread took the folder over.
_TAKEN_OVER = object()


def _backup_exists(directory):
    return any(
        os.path.exists(os.path.join(directory, name))
        for name in (WEIGHTS_FILE, PREVIOUS_WEIGHTS_FILE)
    )


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
        filepath = _check_path("filepath", filepath)
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
        bad = _non_finite_variables(self.model)
        if bad:
            warnings.warn(
                f"ModelCheckpoint did not write {filepath!r} at epoch {epoch + 1}: the model's "
                f"state is not finite (NaN or Inf in {', '.join(bad[:5])}). The last good "
                "checkpoint was kept.",
                DivergenceWarning,
                stacklevel=3,
            )
            return False
        save_model_atomic(self.model, filepath, weights_only=self.save_weights_only)
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


def _commit(temporary, filepath):
    # The one step that makes a new checkpoint visible; atomic on POSIX and Windows.
    os.replace(temporary, filepath)


def _new_temporary(directory, name, suffix):
    """Creates `.<name>.tmp-<pid>-<random><suffix>` in `directory`; returns it and its mode.

    Created as `open()` creates a file (`0o666` less the umask), so its mode is the one a new
    file gets; reading it back needs no process-wide `os.umask` call.
    """
    while True:
        path = os.path.join(
            directory, f".{name}{_TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}{suffix}"
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        os.close(fd)
        return path, mode


def _copy_mode(temporary, target, new_file_mode):
    """Gives `temporary` the mode of `target` if it exists, else `new_file_mode`."""
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = new_file_mode
    os.chmod(temporary, mode)


def _replace_with_link(source, target):
    """Makes `target` a hard link to `source` (a copy where links fail), atomically."""
    directory = os.path.dirname(target)
    temporary, _ = _new_temporary(directory, os.path.basename(target), "")
    try:
        os.remove(temporary)
        try:
            os.link(source, temporary)
        except OSError:  # a file system without hard links
            shutil.copyfile(source, temporary)
            shutil.copymode(source, temporary)
            _fsync(temporary)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


def _write_text_atomic(path, text):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary, new_file_mode = _new_temporary(directory, os.path.basename(path), "")
    try:
        with open(temporary, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        _copy_mode(temporary, path, new_file_mode)
        _commit(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


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
