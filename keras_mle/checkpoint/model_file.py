"""Model files (`.keras` archives, `.weights.h5`) written atomically, never from a diverged state.

Keras writes to a temporary file beside the target (`atomic.write_file`), which is then moved
onto it with `os.replace`: a process killed during a save leaves the previous file whole (and a
stray hidden `.<name>.tmp-<pid>-*` file). Also the path checks every writer of checkpoints
shares (`check_path`, `check_folder`).
"""

from __future__ import annotations

import os

import keras

from keras_mle.checkpoint import atomic, sealed

__all__ = [
    "save_model_atomic",
    "save_model_if_finite",
    "write_model_file",
    "non_finite_variables",
    "check_path",
    "check_folder",
]


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
    filepath = check_path("filepath", filepath)
    bad = save_model_if_finite(model, filepath, weights_only=weights_only, metadata=metadata)
    if bad:
        raise ValueError(
            f"model: its state is not finite (NaN or Inf in {', '.join(bad[:5])}), so it was "
            f"not saved to {filepath!r} (a file already there is kept)."
        )
    return filepath


def save_model_if_finite(
    model, filepath, *, weights_only: bool | None = None, metadata=None
) -> list[str]:
    """`save_model_atomic`, but a non-finite state is reported instead of raised.

    The variables are scanned once; nothing is written when one holds a NaN or an Inf.

    Returns:
        The paths of the variables holding a NaN or an Inf (at most all of them); empty when
        the file was written.

    Raises:
        TypeError, ValueError: As `save_model_atomic` for the path and `metadata`.
    """
    filepath = check_path("filepath", filepath)
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
    bad = non_finite_variables(model)
    if not bad:
        write_model_file(model, filepath, weights_only=weights_only, metadata=metadata)
    return bad


def write_model_file(
    model, filepath: str, *, weights_only: bool, metadata=None, before_commit=None
) -> None:
    """Writes the model file atomically, creating its folder; no checks (the callers make them).

    Args:
        model: A built model.
        filepath: The target, `.weights.h5` with `weights_only`, else `.keras`.
        weights_only: `model.save_weights` (weights and optimizer state) instead of `model.save`.
        metadata: Sealed into a `.weights.h5` file with its checksum (`sealed.seal`). Defaults
            to `None`.
        before_commit: Called just before the new file replaces the old (`atomic.write_file`).
            Defaults to `None`.
    """
    os.makedirs(os.path.dirname(os.path.abspath(filepath)), exist_ok=True)

    def write(temporary):
        if weights_only:
            model.save_weights(temporary, overwrite=True)
        else:
            model.save(temporary, overwrite=True)
        if metadata is not None:
            sealed.seal(temporary, metadata)

    # Keras picks the format from the name, so the temporary file keeps the suffix.
    suffix = ".weights.h5" if weights_only else ".keras"
    atomic.write_file(filepath, write, suffix=suffix, before_commit=before_commit)


def non_finite_variables(model) -> list[str]:
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


def check_path(name: str, path) -> str:
    """`path` (a `str` or `os.PathLike` naming text) as a `str`; a `TypeError` naming `name`."""
    if isinstance(path, (str, os.PathLike)):
        path = os.fspath(path)
        if isinstance(path, str) and path:
            return path
    raise TypeError(f"{name} must be a non-empty path (str or os.PathLike), got {path!r}.")


def check_folder(name: str, path) -> str:
    """`path` as a `str`, if it is a folder or can be created as one; else raises naming `name`.

    Raises:
        TypeError: if `path` is not a path.
        ValueError: if `path`, or a folder above it, is an existing file.
    """
    path = check_path(name, path)
    blocking = _blocking_file(path)
    if blocking is not None:
        where = "" if blocking == os.path.abspath(path) else f" ({blocking!r} is a file)"
        raise ValueError(f"{name}: {path!r} is a file, not a folder{where}.")
    return path


def _blocking_file(path):
    """The existing non-folder at `path` or above it that keeps `path` from being a folder."""
    existing = os.path.abspath(path)
    while not os.path.lexists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            return None
        existing = parent
    return None if os.path.isdir(existing) else existing
