"""Data: the articles' data sets, the input checks, the rows' order, the datasets `fit` reads.

Callers use `from keras_mle import data as data_lib` and `data_lib.<name>`; every name is
defined in one of the modules below (each importing only those above it):

- `validation`: the one validation vocabulary (`check_*`, `cast_for_model`, `PrecisionWarning`)
  and the readers of checked inputs (`num_rows`, `inputs_shape`, `take_rows`);
- `synthetic`: the articles' data sets (`noisy_line`, `gaussian_sample`);
- `order`: the one place that draws a rows' order, from `(seed, epoch)` (`check_shuffle`,
  `draw_seed`, `row_permutation`, `batch_permutation`, `epoch_rows`, `batches_per_epoch`);
- `pipelines`: in-memory arrays as datasets (`array_dataset`, `epoch_arrays`, `EpochArrays`,
  `stack_batches`, `epoch_dataset`, `EpochBatches`, `held_tensor`);
- `files`: data from files (`csv_dataset`, `write_shards`, `shard_dataset`).
"""

from keras_mle.data.files import (
    HEADER_LIMIT,
    MANIFEST_SUFFIX,
    MISSING_CELLS,
    NUMBER,
    csv_cell_error,
    csv_dataset,
    shard_dataset,
    write_shards,
)
from keras_mle.data.order import (
    SHUFFLE_CHOICES,
    batch_permutation,
    batches_per_epoch,
    check_shuffle,
    draw_seed,
    epoch_rows,
    row_permutation,
)
from keras_mle.data.pipelines import (
    EpochArrays,
    EpochBatches,
    Inputs,
    array_dataset,
    epoch_arrays,
    epoch_dataset,
    held_tensor,
    stack_batches,
)
from keras_mle.data.synthetic import gaussian_sample, noisy_line
from keras_mle.data.validation import (
    PRECISION_TOLERANCE,
    PrecisionWarning,
    cast_for_model,
    check_array,
    check_finite_scalar,
    check_inputs,
    check_not_constant,
    check_optional_positive_int,
    check_positive_int,
    check_positive_scalar,
    check_sample_weight,
    check_xy,
    inputs_shape,
    num_rows,
    take_rows,
)

__all__ = [
    # synthetic
    "noisy_line",
    "gaussian_sample",
    # validation
    "PRECISION_TOLERANCE",
    "PrecisionWarning",
    "check_array",
    "check_xy",
    "check_inputs",
    "num_rows",
    "inputs_shape",
    "take_rows",
    "check_sample_weight",
    "check_positive_int",
    "check_optional_positive_int",
    "check_finite_scalar",
    "check_positive_scalar",
    "check_not_constant",
    "cast_for_model",
    # order
    "SHUFFLE_CHOICES",
    "check_shuffle",
    "draw_seed",
    "row_permutation",
    "batch_permutation",
    "epoch_rows",
    "batches_per_epoch",
    # pipelines
    "Inputs",
    "array_dataset",
    "stack_batches",
    "epoch_dataset",
    "EpochBatches",
    "epoch_arrays",
    "EpochArrays",
    "held_tensor",
    # files
    "HEADER_LIMIT",
    "MANIFEST_SUFFIX",
    "MISSING_CELLS",
    "NUMBER",
    "csv_cell_error",
    "csv_dataset",
    "write_shards",
    "shard_dataset",
]
