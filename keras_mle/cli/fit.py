"""`keras-mle fit` on one CSV file: the columns in memory, `keras_mle.loops.train` full batch.

The model is `adapt`ed to the data (a float64 whitening, so that the default optimizer
converges in a few to a few hundred full-batch steps whatever the units), then trained by
`keras_mle.loops.train` (one step per epoch on all rows unless `--batch-size`) under
`keras_mle.callbacks.ConvergenceStopping`'s gradient test. A glob `--data` goes to
`keras_mle.cli.stream`.
"""

from __future__ import annotations

import warnings

import keras

from keras_mle import callbacks as callbacks_lib
from keras_mle import checkpoint, loops
from keras_mle.cli.results import arrays, check_summary, first_warning, summary, summary_options
from keras_mle.cli.stream import run_stream_fit
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
from keras_mle_cli.errors import FitError, UsageError
from keras_mle_cli.inputs import Stream
from keras_mle_cli.records import checkpoint_record

__all__ = ["run_fit"]


def run_fit(args, columns) -> int:
    """`keras-mle fit` on the `Columns` (or the `Stream`) the front end checked."""
    if isinstance(columns, Stream):
        return run_stream_fit(args, columns)
    x, y = arrays(columns)
    keras.utils.set_random_seed(args.seed)
    model = new_model(args, columns)
    try:
        model.adapt(x, y)
    except (TypeError, ValueError) as error:
        raise UsageError(f"{columns.path}: {error}") from None
    options = summary_options(args, columns)
    check_summary(model, options)
    record = checkpoint_record(args, columns.x, columns.y)
    if args.resume:
        check_backup_fits(args, model, record, lambda trial: trial.adapt(x, y))
    data = x if y is None else (x, y)
    tolerance = gradient_tolerance(len(x))
    convergence = callbacks_lib.ConvergenceStopping(
        data,
        parameter_tolerance=None,
        gradient_tolerance=tolerance,
        patience=PATIENCE,
        verbose=0,
    )
    callbacks = [convergence]
    if args.logdir:
        image_every = max(10, min(args.epochs, 1000) // 10)
        callbacks.append(
            callbacks_lib.ParameterTensorBoard(
                args.logdir, data, image_every=image_every, target_name=columns.y
            )
        )
    callbacks += backup_callbacks(args, record)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = _train(model, x, y, args, callbacks)
    check_training(args, model, convergence, history, tolerance)
    result = summary(model, x, y, **options)
    if not result.converged:
        raise FitError(f"not converged: {first_warning(result)}; nothing saved to --out")
    warning_lines(caught)
    if args.out:
        save(model, args.out, record)
    if columns.dropped_lines:
        print(
            f"dropped {len(columns.dropped_lines)} row(s) with a missing value "
            f"(lines {_line_list(columns.dropped_lines)})"
        )
    return print_fit(args, model, len(x), columns.describe(), convergence, history, result)


def _train(model, x, y, args, callbacks):
    """`keras_mle.loops.train`, with a backup folder in use by another run as a usage error."""
    try:
        return loops.train(
            model,
            x,
            y,
            epochs=args.epochs,
            batch_size=args.batch_size or len(x),
            optimizer=new_optimizer(args),
            mode="function",
            callbacks=callbacks,
            verbose=args.verbose,
        )
    except checkpoint.BackupInUseError as error:
        raise UsageError(f"--checkpoint-dir: {error}") from None


def _line_list(lines, most=5):
    shown = ", ".join(str(line) for line in lines[:most])
    return shown + (", ..." if len(lines) > most else "")
