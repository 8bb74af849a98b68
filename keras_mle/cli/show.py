"""`keras-mle show`: a saved model's parameters, or with `--data` its inference summary there.

Every row is named by the model's own labels (`model.param_names`), which a model fitted by
`keras-mle fit` takes from its feature columns (`feature_names`, saved with the model).
"""

from __future__ import annotations

import keras
import numpy as np

import keras_mle
from keras_mle import statistics
from keras_mle.cli.results import arrays, first_warning, summary, summary_options
from keras_mle.cli.stream import reading, stream_dataset
from keras_mle_cli.errors import FitError, UsageError
from keras_mle_cli.inputs import Stream
from keras_mle_cli.options import STREAM_BATCH_SIZE

__all__ = ["run_show"]


def run_show(args, inputs) -> int:
    """`keras-mle show MODEL.keras`, with the `Columns` or `Stream` of `--data` or `None`."""
    path = args.model_path
    model = _load(path)
    names = model.param_names
    values = statistics.flat_parameters(model)
    bad = [
        f"{name} = {value}"
        for name, value in zip(names, values, strict=True)
        if not np.isfinite(value)
    ]
    if bad:
        raise FitError(f"{path} holds non-finite parameters ({', '.join(bad)}): not a usable fit")
    if inputs is not None:
        return _show_summary(model, path, inputs, summary_options(args, inputs))
    print(f"{type(model).__name__} ({path})")
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        print(f"optimizer: {type(optimizer).__name__}, {int(optimizer.iterations)} step(s)")
    width = max(12, *(len(name) + 2 for name in names))
    print(f"{'parameter':<{width}}{'estimate':>16}")
    for name, value in zip(names, values, strict=True):
        print(f"{name:<{width}}{float(value):>16.8g}")
    return 0


def _load(path):
    """The keras_mle model saved in `path`; anything else is a `UsageError`."""
    try:
        model = keras.models.load_model(path)
    except Exception as error:  # noqa: BLE001  Keras raises many types for a bad archive.
        raise UsageError(f"cannot load {path}: {error}") from None
    if not isinstance(model, keras_mle.MaximumLikelihoodModel):
        raise UsageError(f"{path} holds a {type(model).__name__}, not a keras_mle model")
    if not model.params:
        # (A network's weights are not named parameters: there is no table to show.)
        raise UsageError(
            f"{path} holds a {type(model).__name__}, whose weights are a network's, not named "
            "parameters: keras-mle show summarises the models keras-mle fit makes"
        )
    return model


def _show_summary(model, path, inputs, options) -> int:
    if model.takes_targets != (inputs.y is not None):
        wanted = "--x COL[,COL...] --y COL" if model.takes_targets else "one column (--y COL)"
        raise UsageError(f"{path} holds a {type(model).__name__}: give {wanted}")
    if isinstance(inputs, Stream):
        dataset = stream_dataset(inputs, STREAM_BATCH_SIZE)
        with reading(inputs):
            result = summary(model, dataset, **options)
    else:
        x, y = arrays(inputs)
        result = summary(model, x, y, **options)
    print(result.summary())
    if not result.converged:
        raise FitError(f"{path} is not at the optimum for {inputs.path}: {first_warning(result)}")
    return 0
