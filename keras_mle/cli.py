"""The `keras-mle` command line: `keras-mle demo --out DIR` (more subcommands register here)."""

from __future__ import annotations

import argparse
import functools
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-mle", description="Maximum-likelihood fitting with Keras."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="run the articles' two experiments through fit() and the custom loops"
    )
    demo.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    demo.add_argument("--quick", action="store_true", help="fewer epochs, for smoke tests")
    demo.set_defaults(handler=_run_demo)
    _add_fit_parser(commands)
    _add_show_parser(commands)
    return parser


def _run_demo(args) -> int:
    from keras_mle import demo

    demo.run(args.out, quick=args.quick)
    return 0


# ---------------------------------------------------------------- keras-mle fit / show
#: The models `keras-mle fit` trains, by command-line name.
FIT_MODELS = {
    "linear": "LinearRegression",
    "gaussian": "GaussianMLE",
    "gaussian-regression": "GaussianRegression",
}


class UsageError(Exception):
    """A bad input of `keras-mle fit`/`show`: reported on one line, exit code 2."""


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _add_fit_parser(commands):
    fit = commands.add_parser(
        "fit",
        help="fit a model to columns of a CSV file",
        description=(
            "Fit a model to columns of a CSV file (with a header row) by maximum likelihood, "
            "with a progress bar, TensorBoard logs and checkpoints; print the fitted parameters."
        ),
    )
    fit.add_argument("model", choices=sorted(FIT_MODELS), help="the model to fit")
    fit.add_argument("--data", required=True, metavar="FILE.csv", help="CSV file with a header")
    fit.add_argument(
        "--x",
        metavar="COL[,COL...]",
        help="feature column(s); for 'gaussian', the sample column (or give it as --y)",
    )
    fit.add_argument("--y", metavar="COL", help="target column")
    fit.add_argument("--epochs", type=_positive_int, default=500, help="default: 500")
    fit.add_argument(
        "--batch-size", type=_positive_int, default=None, help="default: all rows (full batch)"
    )
    fit.add_argument("--optimizer", default="adam", help="a Keras optimizer name (default: adam)")
    fit.add_argument("--learning-rate", type=_positive_float, default=0.05, help="default: 0.05")
    fit.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    fit.add_argument("--logdir", metavar="DIR", help="write TensorBoard logs under DIR")
    fit.add_argument(
        "--checkpoint-dir",
        metavar="DIR",
        help="back up the training state (weights, optimizer) in DIR",
    )
    fit.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        default=10,
        metavar="N",
        help="epochs between two backups; the last epoch is always backed up (default: 10)",
    )
    fit.add_argument(
        "--resume", action="store_true", help="continue from the backup in --checkpoint-dir"
    )
    fit.add_argument("--out", metavar="MODEL.keras", help="save the fitted model there")
    fit.add_argument(
        "--verbose", type=int, choices=(0, 1, 2), default=1, help="0: quiet, 1: progress bar"
    )
    fit.set_defaults(handler=_run_fit)


def _add_show_parser(commands):
    show = commands.add_parser(
        "show",
        help="print a saved model's type and parameters (with --data: its inference summary)",
    )
    show.add_argument("model_path", metavar="MODEL.keras")
    show.add_argument(
        "--data", metavar="FILE.csv", help="the data it was fitted on: print the summary table"
    )
    show.add_argument("--x", metavar="COL[,COL...]", help="feature column(s) of --data")
    show.add_argument("--y", metavar="COL", help="target column of --data")
    show.set_defaults(handler=_run_show)


def _reports_usage_errors(run):
    """Turns a `UsageError` into one line on stderr and exit code 2."""

    @functools.wraps(run)
    def handler(args):
        try:
            return run(args)
        except UsageError as error:
            message = " ".join(str(error).split())
            print(f"keras-mle {args.command}: error: {message}", file=sys.stderr)
            return 2

    return handler


def read_csv_columns(path, columns) -> dict:
    """Reads numeric `columns` of a CSV file with a header row, as float64 arrays.

    Raises `UsageError` for a missing or unreadable file, an empty file, a file without data
    rows, a missing column, a short row or a cell that is not a number.
    """
    import csv

    import numpy as np

    try:
        with open(path, newline="") as file:
            rows = list(csv.reader(file))
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or error
        raise UsageError(f"cannot read {path}: {reason}") from None
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise UsageError(f"{path} is empty")
    header = [name.strip() for name in rows[0]]
    if len(rows) == 1:
        raise UsageError(f"{path} has a header but no data rows")
    index = {}
    for column in columns:
        if column not in header:
            raise UsageError(
                f"column {column!r} not found in {path} (columns: {', '.join(header)})"
            )
        index[column] = header.index(column)
    values = {column: np.empty(len(rows) - 1) for column in columns}
    for line, row in enumerate(rows[1:], start=2):
        for column, position in index.items():
            cell = row[position].strip() if position < len(row) else ""
            try:
                values[column][line - 2] = float(cell)
            except ValueError:
                raise UsageError(
                    f"{path} line {line}, column {column!r}: {cell!r} is not a number"
                ) from None
    return values


def _fit_inputs(args):
    """The model class name, x and y from the CSV file, all validated (no output written)."""
    import numpy as np

    x_columns = [c.strip() for c in args.x.split(",")] if args.x else []
    if any(not c for c in x_columns):
        raise UsageError(f"--x has an empty column name: {args.x!r}")
    if args.model == "gaussian":
        columns = x_columns + ([args.y] if args.y else [])
        if len(columns) != 1:
            raise UsageError("gaussian fits one column: give it as --y COL (or --x COL)")
        data = read_csv_columns(args.data, columns)
        return data[columns[0]], None
    if not x_columns or not args.y:
        raise UsageError(f"{args.model} needs --x COL[,COL...] and --y COL")
    data = read_csv_columns(args.data, [*x_columns, args.y])
    x = np.stack([data[c] for c in x_columns], axis=1)
    return x, data[args.y]


@_reports_usage_errors
def _run_fit(args) -> int:
    if args.out is not None and not args.out.endswith(".keras"):
        raise UsageError(f"--out must end in .keras, got {args.out!r}")
    if args.resume and not args.checkpoint_dir:
        raise UsageError("--resume needs --checkpoint-dir, the folder to resume from")
    x, y = _fit_inputs(args)

    import keras
    import numpy as np

    import keras_mle
    from keras_mle import callbacks as callbacks_lib
    from keras_mle import checkpoint

    keras.utils.set_random_seed(args.seed)
    model = getattr(keras_mle, FIT_MODELS[args.model])()
    try:
        x, y, _ = model.check_data(
            x.astype(np.float32), None if y is None else y.astype(np.float32)
        )
        optimizer = keras.optimizers.get(args.optimizer)
    except (TypeError, ValueError) as error:
        raise UsageError(error) from None
    optimizer.learning_rate = args.learning_rate
    batch_size = args.batch_size or len(x)

    callbacks = []
    if args.logdir:
        image_every = max(10, args.epochs // 10)
        data = x if y is None else (x, y)
        callbacks.append(
            callbacks_lib.ParameterTensorBoard(args.logdir, data, image_every=image_every)
        )
    history = keras_mle.loops.train(
        model,
        x,
        y,
        epochs=args.epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        mode="function",
        callbacks=callbacks,
        verbose=args.verbose,
        checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
    )
    if args.out:
        checkpoint.save_model_atomic(model, args.out)
    reference = model.closed_form(x, y)
    epochs_run = len(history.epoch)
    print(
        f"{type(model).__name__} on {len(x)} rows of {args.data}, {epochs_run} epoch(s) run, "
        f"{int(model.optimizer.iterations)} optimizer step(s) in all"
    )
    _print_parameters(model.params, reference)
    if args.logdir:
        print(f"TensorBoard logs: tensorboard --logdir {args.logdir}")
    if args.checkpoint_dir:
        print(f"checkpoint: {args.checkpoint_dir}")
    if args.out:
        print(f"saved model: {args.out}")
    return 0


def _print_parameters(params, reference=None):
    import numpy as np

    header = f"{'parameter':<12}{'estimate':>16}"
    if reference is not None:
        header += f"{'closed form':>16}"
    print(header)
    for name, value in params.items():
        values = np.ravel(value)
        refs = None if reference is None else np.ravel(reference[name])
        for i, v in enumerate(values):
            label = name if values.size == 1 else f"{name}[{i}]"
            line = f"{label:<12}{float(v):>16.8g}"
            if refs is not None:
                line += f"{float(refs[i]):>16.8g}"
            print(line)


@_reports_usage_errors
def _run_show(args) -> int:
    path = args.model_path
    if not os.path.isfile(path):
        raise UsageError(f"no such file: {path}")
    import keras

    import keras_mle

    try:
        model = keras.models.load_model(path)
    except Exception as error:  # noqa: BLE001  Keras raises many types for a bad archive.
        raise UsageError(f"cannot load {path}: {error}") from None
    if not isinstance(model, keras_mle.MaximumLikelihoodModel):
        raise UsageError(f"{path} holds a {type(model).__name__}, not a keras_mle model")
    if args.data is not None:
        # `_fit_inputs` reads one column for a model of a sample, x and y columns otherwise.
        args.model = "linear" if model.takes_targets else "gaussian"
        x, y = _fit_inputs(args)
        try:
            result = keras_mle.inference(model, x, y)
        except (TypeError, ValueError) as error:
            raise UsageError(error) from None
        print(result.summary())
        return 0
    print(f"{type(model).__name__} ({path})")
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        print(f"optimizer: {type(optimizer).__name__}, {int(optimizer.iterations)} step(s)")
    _print_parameters(model.params)
    return 0


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
