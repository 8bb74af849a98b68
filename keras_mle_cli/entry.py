"""`keras_mle_cli.main`: parse, check, then hand the valid inputs to `keras_mle.cli`.

The one module of the front end that knows the fitting half, and only by name, at run time:
once the arguments and the data are valid it imports `keras_mle.cli.commands` (which imports
TensorFlow), with TensorFlow's start-up log lines silenced, and calls its `run(args, inputs)`.
The fitting half raises the `keras_mle_cli.errors` classes caught here; it never imports this
module.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile

from keras_mle_cli.checks import CHECKS
from keras_mle_cli.errors import FitError, UsageError
from keras_mle_cli.parser import build_parser
from keras_mle_cli.reporting import report

__all__ = ["main"]


def main(argv=None) -> int:
    """Runs `keras-mle` with `argv` (default: `sys.argv[1:]`); returns the exit code."""
    try:
        code = _run(argv)
        sys.stdout.flush()  # here, so that a reader gone is met in the `except` below
    except BrokenPipeError:
        # The reader has gone (`keras-mle show m.keras | head`): stop quietly, as `cat` does;
        # the rest goes to devnull so that Python's own flush at exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141  # 128 + SIGPIPE
    return code


def _run(argv) -> int:
    _quiet_tensorflow_environment()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        inputs = CHECKS[args.command](args)
        backend = _import_quietly("keras_mle.cli.commands")
        return backend.run(args, inputs)
    except UsageError as error:
        report(args.command, "error", error)
        return 2
    except FitError as error:
        report(args.command, "error", error)
        return 1


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
