"""`keras-mle fit` on a glob `--data`: the files read a batch at a time, never held whole.

The files (a `keras_mle_cli.inputs.Stream`, checked by the front end) are read by
`keras_mle.data.csv_dataset` (float64), `adapt` takes one pass, and every epoch is one pass that
adds up the batches' gradients (each batch's mean gradient times its rows, in float64) into the
gradient of the mean loss over all rows, then one optimizer step: the full-batch steps of the
in-memory path, so the same iterates, stopping rule, exits and answer, whatever `--batch-size`
(the rows read at a time). Steps on each batch would not do: constant-rate mini-batch SGD ends
near the last batch's optimum, never within the gradient tolerance.

The epochs are driven by `keras_mle.epochs.run_epochs` (the package's one epoch driver: the
input-check callback first, the backup restored and its lock released, the logs); each epoch's
step goes through the model's input check (`model.train_input_check.guard`), so that a
non-finite loss or gradient is refused and reported by the model's input-check callback
(`model.divergence`, a `DivergenceWarning`) as in every other fit.
"""

from __future__ import annotations

import contextlib
import re
import warnings

import keras
import tensorflow as tf

import keras_mle
from keras_mle import callbacks as callbacks_lib
from keras_mle import checkpoint
from keras_mle.cli.results import check_summary, first_warning, summary, summary_options
from keras_mle.cli.training import (
    PATIENCE,
    backup_callbacks,
    check_backup_fits,
    check_training,
    gradient_tolerance,
    new_model,
    new_optimizer,
    print_fit,
    save,
    warning_lines,
)
from keras_mle.data.files import csv_cell_error
from keras_mle.epochs import run_epochs
from keras_mle_cli.errors import FitError, UsageError
from keras_mle_cli.options import STREAM_BATCH_SIZE
from keras_mle_cli.records import checkpoint_record

__all__ = [
    "FullBatchEpochs",
    "epoch_pass",
    "reading",
    "run_stream_fit",
    "stream_dataset",
]


def run_stream_fit(args, stream) -> int:
    """`keras-mle fit` on the files of `stream`, a batch at a time."""
    keras.utils.set_random_seed(args.seed)
    model = new_model(args, stream)
    dataset = stream_dataset(stream, args.batch_size or STREAM_BATCH_SIZE)
    with reading(stream):
        model.adapt(dataset)
    options = summary_options(args, stream)
    check_summary(model, options)
    model.compile(optimizer=new_optimizer(args))
    record = checkpoint_record(args, stream.x, stream.y)
    if args.resume:
        shape = (None,) if stream.y is None else (None, len(stream.x))
        check_backup_fits(args, model, record, lambda trial: trial.build(shape))
    epochs = FullBatchEpochs(model, stream, dataset)
    tolerance = gradient_tolerance(epochs.rows)
    convergence = callbacks_lib.ConvergenceStopping(
        parameter_tolerance=None,
        gradient_tolerance=tolerance,
        patience=PATIENCE,
        verbose=0,
        gradient_from_logs=True,
    )
    callbacks = [convergence]
    if args.logdir:
        # Parameters and the loss only: the statistics and images need the rows in memory.
        callbacks.append(callbacks_lib.ParameterTensorBoard(args.logdir, image_every=0))
    callbacks += backup_callbacks(args, record)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = run_epochs(
            model,
            epochs,
            epochs=args.epochs,
            steps=1,
            full_batch=True,
            callbacks=callbacks,
            verbose=args.verbose,
            restore=epochs.restore,
        )
    check_training(args, model, convergence, history, tolerance)
    with reading(stream):
        result = summary(model, dataset, **options)
    if not result.converged:
        raise FitError(f"not converged: {first_warning(result)}; nothing saved to --out")
    warning_lines(caught)
    if args.out:
        save(model, args.out, record)
    if stream.lines > epochs.rows:
        print(f"dropped {stream.lines - epochs.rows} row(s) with a missing value")
    source = stream.describe()
    return print_fit(args, model, epochs.rows, source, convergence, history, result)


def stream_dataset(stream, batch_size):
    """The float64 `keras_mle.data.csv_dataset` of a `Stream`, in the elements `fit` reads."""
    with reading(stream):
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
def reading(stream):
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
    cell = csv_cell_error(error)
    if cell is not None:
        return f"--data {stream.pattern!r}: {cell}"
    message = getattr(error, "message", None) or str(error)
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", message)
    message = re.sub(r"Error in user-defined function passed to .*? iterator: \S+: ", "", message)
    message = re.sub(r"\s*\[Op:\w+\].*$", "", message.split("\n")[0]).strip()
    found = re.search(r"\[column\] \[(.*?)\] \[has a missing or NaN value", message)
    if found:
        names = ", ".join(repr(name) for name in found.group(1).split())
        return (
            f"--data {stream.pattern!r}: a row has a missing value (an empty, NA or NaN cell) in "
            f"column {names} (--missing drop skips such rows)"
        )
    hint = ""
    if re.search(r"not a valid \w+: *(?:na|n/a|null|#n/a)$", message, re.IGNORECASE):
        hint = "; with a glob --data only an empty cell is a missing value"
    return (
        f"--data {stream.pattern!r}: cannot read a row: {message}{hint} (give one of the files as "
        "--data to see its line)"
    )


def epoch_pass(model, dataset):
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


def _checked_step(model):
    """A compiled `step(loss, gradients)`: one optimizer step, through the model's input check.

    The step is applied only if the loss and every gradient are finite (and no earlier step of
    the epoch was refused); a refused step is recorded as a divergence, for the input-check
    callback to act on at the epoch's end.
    """
    optimizer, variables = model.optimizer, model.trainable_variables
    check = model.train_input_check

    @tf.function
    def step(loss, gradients):
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in [loss, *gradients]])
        check.guard(
            None,
            None,
            None,
            finite,
            local=lambda: None,
            apply=lambda g: optimizer.apply(g, variables),
            gradients=gradients,
            examine=False,  # (the rows were checked as they were read)
        )

    return step


class FullBatchEpochs:
    """The `run_epoch` of `keras_mle.epochs.run_epochs` for a stream: one full-batch step an epoch.

    Each epoch is one optimizer step on the gradient of the last pass, then a pass at the new
    parameters, whose gradient is the convergence test and the next step. The logs hold `loss`
    (the mean loss before the step) and `gradient_norm` (after it); a refused step leaves the
    parameters, so its own gradient is the one logged.

    Args:
        model: The adapted, compiled model.
        stream: The `Stream` read (for its error messages).
        dataset: Its `stream_dataset`.

    Attributes:
        rows: The rows of the stream (after `--missing drop`), counted by the first pass.
    """

    def __init__(self, model, stream, dataset):
        self.model = model
        self.stream = stream
        self._pass = epoch_pass(model, dataset)
        self._step = _checked_step(model)
        rows, self._loss, self._gradients = self._read()
        self.rows = int(round(float(rows)))

    def _read(self):
        with reading(self.stream):
            return self._pass()

    def restore(self, callbacks, model, initial_epoch) -> int:
        """`keras_mle.checkpoint.initial_epoch`, a folder in use being a usage error.

        A restored backup moves the parameters: the next step needs a pass at them.
        """
        try:
            epoch = checkpoint.initial_epoch(callbacks, model, initial_epoch)
        except checkpoint.BackupInUseError as error:
            raise UsageError(f"--checkpoint-dir: {error}") from None
        if epoch > 0:
            _, self._loss, self._gradients = self._read()
        return epoch

    def __call__(self, epoch, callback_list) -> dict:
        callback_list.on_train_batch_begin(0)
        loss = self._loss
        self._step(loss, self._gradients)
        if not self.model.train_input_check.refused():
            _, self._loss, self._gradients = self._read()
        logs = {"loss": loss, "gradient_norm": tf.linalg.global_norm(self._gradients)}
        callback_list.on_train_batch_end(0, logs)
        return logs
