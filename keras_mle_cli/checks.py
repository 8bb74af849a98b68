"""The checks of each command that need no TensorFlow; each returns what `keras_mle.cli` reads.

`CHECKS[command](args)` validates the parsed arguments against the file system and reads or
scans `--data`: it returns the `Columns` or the `Stream` of the data (`None` when the command
has none), or raises a one-line `UsageError`. It may complete `args` (the default optimizer
and learning rate, `show`'s recorded columns).
"""

from __future__ import annotations

import os

from keras_mle_cli.csv_files import is_glob, read_columns, scan_files
from keras_mle_cli.errors import UsageError
from keras_mle_cli.inputs import Columns, Stream
from keras_mle_cli.options import MODELS, learning_rate
from keras_mle_cli.paths import check_output_dir, check_output_file, check_resume
from keras_mle_cli.records import model_record_path, read_json

__all__ = [
    "CHECKS",
    "check_demo",
    "check_fit",
    "check_show",
    "check_summary_options",
    "column_names",
    "read_inputs",
]


def column_names(args, *, model):
    """`(x_columns, y_column)` from `--x`/`--y`: one sample column for `gaussian`."""
    x = [c.strip() for c in args.x.split(",")] if args.x else []
    if any(not c for c in x):
        raise UsageError(f"--x has an empty column name: {args.x!r}")
    y = args.y.strip() if args.y else None
    if args.y is not None and not y:
        raise UsageError("--y is an empty column name")
    if model == "gaussian":
        names = x + ([y] if y else [])
        if len(names) != 1:
            raise UsageError("gaussian fits one column: give it as --y COL (or --x COL)")
        return names, None
    if not x or not y:
        raise UsageError(f"{model} needs --x COL[,COL...] and --y COL")
    used = [*x, y]
    twice = next((c for c in used if used.count(c) > 1), None)
    if twice is not None:
        raise UsageError(f"column {twice!r} is given twice in --x/--y")
    return x, y


def check_summary_options(args, x, y) -> None:
    """Refuses `--groups` without `--cov-type cluster`, and a cluster covariance without groups.

    The groups are a column of one `--data` file (read with the model's columns, so that
    `--missing drop` drops the same rows), other than the target `y`; the model's `x` columns
    may serve.
    """
    groups = args.groups
    if groups is not None and args.cov_type != "cluster":
        raise UsageError(f"--groups is only used with --cov-type cluster, not {args.cov_type}")
    if args.cov_type != "cluster":
        return
    if groups is None:
        raise UsageError("--cov-type cluster needs --groups COL, the column of cluster labels")
    args.groups = groups = groups.strip()
    if not groups:
        raise UsageError("--groups is an empty column name")
    if groups == y or (y is None and groups in x):
        raise UsageError(
            f"--groups {groups} is the column fitted; give the column of cluster labels"
        )
    if is_glob(args.data):
        raise UsageError(
            f"--cov-type cluster reads --groups {groups} into memory: give one CSV file as "
            f"--data, not the glob {args.data!r}"
        )


def read_inputs(args, x, y):
    """The `Columns` of a `--data` file, or the `Stream` of a glob (checked, not read).

    With `--groups`, its column is read too: `Columns.values[args.groups]`.
    """
    columns = [*x, *([y] if y else [])]
    if args.groups is not None and args.groups not in columns:
        columns.append(args.groups)
    if is_glob(args.data):
        files, sep, lines = scan_files(args.data, columns, sep=args.sep)
        return Stream(args.data, files, sep, x, y, args.missing, lines)
    values, dropped = read_columns(args.data, columns, sep=args.sep, missing=args.missing)
    return Columns(args.data, x, y, values, dropped)


def check_demo(args):
    """`keras-mle demo`: `--out` is not a file."""
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out {args.out} is a file, not a folder")
    return None


def check_fit(args):
    """Every check of `keras-mle fit` that needs no TensorFlow; returns the data's inputs."""
    if args.out is not None:
        check_output_file("--out", args.out, ".keras")
    if args.logdir is not None:
        check_output_dir("--logdir", args.logdir)
    if args.checkpoint_dir is not None:
        check_output_dir("--checkpoint-dir", args.checkpoint_dir)
    if args.resume and not args.checkpoint_dir:
        raise UsageError("--resume needs --checkpoint-dir, the folder to resume from")
    args.optimizer = args.optimizer or MODELS[args.model][1]
    if args.learning_rate is None:
        args.learning_rate = learning_rate(args.optimizer)
    x, y = column_names(args, model=args.model)
    check_summary_options(args, x, y)
    if args.resume:
        check_resume(args, x, y)
    return read_inputs(args, x, y)


def check_show(args):
    """`keras-mle show`: the model file exists; with `--data`, its columns are read."""
    path = args.model_path
    if not os.path.isfile(path):
        raise UsageError(f"no such file: {path}")
    args.record = read_json(model_record_path(path))
    if args.data is None:
        if args.x or args.y:
            raise UsageError("--x and --y need --data, the file to compute the summary on")
        for option, value in (
            ("--cov-type", args.cov_type != "nonrobust"),
            ("--convention", args.convention is not None),
            ("--groups", args.groups is not None),
        ):
            if value:
                raise UsageError(f"{option} needs --data, the file to compute the summary on")
        return None
    if not args.x and not args.y and args.record is not None:
        args.x = ",".join(args.record.get("x") or [])
        args.y = args.record.get("y")
    if not args.x and not args.y:
        raise UsageError(f"give the columns of --data: --x COL[,COL...] --y COL for {path}")
    model = "gaussian" if not (args.x and args.y) else "linear"
    x, y = column_names(args, model=model)
    check_summary_options(args, x, y)
    return read_inputs(args, x, y)


#: The checks of each command, by name.
CHECKS = {"demo": check_demo, "fit": check_fit, "show": check_show}
