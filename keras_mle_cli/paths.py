"""The checks of the paths `fit` writes to, and of the backup a `--resume` continues.

Standard library only: a path that cannot be written, or a `--resume` of another fit, is refused
before TensorFlow is imported, before anything is written.
"""

from __future__ import annotations

import os

from keras_mle_cli.errors import UsageError
from keras_mle_cli.records import (
    TRAINING_METADATA,
    checkpoint_record,
    checkpoint_record_path,
    describe,
    read_json,
)

__all__ = ["check_output_file", "check_output_dir", "check_resume", "check_epochs_left"]


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
