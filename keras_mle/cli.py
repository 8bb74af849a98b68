"""The `keras-mle` command line, TensorFlow side: `demo`, `fit` and `show` once inputs are valid.

The console script runs `keras_mle_cli.main` (a top-level module), which parses the arguments,
checks the paths and reads the CSV columns without importing TensorFlow, then calls `run_fit`,
`run_show` or `run_demo` here. `main` below is the same entry point, for callers that import the
package.

`fit` builds a float64 model, `adapt`s it to the data (a float64 whitening, so that the default
optimizer converges in a few to a few hundred full-batch steps whatever the units), trains until
`ConvergenceStopping` says the gradient is negligible (`--epochs` is a cap) and prints the
inference summary, its rows named after the columns (`m[income]`, `b`). A fit that diverges,
does not converge, or whose Newton step left is more than `inference`'s tolerance in standard
errors exits 1 and leaves `--out` untouched; a successful one is saved atomically, with the
column names in `MODEL.keras.json` beside it.

With a glob `--data` (a `keras_mle_cli.Stream`) the files are never held whole: they are read
by `keras_mle.data.csv_dataset` (float64), `adapt` takes one pass, and every epoch is one pass
that adds up the batches' gradients (each batch's mean gradient times its rows, in float64)
into the gradient of the mean loss over all rows, then one optimizer step: the full-batch
steps of the in-memory path, so the same iterates, stopping rule, exits and answer, whatever
`--batch-size` (the rows read at a time). Steps on each batch would not do: constant-rate
mini-batch SGD ends near the last batch's optimum, never within the gradient tolerance.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import re
import sys
import warnings

import keras
import numpy as np
import tensorflow as tf

import keras_mle
import keras_mle_cli
from keras_mle import callbacks as callbacks_lib
from keras_mle import checkpoint
from keras_mle_cli import MODELS, FitError, UsageError

__all__ = ["main", "run_demo", "run_fit", "run_show", "UsageError", "FitError", "MODELS"]

#: `ConvergenceStopping` stops once the gradient norm of the mean loss, in the adapted
#: (whitened) coordinates where the Hessian is of order 1, stays under this over sqrt(rows):
#: the Newton step left is then about 1e-6 standard errors or less.
GRADIENT_TOLERANCE = 1e-6
PATIENCE = 2


def main(argv=None) -> int:
    """Runs `keras-mle` with `argv` (default: `sys.argv[1:]`); returns the exit code."""
    return keras_mle_cli.main(argv)


def _quiet_python_logging():
    import absl.logging
    import tensorflow as tf

    absl.logging.set_verbosity(absl.logging.ERROR)
    tf.get_logger().setLevel("ERROR")


# ---------------------------------------------------------------- demo
def run_demo(args, inputs) -> int:
    from keras_mle import demo

    _quiet_python_logging()
    demo.run(args.out, quick=args.quick)
    return 0


# ---------------------------------------------------------------- fit
class _DivergenceStop(keras.callbacks.Callback):
    """Stops training at the first epoch whose loss or parameters are not finite."""

    def __init__(self):
        super().__init__()
        self.reason = None

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        params = self.model.params
        if loss is not None and not math.isfinite(float(loss)):
            self.reason = f"loss {float(loss)} at epoch {epoch + 1}"
        elif not all(np.all(np.isfinite(v)) for v in params.values()):
            self.reason = f"non-finite parameters at epoch {epoch + 1}"
        if self.reason is not None:
            self.model.stop_training = True


def _arrays(columns):
    x = np.asarray([columns.values[c] for c in columns.x], np.float64).T
    if columns.y is None:
        return x[:, 0], None
    return x, np.asarray(columns.values[columns.y], np.float64)


def labels(params: dict, roles, x_columns) -> list:
    """Row names of the flattened `params`: slopes `m[col]` after their columns, others as is."""
    names = []
    for name, value in params.items():
        size = int(np.size(value))
        if (roles or {}).get(name) == "slope" and x_columns and size == len(x_columns):
            names += [f"{name}[{column}]" for column in x_columns]
        elif size == 1:
            names.append(name)
        else:
            names += [f"{name}[{i}]" for i in range(size)]
    return names


def _summary(model, x, y, x_columns, cov_type="nonrobust"):
    """The inference result (rows named after the columns) and the warnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = keras_mle.inference(model, x, y, cov_type=cov_type)
        except (TypeError, ValueError) as error:
            raise UsageError(error) from None
    names = labels(result.params, model.parameter_roles, x_columns)
    if len(names) == len(result.param_names):
        result = dataclasses.replace(result, param_names=names)
    return result, caught


def _warning_lines(caught, skip=()):
    """One stderr line per warning of the package's own (others are TensorFlow's noise)."""
    for warning in caught:
        own = warning.category.__module__.startswith("keras_mle")
        if own and not issubclass(warning.category, skip):
            keras_mle_cli.report("fit", "warning", warning.message)


def run_fit(args, columns) -> int:
    _quiet_python_logging()
    if isinstance(columns, keras_mle_cli.Stream):
        return _run_stream_fit(args, columns)
    class_name, _ = MODELS[args.model]
    x, y = _arrays(columns)
    n = len(x)
    keras.utils.set_random_seed(args.seed)
    names = {} if columns.y is None else {"feature_names": list(columns.x)}
    model = getattr(keras_mle, class_name)(dtype="float64", **names)
    try:
        model.adapt(x, y)
    except (TypeError, ValueError) as error:
        raise UsageError(f"{columns.path}: {error}") from None
    optimizer = keras.optimizers.get(args.optimizer)
    optimizer.learning_rate = args.learning_rate
    record = keras_mle_cli.checkpoint_record(args, columns.x, columns.y)
    if args.checkpoint_dir:
        _prepare_checkpoint_dir(args, model, record, lambda trial: trial.adapt(x, y))

    data = x if y is None else (x, y)
    divergence = _DivergenceStop()
    tolerance = GRADIENT_TOLERANCE / math.sqrt(n)
    convergence = callbacks_lib.ConvergenceStopping(
        data,
        parameter_tolerance=None,
        gradient_tolerance=tolerance,
        patience=PATIENCE,
        verbose=0,
    )
    callbacks = [divergence, convergence]
    if args.logdir:
        image_every = max(10, min(args.epochs, 1000) // 10)
        callbacks.append(
            callbacks_lib.ParameterTensorBoard(args.logdir, data, image_every=image_every)
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = _train(
            model,
            x,
            y,
            epochs=args.epochs,
            batch_size=args.batch_size or n,
            optimizer=optimizer,
            mode="function",
            callbacks=callbacks,
            verbose=args.verbose,
            checkpoint_dir=args.checkpoint_dir,
            checkpoint_every=args.checkpoint_every,
            resume=args.resume,
        )
    epochs_run = len(history.epoch)
    steps = int(model.optimizer.iterations)
    diverged = [w for w in caught if issubclass(w.category, keras_mle.DivergenceWarning)]
    reason = divergence.reason
    if reason is None and diverged:
        reason = " ".join(str(diverged[0].message).split())
    _check_training(args, reason, convergence, history, tolerance)
    result, inference_warnings = _summary(model, x, y, columns.x)
    if not result.converged:
        raise FitError(
            f"not converged: {result.warnings[0] if result.warnings else 'see the summary'}; "
            "nothing saved to --out"
        )
    _warning_lines(caught, skip=(keras_mle.DivergenceWarning,))
    if args.out:
        _save(model, args.out, record)

    if columns.dropped_lines:
        print(
            f"dropped {len(columns.dropped_lines)} row(s) with a missing value "
            f"(lines {_line_list(columns.dropped_lines)})"
        )
    return _report(args, class_name, n, columns.path, convergence, epochs_run, steps, result)


def _check_training(args, diverged, convergence, history, tolerance) -> None:
    """Raises a `FitError` if training diverged (`diverged`: why) or did not converge."""
    if diverged is not None:
        raise FitError(
            f"the fit diverged ({diverged}): try a smaller --learning-rate "
            f"(now {args.learning_rate:g}); nothing saved to --out"
        )
    if convergence.stop_reason is None:
        norm = history.history.get("gradient_norm", [float("nan")])[-1]
        more = " (add --resume to continue from the backup)" if args.checkpoint_dir else ""
        raise FitError(
            f"did not converge within --epochs {args.epochs}: gradient norm {norm:.3g} > "
            f"{tolerance:.3g}; run more epochs{more} or change --learning-rate; "
            "nothing saved to --out"
        )


def _report(args, class_name, n, source, convergence, epochs_run, steps, result) -> int:
    """Prints a converged fit's account and summary, and where its outputs went; returns 0."""
    print(
        f"{class_name} on {n} rows of {source}: {convergence.stop_reason}; "
        f"{epochs_run} epoch(s) run, {steps} optimizer step(s) in all "
        f"({args.optimizer}, learning rate {args.learning_rate:g})"
    )
    print(result.summary())
    if args.logdir:
        print(f"TensorBoard logs: tensorboard --logdir {args.logdir}")
    if args.checkpoint_dir:
        print(f"checkpoint: {args.checkpoint_dir}")
    if args.out:
        print(f"saved model: {args.out}")
    return 0


def _line_list(lines, most=5):
    shown = ", ".join(str(line) for line in lines[:most])
    return shown + (", ..." if len(lines) > most else "")


def _train(*args, **kwargs):
    """`keras_mle.loops.train`, with a backup folder in use by another run as a usage error."""
    try:
        return keras_mle.loops.train(*args, **kwargs)
    except checkpoint.BackupInUseError as error:
        raise UsageError(f"--checkpoint-dir: {error}") from None


def _prepare_checkpoint_dir(args, model, record, build):
    """Checks a `--resume` backup against the model; records what the backup is a fit of.

    `build(trial)` builds `trial`, a new model of the same configuration (adaptation included).
    """
    directory = args.checkpoint_dir
    try:
        backup = checkpoint.read_backup(directory) if args.resume else None
    except (ValueError, checkpoint.BackupInUseError) as error:
        raise UsageError(f"--checkpoint-dir: {error}") from None
    if backup is not None:
        done = int(backup.get("epoch", 0))
        if args.epochs <= done:
            raise UsageError(
                f"--resume: the backup in {directory} has already run {done} epoch(s); "
                f"ask for --epochs > {done} to continue"
            )
        # Load it into a copy first, so that a backup of another fit is a one-line error.
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
    os.makedirs(directory, exist_ok=True)
    keras_mle_cli.write_json_atomic(
        os.path.join(directory, keras_mle_cli.CHECKPOINT_RECORD), record
    )


def _save(model, path, record):
    """Saves `model` to `path` atomically, then its record (with the file's hash) beside it."""
    checkpoint.save_model_atomic(model, path)
    with open(path, "rb") as file:
        digest = hashlib.sha256(file.read()).hexdigest()
    keras_mle_cli.write_json_atomic(
        keras_mle_cli.model_record_path(path), {**record, "sha256": digest}
    )


# ---------------------------------------------------------------- fit, streamed
def _run_stream_fit(args, stream) -> int:
    """`run_fit` for a glob `--data`: the files read a batch at a time, never held whole."""
    class_name, _ = MODELS[args.model]
    batch_size = args.batch_size or keras_mle_cli.STREAM_BATCH_SIZE
    keras.utils.set_random_seed(args.seed)
    names = {} if stream.y is None else {"feature_names": list(stream.x)}
    model = getattr(keras_mle, class_name)(dtype="float64", **names)
    dataset = _stream_dataset(stream, batch_size)
    with _reading(stream):
        model.adapt(dataset)
    optimizer = keras.optimizers.get(args.optimizer)
    optimizer.learning_rate = args.learning_rate
    model.compile(optimizer=optimizer)
    record = keras_mle_cli.checkpoint_record(args, stream.x, stream.y)
    if args.checkpoint_dir:
        shape = (None,) if stream.y is None else (None, len(stream.x))
        _prepare_checkpoint_dir(args, model, record, lambda trial: trial.build(shape))

    epoch_pass = _epoch_pass(model, dataset)
    with _reading(stream):
        first = epoch_pass()
    n = int(round(float(first[0])))
    tolerance = GRADIENT_TOLERANCE / math.sqrt(n)
    convergence = _StreamConvergence(tolerance, PATIENCE)
    callbacks = [convergence]
    if args.logdir:
        # Parameters and the loss only: the statistics and images need the rows in memory.
        callbacks.append(callbacks_lib.ParameterTensorBoard(args.logdir, image_every=0))
    backup = None
    if args.checkpoint_dir:
        backup = checkpoint.BackupAndRestore(
            args.checkpoint_dir,
            save_every=args.checkpoint_every,
            restore=args.resume,
            delete_checkpoint=False,
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history, diverged = _train_stream(
            model,
            stream,
            epoch_pass,
            first,
            epochs=args.epochs,
            callbacks=callbacks,
            backup=backup,
            verbose=args.verbose,
        )
    epochs_run = len(history.epoch)
    steps = int(model.optimizer.iterations)
    _check_training(args, diverged, convergence, history, tolerance)
    with _reading(stream):
        result, _ = _summary(model, dataset, None, stream.x)
    if not result.converged:
        raise FitError(
            f"not converged: {result.warnings[0] if result.warnings else 'see the summary'}; "
            "nothing saved to --out"
        )
    _warning_lines(caught)
    if args.out:
        _save(model, args.out, record)

    if stream.lines > n:
        print(f"dropped {stream.lines - n} row(s) with a missing value")
    return _report(args, class_name, n, stream.describe(), convergence, epochs_run, steps, result)


def _stream_dataset(stream, batch_size):
    """The float64 `keras_mle.data.csv_dataset` of a `Stream`, in the elements `fit` reads."""
    with _reading(stream):
        try:
            dataset = keras_mle.data.csv_dataset(
                stream.files,
                x=stream.x,
                y=stream.y,
                batch_size=batch_size,
                sep=stream.sep,
                missing=stream.missing,
                dtype="float64",
            )
        except ValueError as error:
            # The files have data lines (checked by the front end): --missing drop took them all.
            if stream.missing == "drop" and "no data rows" in str(error):
                raise UsageError(
                    f"--data {stream.pattern!r}: every row has a missing value in a used column"
                ) from None
            raise
    if stream.y is None:
        # A model of a sample reads the sample as a vector, as the in-memory path gives it.
        dataset = dataset.map(lambda x: x[:, 0])
    return dataset


@contextlib.contextmanager
def _reading(stream):
    """Turns an error met reading the files of `stream` into a one-line `UsageError`."""
    try:
        yield
    except tf.errors.OpError as error:
        raise UsageError(_stream_error(stream, error)) from None
    except (TypeError, ValueError) as error:
        raise UsageError(f"--data {stream.pattern!r}: {error}") from None


def _stream_error(stream, error) -> str:
    """The message of a tf.data error while reading `stream`, without TensorFlow's wrapping.

    tf.data's CSV reader names neither the file nor the line: the message says how to find it.
    """
    message = getattr(error, "message", None) or str(error)
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", message)
    message = re.sub(r"Error in user-defined function passed to .*? iterator: \S+: ", "", message)
    message = re.sub(r"\s*\[Op:\w+\].*$", "", message.split("\n")[0]).strip()
    found = re.search(r"\[column\] \[(.*?)\] \[has a missing or NaN value", message)
    if found:
        names = ", ".join(repr(name) for name in found.group(1).split())
        return (
            f"--data {stream.pattern!r}: a row has a missing value (an empty or NaN cell) in "
            f"column {names} (--missing drop skips such rows)"
        )
    hint = ""
    if re.search(r"not a valid \w+: *(?:na|n/a|null|#n/a)$", message, re.IGNORECASE):
        hint = "; with a glob --data only an empty cell is a missing value"
    return (
        f"--data {stream.pattern!r}: cannot read a row: {message}{hint} (give one of the files as "
        "--data to see its line)"
    )


def _epoch_pass(model, dataset):
    """A compiled function of no argument: `(rows, mean loss, gradients)` over all of `dataset`.

    One pass, a batch at a time: each batch's mean loss and gradient, as the training step
    computes them (`compute_loss_and_gradients`), weighted by its rows and added up in float64,
    give the mean loss (in the user's units, as `fit` logs it) and the gradient of the mean loss
    over all rows, whatever the batch sizes.
    """
    variables = model.trainable_variables
    takes_targets = model.takes_targets

    @tf.function
    def run():
        rows = tf.constant(0.0, tf.float64)
        loss = tf.constant(0.0, tf.float64)
        sums = tuple(tf.zeros(v.shape, tf.float64) for v in variables)  # (a list would be packed)
        for batch in dataset:
            x, y = batch if takes_targets else (batch, None)
            _, gradients, losses, weights = model.compute_loss_and_gradients(x, y)
            count = tf.reduce_sum(tf.cast(weights, tf.float64))
            rows += count
            loss += tf.reduce_sum(tf.cast(losses * weights, tf.float64))
            sums = tuple(
                s + count * tf.cast(g, tf.float64) for s, g in zip(sums, gradients, strict=True)
            )
        return rows, loss / rows, [s / rows for s in sums]

    return run


class _StreamConvergence(keras.callbacks.Callback):
    """`ConvergenceStopping`'s gradient test, on the `gradient_norm` a streamed epoch logs."""

    def __init__(self, tolerance, patience):
        super().__init__()
        self.tolerance = tolerance
        self.patience = patience
        self.stop_reason = None
        self._waits = 0

    def on_train_begin(self, logs=None):
        self.stop_reason = None
        self._waits = 0

    def on_epoch_end(self, epoch, logs=None):
        norm = logs["gradient_norm"]
        self._waits = self._waits + 1 if norm < self.tolerance else 0
        if self._waits >= self.patience:
            self.stop_reason = (
                f"converged at epoch {epoch + 1}: gradient norm {norm:.3g} < {self.tolerance:g} "
                f"for {self.patience} epoch(s)"
            )
            self.model.stop_training = True


def _finite(values) -> bool:
    return all(bool(tf.reduce_all(tf.math.is_finite(v))) for v in values)


def _train_stream(model, stream, epoch_pass, first, *, epochs, callbacks, backup, verbose):
    """Full-batch training over a stream; returns `(history, divergence reason or None)`.

    Each epoch is one optimizer step on the gradient of the last pass (`epoch_pass`; `first` is
    that of the model's state before any backup is restored), then a pass at the new parameters,
    whose gradient is the convergence test and the next step. The callbacks see `loss` (the mean
    loss before the step), `gradient_norm` (after it) and every parameter. A non-finite loss or
    gradient stops training before its step; a step that makes a parameter non-finite is undone
    (so a backup never holds a diverged state).
    """
    optimizer, variables = model.optimizer, model.trainable_variables
    if not optimizer.built:
        optimizer.build(variables)
    callbacks = [*callbacks, *([backup] if backup is not None else [])]
    try:
        initial = checkpoint.initial_epoch(callbacks, model)  # restores a --resume backup
    except checkpoint.BackupInUseError as error:
        raise UsageError(f"--checkpoint-dir: {error}") from None
    try:
        with _reading(stream):
            _, loss, gradients = first if initial == 0 else epoch_pass()
        callback_list = keras.callbacks.CallbackList(
            callbacks,
            add_history=True,
            add_progbar=verbose != 0,
            verbose=verbose,
            epochs=epochs,
            steps=1,
            model=model,
        )
        model.stop_training = False
        callback_list.on_train_begin()
        logs, diverged = {}, None
        for epoch in range(initial, epochs):
            callback_list.on_epoch_begin(epoch)
            callback_list.on_train_batch_begin(0)
            if not _finite([loss, *gradients]):
                what = "non-finite gradient" if _finite([loss]) else f"loss {float(loss)}"
                diverged = f"{what} at epoch {epoch + 1}"
                break
            before = [v.numpy() for v in [*variables, *optimizer.variables]]
            optimizer.apply(gradients, variables)
            if not _finite(variables):
                for variable, value in zip([*variables, *optimizer.variables], before, strict=True):
                    variable.assign(value)
                diverged = f"non-finite parameters at epoch {epoch + 1}"
                break
            logs = {"loss": float(loss)}
            with _reading(stream):
                _, loss, gradients = epoch_pass()
            logs["gradient_norm"] = float(tf.linalg.global_norm(gradients))
            logs.update({k: float(v) for k, v in model.parameter_logs().items()})
            callback_list.on_train_batch_end(0, logs)
            callback_list.on_epoch_end(epoch, logs)
            if model.stop_training:
                break
        optimizer.finalize_variable_values(variables)
        callback_list.on_train_end(logs)
    finally:
        # (A run that raised gets no on_train_end: its backup folder's lock is freed here.)
        checkpoint.release_backups(callbacks)
    return model.history, diverged


# ---------------------------------------------------------------- show
def _x_columns_of(path, record):
    """The feature columns recorded beside a saved model, if the record is of this very file."""
    if record is None:
        return None
    with open(path, "rb") as file:
        if hashlib.sha256(file.read()).hexdigest() != record.get("sha256"):
            return None
    return record.get("x")


def run_show(args, columns) -> int:
    _quiet_python_logging()
    path = args.model_path
    try:
        model = keras.models.load_model(path)
    except Exception as error:  # noqa: BLE001  Keras raises many types for a bad archive.
        raise UsageError(f"cannot load {path}: {error}") from None
    if not isinstance(model, keras_mle.MaximumLikelihoodModel):
        raise UsageError(f"{path} holds a {type(model).__name__}, not a keras_mle model")
    x_columns = _x_columns_of(path, args.record)
    params = model.params
    names = labels(params, model.parameter_roles, x_columns)
    flat = np.concatenate([np.ravel(np.asarray(v, np.float64)) for v in params.values()])
    bad = [
        f"{name} = {value}"
        for name, value in zip(names, flat, strict=True)
        if not np.isfinite(value)
    ]
    if bad:
        raise FitError(f"{path} holds non-finite parameters ({', '.join(bad)}): not a usable fit")
    if columns is not None:
        return _show_summary(model, path, columns, getattr(args, "cov_type", "nonrobust"))
    print(f"{type(model).__name__} ({path})")
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        print(f"optimizer: {type(optimizer).__name__}, {int(optimizer.iterations)} step(s)")
    width = max(12, *(len(name) + 2 for name in names))
    print(f"{'parameter':<{width}}{'estimate':>16}")
    for name, value in zip(names, flat, strict=True):
        print(f"{name:<{width}}{float(value):>16.8g}")
    return 0


def _show_summary(model, path, columns, cov_type="nonrobust"):
    if model.takes_targets != (columns.y is not None):
        wanted = "--x COL[,COL...] --y COL" if model.takes_targets else "one column (--y COL)"
        raise UsageError(f"{path} holds a {type(model).__name__}: give {wanted}")
    names = columns.x if columns.y is not None else None
    if isinstance(columns, keras_mle_cli.Stream):
        dataset = _stream_dataset(columns, keras_mle_cli.STREAM_BATCH_SIZE)
        with _reading(columns):
            result, _ = _summary(model, dataset, None, names, cov_type=cov_type)
    else:
        x, y = _arrays(columns)
        result, _ = _summary(model, x, y, names, cov_type=cov_type)
    print(result.summary())
    if not result.converged:
        raise FitError(
            f"{path} is not at the optimum for {columns.path}: "
            f"{result.warnings[0] if result.warnings else 'see the summary'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
