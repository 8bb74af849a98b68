"""The `keras-mle` command line's front end: arguments, paths and CSV files, without TensorFlow.

`keras-mle --help`, `--version` and every argument, path or CSV error are answered from this
module alone, in a fraction of a second: it imports neither TensorFlow nor the `keras_mle`
package (whose `__init__` imports TensorFlow, so that saved models load in any process). Once the
inputs are valid it imports `keras_mle.cli`, the half that fits and reports, with TensorFlow's
start-up log lines silenced, and hands it the parsed arguments and the columns it read.

`--data` names one CSV file, read here into memory (`Columns`), or a glob of CSV files
(`'shards/part-*.csv'`, quoted), checked here without holding their rows (`Stream`: the files
exist, are UTF-8 with the same header, the columns are there) and streamed by `keras_mle.cli`.

Exit codes: 0 for an answer, 1 when there is no trustworthy answer (the fit diverged or did not
converge, a saved model holds non-finite parameters), 2 for bad input (one line on stderr,
nothing written).
"""

from __future__ import annotations

import argparse
import ast
import codecs
import csv
import glob
import importlib
import importlib.util
import io
import json
import math
import os
import re
import sys
import tempfile

__all__ = ["main", "build_parser", "read_columns", "scan_files", "UsageError", "FitError"]

#: The models `keras-mle fit` trains, by command-line name: the class and the default optimizer.
#: After `adapt` the squared-error Hessian is 2 I, so SGD(0.5) solves `linear` in one step and
#: `gaussian` in a few; the Gaussian regression's curvature in the slopes is 1 / (1 - R^2), which
#: SGD at a fixed rate cannot follow for every R^2: it gets Nadam (about 130 to 180 full-batch
#: steps for R^2 from 0.5 to 0.99, where Adam(0.1) took 300 to over 3000).
MODELS = {
    "linear": ("LinearRegression", "sgd"),
    "gaussian": ("GaussianMLE", "sgd"),
    "gaussian-regression": ("GaussianRegression", "nadam"),
}
#: Optimizers `--optimizer` accepts (Keras names).
OPTIMIZERS = (
    "adadelta",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "ftrl",
    "lion",
    "nadam",
    "rmsprop",
    "sgd",
)
#: Default learning rate of an optimizer: SGD on adapted (whitened) data, or an adaptive one.
DEFAULT_LEARNING_RATE = {"sgd": 0.5}
ADAPTIVE_LEARNING_RATE = 0.1
DEFAULT_EPOCHS = 5000
#: File in `--checkpoint-dir` recording what the backup is a fit of (checked by `--resume`).
CHECKPOINT_RECORD = "keras_mle_cli.json"
#: Cells read as a missing value (compared in lower case, after stripping blanks).
MISSING_CELLS = frozenset({"", "na", "n/a", "nan", "null", "#n/a"})
SEPARATORS = {",": ",", ";": ";", "\t": "\t", "comma": ",", "semicolon": ";", "tab": "\t"}
SEED_MAX = 2**32 - 1
#: Rows a streamed fit (`--data` a glob) reads at a time when `--batch-size` is not given.
STREAM_BATCH_SIZE = 65536
#: Bytes of a streamed file the checks read at a time (whole lines: a longer line is read whole).
SCAN_CHUNK = 1 << 24
#: A blank (or whitespace-only) line in a block of whole lines, each ending in `\n`.
_BLANK_LINE = re.compile(rb"(?:\A|\n)[ \t\r\f\v]*\n")


class UsageError(Exception):
    """Bad input: reported on one line, exit code 2, nothing written."""


class FitError(Exception):
    """No trustworthy answer (divergence, no convergence, a non-finite model): exit code 1."""


# ---------------------------------------------------------------- arguments
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

    demo = commands.add_parser(
        "demo",
        help="run the articles' two experiments through fit() and the custom loops",
        allow_abbrev=False,
    )
    demo.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    demo.add_argument("--quick", action="store_true", help="fewer epochs, for smoke tests")
    demo.set_defaults(check=_check_demo, run="run_demo")

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
        help="a Keras optimizer: sgd, adam, ... (default: sgd for linear and gaussian, nadam for "
        "gaussian-regression)",
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
    fit.set_defaults(check=_check_fit, run="run_fit")

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
    show.add_argument(
        "--cov-type",
        choices=("nonrobust", "HC0", "HC1", "HC2", "HC3"),
        default="nonrobust",
        help="covariance of the summary's standard errors (with --data; default: nonrobust)",
    )
    show.set_defaults(check=_check_show, run="run_show")
    return parser


# ---------------------------------------------------------------- paths
def _check_output_file(option, path, suffix):
    if not path.endswith(suffix):
        raise UsageError(f"{option} must end in {suffix}, got {path!r}")
    if os.path.isdir(path):
        raise UsageError(f"{option} {path} is a folder, not a file")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"{option} {path}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: cannot write in the folder {parent}")


def _check_output_dir(option, path):
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{option} {path} is a file, not a folder")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"{option} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: cannot write in {existing}")


def read_json(path):
    """The JSON object in `path`, or `None` when the file does not exist or is not one."""
    try:
        with open(path, encoding="utf-8") as file:
            value = json.load(file)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_json_atomic(path, value) -> None:
    """Writes `value` as JSON to `path` through a temporary file and `os.replace`."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(value, file, indent=1)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


# ---------------------------------------------------------------- CSV files
class Columns:
    """Numeric columns read from a CSV file: `values[name]` is a list of floats per used column.

    Attributes:
        path: The file.
        x: Feature column names (for a model of a sample: the one sample column).
        y: Target column name, or `None`.
        values: `{name: [float, ...]}`, one entry per row kept.
        dropped_lines: Line numbers of the rows dropped by `--missing drop`.
    """

    def __init__(self, path, x, y, values, dropped_lines):
        self.path = path
        self.x = list(x)
        self.y = y
        self.values = values
        self.dropped_lines = dropped_lines

    @property
    def rows(self) -> int:
        return len(self.values[self.x[0]])


def _detect_separator(path, text):
    header = next((line for line in text.splitlines() if line.strip()), "")
    found = [sep for sep in (",", ";", "\t") if sep in header]
    if len(found) > 1:
        names = " and ".join(repr(s).replace("'\\t'", "tab") for s in found)
        raise UsageError(f"{path}: cannot tell the separator (the header has {names}): give --sep")
    return found[0] if found else ","


def read_columns(path, columns, *, sep=None, missing="error"):
    """Reads the numeric `columns` of a CSV file with a header row; `{name: [float, ...]}`.

    A UTF-8 byte order mark is skipped; the separator is `sep`, or the one of `,` `;` tab found
    in the header. A missing value (an empty cell, `NA`, `NaN`, `null`, `#N/A`) in a used column
    is an error naming its line and column, or with `missing="drop"` drops the row.

    Returns:
        `(values, dropped_lines)`.

    Raises:
        UsageError: an unreadable or non-UTF-8 file, no data rows, a duplicate or missing column
            name, a row with another number of fields than the header, a cell that is not a
            finite number, a field over csv's size limit.
    """
    try:
        with open(path, encoding="utf-8-sig", newline="") as file:
            text = file.read()
    except UnicodeDecodeError as error:
        raise UsageError(
            f"{path} is not UTF-8 text (byte {error.start}): save it as CSV UTF-8"
        ) from None
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    sep = sep or _detect_separator(path, text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    try:
        header = next((row for row in reader if any(cell.strip() for cell in row)), None)
        if header is None:
            raise UsageError(f"{path} is empty")
        header = [name.strip() for name in header]
        positions = _column_positions(path, header, columns)
        values = {column: [] for column in columns}
        dropped = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            line = reader.line_num
            if len(row) != len(header) and not (
                len(row) > len(header) and not any(c.strip() for c in row[len(header) :])
            ):
                raise UsageError(
                    f"{path} line {line}: {len(row)} field(s), the header has {len(header)}"
                )
            parsed = _parse_row(path, line, row, positions, sep)
            if parsed is None:
                if missing == "error":
                    column = next(c for c, p in positions.items() if _is_missing(row[p]))
                    raise UsageError(
                        f"{path} line {line}, column {column!r}: missing value "
                        "(--missing drop skips such rows)"
                    )
                dropped.append(line)
                continue
            for column, value in parsed.items():
                values[column].append(value)
    except csv.Error as error:
        raise UsageError(f"{path} line {reader.line_num}: {error}") from None
    kept = len(values[columns[0]])
    if kept == 0:
        if dropped:
            raise UsageError(f"{path}: every row has a missing value in a used column")
        raise UsageError(f"{path} has a header but no data rows")
    return values, dropped


def _column_positions(path, header, columns):
    seen = {}
    for position, name in enumerate(header):
        if name and name in seen:
            raise UsageError(
                f"{path}: column {name!r} appears twice in the header "
                f"(fields {seen[name] + 1} and {position + 1})"
            )
        seen[name] = position
    positions = {}
    for column in columns:
        if column not in seen:
            raise UsageError(
                f"column {column!r} not found in {path} (columns: {', '.join(header)})"
            )
        positions[column] = seen[column]
    return positions


def _is_missing(cell):
    return cell.strip().lower() in MISSING_CELLS


def _parse_row(path, line, row, positions, sep):
    """`{column: float}`, or `None` when a used cell is missing."""
    parsed = {}
    for column, position in positions.items():
        cell = row[position].strip()
        if _is_missing(cell):
            return None
        try:
            value = float(cell)
        except ValueError:
            hint = ""
            if "," in cell and sep != ",":
                hint = " (write decimals with '.', not ',')"
            raise UsageError(
                f"{path} line {line}, column {column!r}: {cell!r} is not a number{hint}"
            ) from None
        if not math.isfinite(value):
            raise UsageError(
                f"{path} line {line}, column {column!r}: {cell!r} is not a finite number"
            )
        parsed[column] = value
    return parsed


class Stream:
    """CSV files named by a glob `--data`, checked but not read into memory.

    `keras_mle.cli` reads them a batch at a time (`keras_mle.data.csv_dataset`).

    Attributes:
        pattern: The glob as given (`path`, as `Columns.path`, for messages).
        files: The files it matches, sorted: the order they are read in.
        sep: The field separator.
        x: Feature column names (for a model of a sample: the one sample column).
        y: Target column name, or `None`.
        missing: `"error"` or `"drop"` (`--missing`).
        lines: Data lines in all the files: the rows, before `--missing drop`.
    """

    def __init__(self, pattern, files, sep, x, y, missing, lines):
        self.pattern = pattern
        self.files = list(files)
        self.sep = sep
        self.x = list(x)
        self.y = y
        self.missing = missing
        self.lines = lines

    @property
    def path(self) -> str:
        return self.pattern

    def describe(self) -> str:
        """`'shards/*.csv' (3 files)`, for messages."""
        count = len(self.files)
        return f"{self.pattern!r} ({count} file{'s' if count > 1 else ''})"


def is_glob(path) -> bool:
    """Whether `--data` is a glob to stream: wildcards (`*`, `?`, `[`) and no file of that name."""
    return any(c in path for c in "*?[") and not os.path.exists(path)


def _scan_file(path):
    """`(header_line, data_lines)` of a CSV file, read in blocks of whole lines.

    The whole file is checked, one block at a time: UTF-8 throughout, no blank line (the
    streamed reader takes every line after the header as a row).

    Raises:
        UsageError: an unreadable, empty or non-UTF-8 file, a blank line.
    """
    header, newlines, offset, rest = None, 0, 0, b""
    try:
        with open(path, "rb") as file:
            while True:
                chunk = file.read(SCAN_CHUNK)
                block = rest + chunk
                if chunk:
                    cut = block.rfind(b"\n") + 1
                    block, rest = block[:cut], block[cut:]
                else:
                    rest = b""
                    if block and not block.endswith(b"\n"):
                        block += b"\n"  # the last line, unterminated
                try:
                    block.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise UsageError(
                        f"{path} is not UTF-8 text (byte {offset + error.start}): "
                        "save it as CSV UTF-8"
                    ) from None
                if header is None and block:
                    header = block.split(b"\n", 1)[0].removeprefix(codecs.BOM_UTF8)
                blank = _BLANK_LINE.search(block)
                if blank is not None:
                    # (A match past the block's start begins with the previous line's end.)
                    start = blank.start() + (blank.start() > 0)
                    line = newlines + block.count(b"\n", 0, start) + 1
                    raise UsageError(
                        f"{path} line {line} is blank: remove it (a glob --data reads every "
                        "line after the header as a row)"
                    )
                newlines += block.count(b"\n")
                offset += len(block)
                if not chunk:
                    break
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    if header is None:
        raise UsageError(f"{path} is empty")
    return header.decode("utf-8").rstrip("\r"), max(newlines - 1, 0)


def scan_files(pattern, columns, *, sep=None):
    """Checks the CSV files matching `pattern` without holding their rows.

    Every file is read once, a block at a time, as `_scan_file` reads it. The separator is
    `sep`, or the one of `,` `;` tab found in the first file's header.

    Returns:
        `(files, sep, lines)`: the files (sorted), the separator, the data lines in all.

    Raises:
        UsageError: no file matches, a match that is not a file, a file `_scan_file` refuses,
            a header that differs from the first file's, a duplicate or missing column name, no
            data rows.
    """
    files = sorted(glob.glob(pattern))
    if not files:
        raise UsageError(f"--data {pattern!r} matches no file")
    for path in files:
        if not os.path.isfile(path):
            raise UsageError(f"--data {pattern!r} matches {path}, which is not a file")
    first, lines = None, 0
    for path in files:
        text, count = _scan_file(path)
        lines += count
        if first is None:
            sep = sep or _detect_separator(path, text)
        header = [name.strip() for name in next(csv.reader([text], delimiter=sep), [])]
        if first is None:
            first = header
            _column_positions(path, header, columns)
        elif header != first:
            raise UsageError(
                f"{path}: its header ({', '.join(header)}) differs from that of {files[0]} "
                f"({', '.join(first)}); every file of --data {pattern!r} needs the same columns"
            )
    if lines == 0:
        raise UsageError(f"--data {pattern!r}: the files have a header but no data rows")
    return files, sep, lines


def _column_names(args, *, model):
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


def _read(args, x, y):
    """The `Columns` of a `--data` file, or the `Stream` of a glob (checked, not read)."""
    columns = [*x, *([y] if y else [])]
    if is_glob(args.data):
        files, sep, lines = scan_files(args.data, columns, sep=args.sep)
        return Stream(args.data, files, sep, x, y, args.missing, lines)
    values, dropped = read_columns(args.data, columns, sep=args.sep, missing=args.missing)
    return Columns(args.data, x, y, values, dropped)


# ---------------------------------------------------------------- the checks of each command
def _check_demo(args):
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out {args.out} is a file, not a folder")
    return None


def _check_fit(args):
    """Every check of `keras-mle fit` that needs no TensorFlow; returns the `Columns`."""
    if args.out is not None:
        _check_output_file("--out", args.out, ".keras")
    if args.logdir is not None:
        _check_output_dir("--logdir", args.logdir)
    if args.checkpoint_dir is not None:
        _check_output_dir("--checkpoint-dir", args.checkpoint_dir)
    if args.resume and not args.checkpoint_dir:
        raise UsageError("--resume needs --checkpoint-dir, the folder to resume from")
    default_optimizer = MODELS[args.model][1]
    args.optimizer = args.optimizer or default_optimizer
    if args.learning_rate is None:
        args.learning_rate = DEFAULT_LEARNING_RATE.get(args.optimizer, ADAPTIVE_LEARNING_RATE)
    x, y = _column_names(args, model=args.model)
    if args.resume:
        check_resume(args, x, y)
    return _read(args, x, y)


def checkpoint_record(args, x, y) -> dict:
    """What `--checkpoint-dir` records of a run, for `--resume` to compare."""
    return {"model": args.model, "x": list(x), "y": y, "optimizer": args.optimizer}


def _describe(record):
    columns = f"--x {','.join(record.get('x') or [])}"
    if record.get("y"):
        columns += f" --y {record['y']}"
    return f"{record.get('model')} {columns} with {record.get('optimizer')}"


def check_resume(args, x, y) -> None:
    """Refuses a `--resume` whose backup is of another fit, or already past `--epochs`."""
    directory = args.checkpoint_dir
    recorded = read_json(os.path.join(directory, CHECKPOINT_RECORD))
    wanted = checkpoint_record(args, x, y)
    if recorded is not None and recorded != wanted:
        raise UsageError(
            f"--resume: the backup in {directory} is a fit of {_describe(recorded)}, "
            f"not {_describe(wanted)}"
        )
    # The file `keras_mle.checkpoint.write_backup` writes beside the weights.
    training = read_json(os.path.join(directory, "training_metadata.json")) or {}
    done = training.get("epoch")
    if isinstance(done, int) and args.epochs <= done:
        raise UsageError(
            f"--resume: the backup in {directory} has already run {done} epoch(s); "
            f"ask for --epochs > {done} to continue"
        )


def model_record_path(model_path) -> str:
    """The JSON file beside a saved model that records its command and columns."""
    return f"{model_path}.json"


def _check_show(args):
    """`keras-mle show`: the model file exists; with `--data`, its columns are read."""
    path = args.model_path
    if not os.path.isfile(path):
        raise UsageError(f"no such file: {path}")
    args.record = read_json(model_record_path(path))
    if args.data is None:
        if args.x or args.y:
            raise UsageError("--x and --y need --data, the file to compute the summary on")
        if args.cov_type != "nonrobust":
            raise UsageError("--cov-type needs --data, the file to compute the summary on")
        return None
    if not args.x and not args.y and args.record is not None:
        args.x = ",".join(args.record.get("x") or [])
        args.y = args.record.get("y")
    if not args.x and not args.y:
        raise UsageError(f"give the columns of --data: --x COL[,COL...] --y COL for {path}")
    model = "gaussian" if not (args.x and args.y) else "linear"
    x, y = _column_names(args, model=model)
    return _read(args, x, y)


# ---------------------------------------------------------------- main
def _quiet_tensorflow_environment():
    # TensorFlow's C++ log lines (CUDA probing, CPU features) go to stderr unless told otherwise;
    # this must be set before TensorFlow is imported. A value the user set wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _import_quietly(name):
    """Imports module `name`, keeping what is written to file descriptor 2 meanwhile.

    TensorFlow prints a few lines from C++ while it loads (before any log setting applies). They
    are dropped when the import succeeds and written out when it fails.
    """
    if "tensorflow" in sys.modules:
        return importlib.import_module(name)
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        return importlib.import_module(name)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            return importlib.import_module(name)
        except BaseException:
            sys.stderr.flush()
            os.dup2(saved, 2)
            captured.seek(0)
            os.write(2, captured.read())
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def report(command, kind, error) -> None:
    """One line on stderr: `keras-mle COMMAND: KIND: MESSAGE`."""
    message = " ".join(str(error).split())
    print(f"keras-mle {command}: {kind}: {message}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    """Runs `keras-mle` with `argv` (default: `sys.argv[1:]`); returns the exit code."""
    _quiet_tensorflow_environment()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        inputs = args.check(args)
        backend = _import_quietly("keras_mle.cli")
        return getattr(backend, args.run)(args, inputs)
    except UsageError as error:
        report(args.command, "error", error)
        return 2
    except FitError as error:
        report(args.command, "error", error)
        return 1


if __name__ == "__main__":
    # Through the module's own name, so that the fitting half raises the errors `main` catches.
    import keras_mle_cli

    sys.exit(keras_mle_cli.main())
