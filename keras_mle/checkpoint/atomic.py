"""Files that are never half-written: a temporary file beside the target, then `os.replace`.

Every file keras_mle writes for keeping (model files, backups, their JSON metadata, the command
line's records) goes through `write_file`, in five steps:

1. create `.<name>.tmp-<pid>-<random><suffix>` in the target's folder (the same file system, so
   the rename below is atomic), with the mode `open(path, "w")` would give a new file (`0o666`
   less the umask; not the `0o600` of `tempfile.mkstemp`);
2. write the content into it and `fsync` it;
3. give it the mode of the file it replaces, if there is one;
4. `commit`: `os.replace` it onto the target, the one step that makes the new file visible;
5. `fsync` the folder, so that the rename itself survives a power cut.

A failure at any step removes the temporary file and leaves the old file as it was; the error
(an `OSError` for the file system's) is raised unchanged. A process killed during a write
leaves the old file whole and a stray temporary file, which nothing here removes: only its
writer knows it is stale (a backup folder's are removed under the folder's lock).

Standard library only, so that the command line's front end can use it without TensorFlow.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import shutil
import stat
from collections.abc import Callable

__all__ = [
    "TEMP_MARK",
    "write_bytes",
    "write_json",
    "write_file",
    "commit",
    "new_temporary",
    "temporary_pattern",
    "replace_with_link",
    "fsync_file",
    "fsync_directory",
]

#: What marks a temporary file: `.<name>` + `TEMP_MARK` + `<pid>-<random><suffix>`.
TEMP_MARK = ".tmp-"


def write_bytes(path, data: bytes) -> None:
    """Replaces the file at `path` with `data`, atomically (see the module docstring).

    Args:
        path: The target file (`str` or `os.PathLike`); its folder must exist.
        data: The new content (`bytes`, `bytearray` or `memoryview`).

    Raises:
        OSError: Unchanged from the file system (a missing folder, no permission, a full disk).
            The old file, if any, is intact and no temporary file is left.
    """
    data = bytes(data)

    def write(temporary):
        with open(temporary, "wb") as file:
            file.write(data)

    write_file(path, write)


def write_json(path, obj, *, indent: int | None = None) -> None:
    """Replaces the file at `path` with `obj` as JSON (UTF-8), atomically.

    Args:
        path: The target file; its folder must exist.
        obj: A JSON-serializable value.
        indent: `json.dumps`' indent. Defaults to `None` (one line).

    Raises:
        TypeError, ValueError: `obj` is not JSON-serializable; nothing is written then.
        OSError: As for `write_bytes`.
    """
    write_bytes(path, json.dumps(obj, indent=indent).encode("utf-8"))


def write_file(
    path,
    write: Callable[[str], object],
    *,
    suffix: str = "",
    before_commit: Callable[[], object] | None = None,
) -> None:
    """Replaces the file at `path` with what `write(temporary)` writes, atomically.

    For writers that want a path rather than bytes (`model.save`, `h5py`). `write` may reopen
    and change the file as often as it likes; the file is `fsync`ed after it returns.

    Args:
        path: The target file; its folder must exist.
        write: Called with the temporary file's path (an existing, empty file).
        suffix: The temporary file's name ending, for writers that pick a format from the name
            (`".keras"`, `".weights.h5"`). Defaults to `""`.
        before_commit: Called once the new content is durable and just before the rename (a
            backup keeps its previous generation there). Defaults to `None`.

    Raises:
        Whatever `write` or `before_commit` raises, and `OSError` from the file system,
        unchanged; the old file is intact and the temporary file removed.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    temporary, new_file_mode = new_temporary(directory, os.path.basename(path), suffix)
    try:
        write(temporary)
        fsync_file(temporary)
        _copy_mode(temporary, path, new_file_mode)
        if before_commit is not None:
            before_commit()
        commit(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise
    fsync_directory(directory)


def commit(temporary: str, path: str) -> None:
    """Moves `temporary` onto `path`: the one step that makes a new file visible.

    Atomic on POSIX and Windows (`os.replace`). Every write in keras_mle calls it through this
    module's namespace, so a test can replace it to stop a writer between its write and its
    rename (`monkeypatch.setattr(keras_mle.checkpoint.atomic, "commit", ...)`).
    """
    os.replace(temporary, path)


def new_temporary(directory, name: str, suffix: str = "") -> tuple[str, int]:
    """Creates an empty `.<name>.tmp-<pid>-<random><suffix>` in `directory`.

    Created as `open()` creates a file (`0o666` less the umask), so its mode is the one a new
    file gets; reading it back needs no process-wide `os.umask` call.

    Returns:
        `(path, mode)`: the temporary file and its mode bits.
    """
    while True:
        path = os.path.join(
            directory, f".{name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}{suffix}"
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
        return path, mode


def temporary_pattern(directory, name: str) -> str:
    """The `glob` pattern of the temporary files `write_file` makes for `directory/name`."""
    return os.path.join(glob.escape(os.fspath(directory)), f".{glob.escape(name)}{TEMP_MARK}*")


def replace_with_link(source, target) -> None:
    """Makes `target` a hard link to `source` (a copy where links fail), atomically."""
    target = os.fspath(target)
    directory = os.path.dirname(os.path.abspath(target))
    temporary, _ = new_temporary(directory, os.path.basename(target))
    try:
        os.remove(temporary)
        try:
            os.link(source, temporary)
        except OSError:  # a file system without hard links
            shutil.copyfile(source, temporary)
            shutil.copymode(source, temporary)
            fsync_file(temporary)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


def fsync_file(path) -> None:
    """Flushes the file at `path` to its disk."""
    with open(path, "rb") as file:
        os.fsync(file.fileno())


def fsync_directory(directory) -> None:
    """Makes the renames in `directory` durable, where the platform allows it (not Windows)."""
    with contextlib.suppress(OSError, AttributeError):
        handle = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def _copy_mode(temporary, target, new_file_mode):
    """Gives `temporary` the mode of `target` if it exists, else `new_file_mode`."""
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = new_file_mode
    os.chmod(temporary, mode)
