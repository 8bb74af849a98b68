"""The `keras-mle` command line, TensorFlow side: `demo`, `fit` and `show` once inputs are valid.

The console script runs `keras_mle_cli.main` (a top-level package, standard library only), which
parses the arguments, checks the paths and reads or scans the CSV files without importing
TensorFlow, then imports `keras_mle.cli.commands` and calls its `run`. The layering is one way:

- `keras_mle_cli.errors`, `.options`, `.records`, `.inputs`, `.reporting`: what both halves
  share (the errors, the model table, the records, the data's description, stderr lines);
- this package's modules, which import those and never the front end's `main`:
  `commands` (the dispatch, `demo`), `fit` (one file, in memory), `stream` (a glob, a batch at
  a time), `show`, and what they share, `training` and `results`;
- `keras_mle_cli.entry.main`, which imports `commands` by name at run time.

This `__init__` only gathers the public names, `main` included (the same entry point, for
callers that import the package, and for `python -m keras_mle.cli`).

`fit` builds a float64 model labelled by its feature columns, `adapt`s it to the data, trains
until the gradient of the mean loss is negligible (`--epochs` is a cap) and prints the inference
summary, its rows the model's own labels (`m[income]`, `b`). A fit that diverges, does not
converge, or whose Newton step left is more than `inference`'s tolerance in standard errors
exits 1 and leaves `--out` untouched; a successful one is saved atomically, with its record
(the command, the columns, the file's hash) in `MODEL.keras.json` beside it.
"""

from keras_mle.cli.commands import run, run_demo
from keras_mle.cli.fit import run_fit
from keras_mle.cli.show import run_show
from keras_mle.cli.training import GRADIENT_TOLERANCE, PATIENCE
from keras_mle_cli.entry import main
from keras_mle_cli.errors import FitError, UsageError
from keras_mle_cli.options import MODELS

__all__ = [
    "main",
    "run",
    "run_demo",
    "run_fit",
    "run_show",
    "UsageError",
    "FitError",
    "MODELS",
    "GRADIENT_TOLERANCE",
    "PATIENCE",
]
