"""The checks of the paths `fit` reads and writes, and of the backup a `--resume` continues.

Standard library only: a `--data` that is not a regular file, a path that cannot be written, or
a `--resume` of another fit, is refused before TensorFlow is imported, before anything is
written.
"""

from __future__ import annotations

import os
import stat

from keras_mle_cli.errors import UsageError
from keras_mle_cli.records import (
    TRAINING_METADATA,
    checkpoint_record,
    checkpoint_record_path,
    describe,
    read_json,
)

__all__ = [
    "open_input_file",
    "check_output_file",
    "check_output_dir",
    "check_resume",
    "check_epochs_left",
]

#: What a path that is not a regular file is, for messages (`stat.S_IS*` tests, in order).
_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def open_input_file(path, refused):
    """Opens the regular file `path` to read its bytes; anything else is refused, unopened.

    A device never ends (`/dev/zero`) and a named pipe with no writer blocks `open` forever, so
    `path` is checked before it is opened (`os.stat`), then opened without blocking and checked
    again (in case it was replaced meanwhile).

    Args:
        path: The file to read.
        refused: `refused(kind)`: the message for a path that is `kind` (`"a named pipe"`).

    Raises:
        UsageError: `path` cannot be read, or is not a regular file.
    """
    try:
        kind = _kind(os.stat(path).st_mode)
        if kind is None:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            kind = _kind(os.fstat(fd).st_mode)
            if kind is not None:
                os.close(fd)
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    if kind is not None:
        raise UsageError(refused(kind))
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _kind(mode):
    """`None` for a regular file, else what it is, in words."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def check_output_file(option, path, suffix) -> None:
    """Refuses an output file `path` (of `option`) that cannot be written or lacks `suffix`."""
    if not path.endswith(suffix):
        raise UsageError(f"{option} must end in {suffix}, got {path!r}")
    if os.path.isdir(path):
        raise UsageError(f"{option} {path} is a folder, not a file")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"{option} {path}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: cannot write in the folder {parent}")


def check_output_dir(option, path) -> None:
    """Refuses an output folder `path` (of `option`) that is a file or cannot be created."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{option} {path} is a file, not a folder")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"{option} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: cannot write in {existing}")


def check_resume(args, x, y) -> None:
    """Refuses a `--resume` whose backup is of another fit, or already past `--epochs`."""
    directory = args.checkpoint_dir
    recorded = read_json(checkpoint_record_path(directory))
    wanted = checkpoint_record(args, x, y)
    if recorded is not None and recorded != wanted:
        raise UsageError(
            f"--resume: the backup in {directory} is a fit of {describe(recorded)}, "
            f"not {describe(wanted)}"
        )
    training = read_json(os.path.join(directory, TRAINING_METADATA)) or {}
    done = training.get("epoch")
    if isinstance(done, int):
        check_epochs_left(args, done)


def check_epochs_left(args, done: int) -> None:
    """Refuses a `--resume` whose backup has already run `done` >= `--epochs` epochs."""
    if args.epochs <= done:
        raise UsageError(
            f"--resume: the backup in {args.checkpoint_dir} has already run {done} epoch(s); "
            f"ask for --epochs > {done} to continue"
        )
