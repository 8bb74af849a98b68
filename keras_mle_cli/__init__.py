"""The `keras-mle` command line's front end: arguments, paths and CSV files, without TensorFlow.

`keras-mle --help`, `--version` and every argument, path or CSV error are answered by this
package alone, in a fraction of a second: it imports neither TensorFlow nor the `keras_mle`
package (whose `__init__` imports TensorFlow, so that saved models load in any process). Once the
inputs are valid, `main` imports `keras_mle.cli.commands`, the half that fits and reports, with
TensorFlow's start-up log lines silenced, and hands it the parsed arguments and the data.

`--data` names one CSV file, read here into memory (`Columns`), or a glob of CSV files
(`'shards/part-*.csv'`, quoted), checked here without holding their rows (`Stream`: the files
exist, are UTF-8 with the same header, the columns are there) and streamed by `keras_mle.cli`.

Exit codes: 0 for an answer, 1 when there is no trustworthy answer (the fit diverged or did not
converge, a saved model holds non-finite parameters), 2 for bad input (one line on stderr,
nothing written).

The modules, each importing only those above it in this list and the standard library:

- `errors` (`UsageError`, `FitError`), `options` (the model table, optimizers, defaults),
  `records` (what a backup or a saved model is a fit of), `inputs` (`Columns`, `Stream`),
  `reporting` (one line on stderr): shared with `keras_mle.cli`;
- `csv_files` (reading and scanning CSV files), `paths` (output paths, `--resume`), `parser`
  (the arguments), `checks` (each command's checks);
- `entry`: `main`.
"""

from __future__ import annotations

from keras_mle_cli.csv_files import MISSING_CELLS, SCAN_CHUNK, is_glob, read_columns, scan_files
from keras_mle_cli.entry import main
from keras_mle_cli.errors import FitError, UsageError
from keras_mle_cli.inputs import Columns, Stream
from keras_mle_cli.options import (
    ADAPTIVE_LEARNING_RATE,
    DEFAULT_EPOCHS,
    DEFAULT_LEARNING_RATE,
    MODELS,
    OPTIMIZERS,
    SEED_MAX,
    STREAM_BATCH_SIZE,
)
from keras_mle_cli.parser import SEPARATORS, build_parser
from keras_mle_cli.paths import check_resume
from keras_mle_cli.records import (
    CHECKPOINT_RECORD,
    checkpoint_record,
    model_record_path,
    read_json,
)
from keras_mle_cli.reporting import report

__all__ = [
    "main",
    "build_parser",
    "read_columns",
    "scan_files",
    "is_glob",
    "UsageError",
    "FitError",
    "Columns",
    "Stream",
    "report",
    "check_resume",
    "checkpoint_record",
    "model_record_path",
    "read_json",
    "ADAPTIVE_LEARNING_RATE",
    "CHECKPOINT_RECORD",
    "DEFAULT_EPOCHS",
    "DEFAULT_LEARNING_RATE",
    "MISSING_CELLS",
    "MODELS",
    "OPTIMIZERS",
    "SCAN_CHUNK",
    "SEED_MAX",
    "SEPARATORS",
    "STREAM_BATCH_SIZE",
]
