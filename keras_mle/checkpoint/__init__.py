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

Two callbacks write them, through public Keras API only: `BackupAndRestore` (resumed by the
training loops through `initial_epoch`) and `ModelCheckpoint`.

The package's modules, each importing only those above it in this list:

- `atomic`: write a file through a temporary file, `fsync` and `os.replace` (`write_bytes`,
  `write_json`, `write_file`); standard library only;
- `lock`: the folder lock (`FolderLock`, `BackupInUseError`); standard library only;
- `sealed`: metadata and checksum inside a `.weights.h5` file, and its verification;
- `model_file`: `save_model_atomic`, the finite-state check, the path checks;
- `backup`: the two backup generations: write, read, restore, delete;
- `callbacks`: `BackupAndRestore`, `ModelCheckpoint`, `initial_epoch`, `release_backups`.

See `docs/checkpointing.md` for the resume guarantee and what happens on each fault.
"""

from keras_mle.checkpoint import atomic, backup, callbacks, lock, model_file, sealed
from keras_mle.checkpoint.backup import (
    METADATA_FILE,
    PREVIOUS_METADATA_FILE,
    PREVIOUS_WEIGHTS_FILE,
    WEIGHTS_FILE,
    delete_backup,
    numpy_random_state,
    read_backup,
    restore_backup,
    set_numpy_random_state,
    write_backup,
)
from keras_mle.checkpoint.callbacks import (
    BackupAndRestore,
    ModelCheckpoint,
    initial_epoch,
    release_backups,
)
from keras_mle.checkpoint.lock import LOCK_FILE, BackupInUseError, FolderLock
from keras_mle.checkpoint.model_file import (
    check_folder,
    non_finite_variables,
    save_model_atomic,
    save_model_if_finite,
)
from keras_mle.checkpoint.sealed import CHECKSUM_ATTR, METADATA_ATTR

__all__ = [
    "WEIGHTS_FILE",
    "METADATA_FILE",
    "PREVIOUS_WEIGHTS_FILE",
    "PREVIOUS_METADATA_FILE",
    "LOCK_FILE",
    "METADATA_ATTR",
    "CHECKSUM_ATTR",
    "BackupInUseError",
    "FolderLock",
    "save_model_atomic",
    "save_model_if_finite",
    "non_finite_variables",
    "check_folder",
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
    "atomic",
    "backup",
    "callbacks",
    "lock",
    "model_file",
    "sealed",
]
