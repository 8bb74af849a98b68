"""The `keras-mle` argument parser: the commands, their options and the checks of each value.

Standard library only, and nothing is read here: a value that is wrong on its own (a negative
seed, an unknown optimizer, a separator of two characters) is refused by argparse with one line
`keras-mle fit: error: ...` and exit code 2; the checks that need the file system or the CSV
files are in `keras_mle_cli.checks`.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import math

from keras_mle_cli.options import (
    ADAPTIVE_LEARNING_RATE,
    CONVENTIONS,
    COV_TYPES,
    DEFAULT_EPOCHS,
    DEFAULT_LEARNING_RATE,
    MODELS,
    OPTIMIZERS,
    SEED_MAX,
    STREAM_BATCH_SIZE,
)

__all__ = ["SEPARATORS", "build_parser"]

SEPARATORS = {",": ",", ";": ";", "\t": "\t", "comma": ",", "semicolon": ";", "tab": "\t"}


class _Parser(argparse.ArgumentParser):
    """An `ArgumentParser` whose errors are one line: `keras-mle fit: error: ...`."""

    def error(self, message):
        if message.startswith("unrecognized arguments: ") and any(
            word.lower().endswith((".csv", ".tsv", ".txt")) for word in message.split()
        ):
            # The shell expanded an unquoted glob: --data took the first file, left the others.
            message += " (quote a glob given as --data: --data 'shards/part-*.csv')"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be in [0, {SEED_MAX}], got {value}")
    return value


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
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _separator(text):
    if text in SEPARATORS:
        return SEPARATORS[text]
    if text == "\\t":
        return "\t"
    if len(text) != 1 or text in '"\r\n' or text.isalnum() or text in ".-+":
        raise argparse.ArgumentTypeError(
            f"must be one character such as ',' ';' or 'tab', got {text!r}"
        )
    return text


def _version() -> str:
    """`keras_mle.__version__`, read from the package's source without importing it."""
    spec = importlib.util.find_spec("keras_mle")
    if spec is None or spec.origin is None:
        return "unknown"
    with open(spec.origin, encoding="utf-8") as file:
        tree = ast.parse(file.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets
        ):
            return ast.literal_eval(node.value)
    return "unknown"


def _add_csv_arguments(command, *, required):
    command.add_argument(
        "--data",
        required=required,
        metavar="FILE.csv",
        help="CSV file with a header row, or a quoted glob of CSV files with the same header "
        "('shards/part-*.csv'), streamed a batch at a time",
    )
    command.add_argument(
        "--sep",
        type=_separator,
        metavar="CHAR",
        help="field separator: ',' ';' or 'tab' (default: told from the header)",
    )
    command.add_argument(
        "--missing",
        choices=("error", "drop"),
        default="error",
        help="a row with an empty or NA cell in a used column: an error (default) or dropped",
    )


def _add_summary_arguments(command, *, needs):
    """The options of the inference summary: its conventions and covariance (`needs`: when)."""
    command.add_argument(
        "--convention",
        choices=CONVENTIONS,
        default=None,
        help=f"the summary's conventions{needs}: ols (t statistics, s^2 = RSS / (n - p); for "
        "linear and, through its least squares, gaussian-regression) or mle (z statistics, the "
        "inverse observed information) (default: ols for linear, mle for the others)",
    )
    command.add_argument(
        "--cov-type",
        choices=COV_TYPES,
        default="nonrobust",
        help=f"covariance of the summary's standard errors{needs}: HC2 and HC3 need OLS "
        "conventions, cluster needs --groups (default: nonrobust)",
    )
    command.add_argument(
        "--groups",
        metavar="COL",
        help="with --cov-type cluster: the column of --data holding each row's cluster label "
        "(a number; need not be a feature); one CSV file, not a glob",
    )


def _optimizer_defaults() -> str:
    """`sgd for linear and gaussian, nadam for ...`: each default optimizer and its models."""
    by_optimizer = {}
    for name, (_, optimizer) in MODELS.items():
        by_optimizer.setdefault(optimizer, []).append(name)
    return ", ".join(f"{optimizer} for {_and(names)}" for optimizer, names in by_optimizer.items())


def _and(names) -> str:
    """`a, b and c`."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def build_parser() -> argparse.ArgumentParser:
    """The `keras-mle` argument parser (nothing imported, nothing read)."""
    parser = _Parser(
        prog="keras-mle",
        description="Maximum-likelihood fitting with Keras.",
        allow_abbrev=False,
        epilog="Exit codes: 0 answer, 1 no trustworthy answer (diverged, not converged), "
        "2 bad input.",
    )
    parser.add_argument("--version", action="version", version=f"keras-mle {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo_command(commands)
    fit = _add_fit_command(commands)
    _add_fit_outputs(fit)
    _add_show_command(commands)
    return parser


def _add_demo_command(commands):
    demo = commands.add_parser(
        "demo",
        help="run the articles' four experiments: a line, a Gaussian sample and a Gaussian "
        "regression through fit() and every custom loop, and a network whose noise grows with "
        "x through fit()",
        allow_abbrev=False,
    )
    demo.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    demo.add_argument("--quick", action="store_true", help="fewer epochs, for smoke tests")


def _add_fit_command(commands):
    """`fit`'s model, data, columns and training options; returns its parser."""
    fit = commands.add_parser(
        "fit",
        help="fit a model to columns of a CSV file",
        allow_abbrev=False,
        description=(
            "Fit a model to columns of a CSV file by maximum likelihood: the data are whitened "
            "(adapt, float64) and training runs until converged (--epochs is a cap); print the "
            "inference summary (estimates, standard errors, tests). A fit that diverges or does "
            "not converge exits 1 and writes no --out."
        ),
    )
    fit.add_argument("model", choices=sorted(MODELS), help="the model to fit")
    _add_csv_arguments(fit, required=True)
    fit.add_argument(
        "--x",
        metavar="COL[,COL...]",
        help="feature column(s); for 'gaussian', the sample column (or give it as --y)",
    )
    fit.add_argument("--y", metavar="COL", help="target column")
    fit.add_argument(
        "--epochs",
        type=_positive_int,
        default=DEFAULT_EPOCHS,
        help=f"most epochs to run before giving up (default: {DEFAULT_EPOCHS})",
    )
    fit.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help="default: all rows (full batch); with a glob --data, the rows read at a time "
        f"(default: {STREAM_BATCH_SIZE}), each epoch still one step on all rows",
    )
    fit.add_argument(
        "--optimizer",
        type=str.lower,
        choices=OPTIMIZERS,
        metavar="NAME",
        help=f"a Keras optimizer: sgd, adam, ... (default: {_optimizer_defaults()})",
    )
    fit.add_argument(
        "--learning-rate",
        type=_positive_float,
        default=None,
        help=f"default: {DEFAULT_LEARNING_RATE['sgd']} for sgd, {ADAPTIVE_LEARNING_RATE} for "
        "the others",
    )
    fit.add_argument(
        "--seed", type=_seed, default=0, help=f"random seed in [0, {SEED_MAX}] (default: 0)"
    )
    _add_summary_arguments(fit, needs="")
    return fit


def _add_fit_outputs(fit):
    """`fit`'s outputs: TensorBoard logs, the backup folder, the saved model."""
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
    fit.add_argument(
        "--out",
        metavar="MODEL.keras",
        help="save the fitted model there (and the column names in MODEL.keras.json)",
    )
    fit.add_argument(
        "--verbose", type=int, choices=(0, 1), default=0, help="1: a progress bar per epoch"
    )


def _add_show_command(commands):
    show = commands.add_parser(
        "show",
        help="print a saved model's parameters (with --data: its inference summary)",
        allow_abbrev=False,
    )
    show.add_argument("model_path", metavar="MODEL.keras")
    _add_csv_arguments(show, required=False)
    show.add_argument(
        "--x", metavar="COL[,COL...]", help="feature column(s) (default: those it was fitted on)"
    )
    show.add_argument("--y", metavar="COL", help="target column (default: as fitted)")
    _add_summary_arguments(show, needs=" (with --data)")
