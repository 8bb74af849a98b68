"""What the two fits of `keras-mle fit` share: the model, the backup, the verdict and the report.

Both fits build a float64 model labelled by its feature columns (`feature_names`: the summary,
the logs and `show` name the slopes `m[income]`, by `keras_mle.parameters.component_labels`), and
train it until the gradient norm of the mean loss, in the adapted (whitened) coordinates, stays
under `GRADIENT_TOLERANCE / sqrt(rows)` for `PATIENCE` epochs (`--epochs` is a cap). A fit that
diverged (as the model's input-check callback records it in `model.divergence`) or did not
converge is a `FitError`, and nothing is saved.

`--checkpoint-dir` gets the record of what its backup is a fit of (`keras_mle_cli.records`) from
`CheckpointRecord`, at the start of training: after the run took the folder's lock, so that a
run refused by the lock leaves the running fit's record as it was. Every file is written
through `keras_mle.checkpoint.atomic`.
"""

from __future__ import annotations

import hashlib
import math
import warnings

import keras
import numpy as np

import keras_mle
from keras_mle import checkpoint, statistics
from keras_mle.checkpoint import atomic
from keras_mle_cli.errors import FitError, UsageError
from keras_mle_cli.options import MODELS
from keras_mle_cli.paths import check_epochs_left
from keras_mle_cli.records import checkpoint_record_path, model_record_path
from keras_mle_cli.reporting import report

__all__ = [
    "GRADIENT_TOLERANCE",
    "PATIENCE",
    "CheckpointRecord",
    "backup_callbacks",
    "check_backup_fits",
    "check_training",
    "gradient_tolerance",
    "new_model",
    "new_optimizer",
    "print_fit",
    "save",
    "warning_lines",
]

#: The convergence test stops once the gradient norm of the mean loss, in the adapted
#: (whitened) coordinates where the Hessian is of order 1, stays under this over sqrt(rows):
#: the Newton step left is then about 1e-6 standard errors or less.
GRADIENT_TOLERANCE = 1e-6
PATIENCE = 2


def new_model(args, inputs):
    """The float64 model `args.model` names; its slopes labelled by `inputs.x` (with targets)."""
    class_name, _ = MODELS[args.model]
    names = {} if inputs.y is None else {"feature_names": list(inputs.x)}
    return getattr(keras_mle, class_name)(dtype="float64", **names)


def new_optimizer(args):
    """The Keras optimizer `--optimizer` names, at `--learning-rate`."""
    optimizer = keras.optimizers.get(args.optimizer)
    optimizer.learning_rate = args.learning_rate
    return optimizer


def gradient_tolerance(rows: int) -> float:
    """The convergence test's tolerance on the gradient norm of the mean loss over `rows`."""
    return GRADIENT_TOLERANCE / math.sqrt(rows)


def check_backup_fits(args, model, record, build) -> None:
    """Refuses a `--resume` backup that is not of this fit, or already past `--epochs`.

    The backup is loaded into `trial`, a new model of `model`'s configuration built by
    `build(trial)` (adaptation included), so that a backup of another fit is a one-line error
    before training.
    """
    directory = args.checkpoint_dir
    try:
        backup = checkpoint.read_backup(directory)
    except (ValueError, checkpoint.BackupInUseError) as error:
        raise UsageError(f"--checkpoint-dir: {error}") from None
    if backup is None:
        return
    check_epochs_left(args, int(backup.get("epoch", 0)))
    trial = type(model).from_config(model.get_config())
    build(trial)
    trial.compile(optimizer=keras.optimizers.get(args.optimizer))
    try:
        with warnings.catch_warnings():
            # Keras only warns when it skips the optimizer state of another optimizer.
            warnings.filterwarnings("error", module=r"keras\.")
            checkpoint.restore_backup(trial, directory)
    except Exception as error:  # noqa: BLE001  h5py and Keras raise many types.
        raise UsageError(
            f"--resume: the backup in {directory} is not a {type(model).__name__} fit of "
            f"{len(record['x'])} column(s) with {args.optimizer} ({error})"
        ) from None


class CheckpointRecord(keras.callbacks.Callback):
    """Writes `record` (what the backup is a fit of) into the backup folder as training starts.

    The training loops restore the backup, which takes the folder's lock, before any
    `on_train_begin`: a run that another run's lock refuses never gets here.

    Args:
        directory: The backup folder (`--checkpoint-dir`).
        record: `keras_mle_cli.records.checkpoint_record(...)`.
    """

    def __init__(self, directory, record: dict):
        super().__init__()
        self.directory = directory
        self.record = record

    def on_train_begin(self, logs=None):
        atomic.write_json(checkpoint_record_path(self.directory), self.record, indent=1)


def backup_callbacks(args, record) -> list:
    """The record and the `BackupAndRestore` of `--checkpoint-dir`, in that order (or none)."""
    if not args.checkpoint_dir:
        return []
    backup = checkpoint.BackupAndRestore(
        args.checkpoint_dir,
        save_every=args.checkpoint_every,
        restore=args.resume,
        delete_checkpoint=False,
    )
    return [CheckpointRecord(args.checkpoint_dir, record), backup]


def check_training(args, model, convergence, history, tolerance) -> None:
    """Raises a `FitError` if training diverged or did not converge.

    Divergence is what the model's input-check callback recorded (`model.divergence`), or
    parameters left non-finite by the last step (a step from finite gradients that overflowed,
    which no later step was there to refuse).
    """
    diverged = getattr(model, "divergence", None)
    if diverged is None and not np.all(np.isfinite(statistics.flat_parameters(model))):
        diverged = "non-finite parameters after the last epoch"
    if diverged is not None:
        raise FitError(
            f"the fit diverged ({diverged.removeprefix('diverged ')}): try a smaller "
            f"--learning-rate (now {args.learning_rate:g}); nothing saved to --out"
        )
    if convergence.stop_reason is None:
        norm = history.history.get("gradient_norm", [float("nan")])[-1]
        more = " (add --resume to continue from the backup)" if args.checkpoint_dir else ""
        raise FitError(
            f"did not converge within --epochs {args.epochs}: gradient norm {norm:.3g} > "
            f"{tolerance:.3g}; run more epochs{more} or change --learning-rate; "
            "nothing saved to --out"
        )


def warning_lines(caught) -> None:
    """One stderr line per warning of the package's own (others are TensorFlow's noise).

    A `DivergenceWarning` is left out: a diverged fit is an error, reported as such.
    """
    for warning in caught:
        own = warning.category.__module__.startswith("keras_mle")
        if own and not issubclass(warning.category, keras_mle.DivergenceWarning):
            report("fit", "warning", warning.message)


def save(model, path, record) -> None:
    """Saves `model` to `path` atomically, then its record (with the file's hash) beside it."""
    checkpoint.save_model_atomic(model, path)
    with open(path, "rb") as file:
        digest = hashlib.sha256(file.read()).hexdigest()
    atomic.write_json(model_record_path(path), {**record, "sha256": digest}, indent=1)


def print_fit(args, model, rows, source, convergence, history, result) -> int:
    """Prints a converged fit's account and summary, and where its outputs went; returns 0."""
    print(
        f"{type(model).__name__} on {rows} rows of {source}: {convergence.stop_reason}; "
        f"{len(history.epoch)} epoch(s) run, {int(model.optimizer.iterations)} optimizer "
        f"step(s) in all ({args.optimizer}, learning rate {args.learning_rate:g})"
    )
    print(result.summary())
    if args.logdir:
        print(f"TensorBoard logs: tensorboard --logdir {args.logdir}")
    if args.checkpoint_dir:
        print(f"checkpoint: {args.checkpoint_dir}")
    if args.out:
        print(f"saved model: {args.out}")
    return 0
