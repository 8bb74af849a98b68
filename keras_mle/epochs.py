"""The one epoch driver: Keras callbacks around the package's own loops over epochs.

Keras' `fit` drives its own epochs. Every other way to train a keras_mle model (the hand-written
loops of `keras_mle.loops`, `fit` under a `MultiWorkerMirroredStrategy`, the command line's
streamed fit) runs `run_epochs`, which gives them one behaviour, that of Keras' `fit`:

- the callbacks are driven through one `keras.callbacks.CallbackList` (a `History`, and a
  progress bar unless `verbose=0`), with the input-check callback first, so that a refused batch
  or a divergence is acted on before any other callback sees the epoch;
- a `keras_mle.checkpoint.BackupAndRestore` among the callbacks is restored before
  `on_train_begin`, and training starts at the epoch it returns; its folder's lock is released
  even when training raises;
- an epoch's logs hold the epoch's metrics, then every parameter component
  (`model.parameter_logs()`), then `val_<metric>` on the epochs `validation_freq` selects (as
  `fit` does, also on an epoch at whose end training stops);
- `model.stop_training` set by a callback ends training after the current epoch;
- training ends with `optimizer.finalize_variable_values`.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

from keras_mle import checkpoint
from keras_mle import data as data_lib
from keras_mle.models.input_checks import InputCheckCallback

__all__ = ["run_epochs", "float_logs", "restore_training"]


def float_logs(logs) -> dict:
    """`logs` with every value (a tensor or a NumPy scalar) as a Python float."""
    return {name: float(np.asarray(value)) for name, value in (logs or {}).items()}


def restore_training(callbacks, model, initial_epoch: int = 0, *, shuffle=False) -> int:
    """Restores a backup among `callbacks` and draws the run's seed of the rows' order.

    The seed (`model.shuffle_seed`) of a shuffled run is the one of the run a restored backup
    continues, else a new one drawn from NumPy's global generator
    (`keras_mle.data.draw_seed`, which `keras.utils.set_random_seed` fixes); `None` without
    shuffling. Returns the epoch to start from (`keras_mle.checkpoint.initial_epoch`).
    """
    model.shuffle_seed = None
    epoch = checkpoint.initial_epoch(callbacks, model, initial_epoch)
    if not shuffle:
        model.shuffle_seed = None
    elif model.shuffle_seed is None:
        model.shuffle_seed = data_lib.draw_seed()
    return epoch


def run_epochs(
    model,
    run_epoch: Callable,
    *,
    epochs: int,
    steps: int | None,
    callbacks=None,
    verbose: int = 1,
    initial_epoch: int = 0,
    validate: Callable | None = None,
    validation_freq: int = 1,
    restore: Callable | None = None,
    agree_to_stop: Callable | None = None,
    full_batch: bool = False,
) -> keras.callbacks.History:
    """Runs epochs `initial_epoch, ..., epochs - 1` of `run_epoch` and returns the `History`.

    Args:
        model: The built, compiled keras_mle model.
        run_epoch: `run_epoch(epoch, callback_list)` trains one epoch, calls the batch hooks of
            `callback_list` for the batches it runs, and returns the epoch's metrics (a dict of
            numbers or scalar tensors; with the parameters' entries of
            `model.parameter_logs()`, or the driver adds them), or `None` to end training at
            once, without logging the epoch (a pass that could not be made).
        epochs: The epoch to end before (counted from 0, as in `fit`).
        steps: Batches per epoch, for the progress bar; `None` when unknown.
        callbacks: The caller's Keras callbacks. Defaults to `None`.
        verbose: 0 for silence, 1 for a progress bar. Defaults to `1`.
        initial_epoch: The epoch asked to start from. Defaults to `0`.
        validate: `validate(callback_list)` returns the validation metrics (logged with a
            `val_` prefix), or `None` for no validation. Defaults to `None`.
        validation_freq: Validate at the end of every `validation_freq`-th epoch. Defaults to
            `1`.
        restore: `restore(callbacks, model, initial_epoch)` restores a backup and returns the
            epoch to start from. Defaults to `keras_mle.checkpoint.initial_epoch`.
        agree_to_stop: `agree_to_stop(stop)` returns whether every process stops (training on
            several processes, where one stopping alone would leave the others waiting).
            Defaults to `None` (one process).
        full_batch: Every epoch is one step on all the data: a loss that keeps rising is then
            divergence (`InputCheckCallback`). Defaults to `False`.
    """
    callbacks = [InputCheckCallback(full_batch=full_batch), *(callbacks or [])]
    restore = restore or checkpoint.initial_epoch
    try:
        initial_epoch = restore(callbacks, model, initial_epoch)
        callback_list = keras.callbacks.CallbackList(
            callbacks,
            add_history=True,
            add_progbar=verbose != 0,
            verbose=verbose,
            epochs=epochs,
            steps=steps,
            model=model,
        )
        model.stop_training = False
        callback_list.on_train_begin()
        logs = {}
        for epoch in range(initial_epoch, epochs):
            callback_list.on_epoch_begin(epoch)
            epoch_logs = run_epoch(epoch, callback_list)
            if epoch_logs is None:
                break
            logs = float_logs(epoch_logs)
            if not set(model.param_names) <= logs.keys():
                # (A compiled epoch returns them already: read eagerly they cost more than the
                # epoch of a small model.)
                logs.update(float_logs(model.parameter_logs()))
            if validate is not None and (epoch + 1) % validation_freq == 0:
                results = float_logs(validate(callback_list))
                logs.update({f"val_{name}": value for name, value in results.items()})
            callback_list.on_epoch_end(epoch, logs)
            if agree_to_stop is not None:
                model.stop_training = agree_to_stop(bool(model.stop_training))
            if model.stop_training:
                break
        model.optimizer.finalize_variable_values(model.trainable_variables)
        callback_list.on_train_end(logs)
    finally:
        # (A run that raised gets no on_train_end: its backup folder's lock is freed here.)
        checkpoint.release_backups(callbacks)
    return model.history
