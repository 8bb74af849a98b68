"""Hand-written training loops over the same maths as `train_step`, to contrast with `fit()`.

`train(model, x, y, ...)` runs the model's own `apply_step` (what `train_step` runs: the loss,
its gradients through `tf.GradientTape`, `optimizer.apply`, the loss tracker) in one of three
modes:

- `"eager"`: a Python loop over epochs and batches, one eager step at a time (the articles' loop);
- `"function"`: each epoch is one `tf.function` call of `model.train_batches`, an in-graph loop
  over the epoch's batches;
- `"xla"`: the same epoch function compiled with XLA (`jit_compile=True`).

The epochs and the Keras callbacks are driven by the package's one epoch driver,
`keras_mle.epochs.run_epochs` (a `History` and a progress bar are added), so `EarlyStopping`,
`ModelCheckpoint`, `TensorBoard` etc. work as in `fit()`: the logs hold `loss`, the compiled
metrics, every parameter and, with `validation_data`, `val_loss` and `val_<metric>` (computed
by `model.evaluate`). In `"function"`/`"xla"` mode
batch-level hooks run once per epoch (as `fit()` does with `steps_per_execution`), with the
index of the epoch's last batch, so `stop_training` takes effect at the end of that epoch; in
`"eager"` mode it takes effect after the current batch. As `fit()` does, training ends with
`optimizer.finalize_variable_values` (which, e.g., swaps in the moving averages of an
optimizer built with `use_ema=True`).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from keras_mle import checkpoint
from keras_mle import data as data_lib
from keras_mle import epochs as epochs_lib
from keras_mle.models import arguments
from keras_mle.models.base import MaximumLikelihoodModel

__all__ = ["train", "MODES"]

MODES = ("eager", "function", "xla")


def train(
    model,
    x,
    y=None,
    *,
    epochs: int,
    batch_size: int,
    optimizer,
    mode: str = "function",
    callbacks=None,
    verbose: int = 1,
    shuffle: bool | str = False,
    sample_weight=None,
    validation_data=None,
    checkpoint_dir=None,
    checkpoint_every: int = 1,
    resume: bool = False,
) -> keras.callbacks.History:
    """Trains `model` with a custom loop and returns a `keras.callbacks.History`.

    Args:
        model: A `keras_mle.MaximumLikelihoodModel`.
        x: Inputs (for `GaussianMLE`: the samples).
        y: Targets, or `None` for models of a sample. Defaults to `None`.
        epochs: Number of passes over the data.
        batch_size: Samples per optimizer step.
        optimizer: A `keras.optimizers.Optimizer` or its name. The model is compiled with it (so
            it is saved with the model) unless it is already the model's optimizer.
        mode: `"eager"`, `"function"` or `"xla"`. Defaults to `"function"`.
        callbacks: Keras callbacks. Defaults to `None`.
        verbose: 0 for silence, 1 for a progress bar. Defaults to `1`.
        shuffle: `True` for a new order of the rows every epoch, `"batch"` for a new order of
            the contiguous batches (the last, shorter batch last), `False` for the rows in
            order. The order of epoch `e` comes from `(model.shuffle_seed, e)`, as in `fit`:
            the seed is drawn from NumPy's global generator (which
            `keras.utils.set_random_seed` seeds) and kept in backups. Defaults to `False`.
        sample_weight: Per-sample weights `>= 0`. Defaults to `None`.
        validation_data: `(x_val, y_val)` or `(x_val, y_val, sample_weight_val)` (for a model of
            a sample: `samples` or `(samples, sample_weight)`), evaluated at the end of every
            epoch into `val_loss` and `val_<metric>`. Defaults to `None`.
        checkpoint_dir: Folder for a backup of the training state (weights, optimizer state,
            epoch, NumPy random state), written atomically at epoch boundaries in the files of
            `keras.callbacks.BackupAndRestore` (see `keras_mle.callbacks.BackupAndRestore` and
            `docs/checkpointing.md`) and kept after training. Defaults to `None` (no backup).
        checkpoint_every: Epochs between two backups; the last epoch is always backed up.
            Defaults to `1`.
        resume: Continue from the backup in `checkpoint_dir`, if there is one, up to `epochs`
            in all; the result is then exactly that of an uninterrupted run. Defaults to `False`
            (start from the model's current state and overwrite the backup).

    Returns:
        The `History` of the run: `loss`, the metrics and every parameter per epoch.
    """
    if not isinstance(model, MaximumLikelihoodModel):
        raise TypeError(
            "model must be a keras_mle model (a keras_mle.MaximumLikelihoodModel), got "
            f"{type(model).__name__}: train other Keras models with model.fit()."
        )
    if not arguments.is_in_memory(x):
        raise TypeError(
            f"x: keras_mle.loops.train takes in-memory arrays, got a {type(x).__name__}; "
            "train on a tf.data.Dataset or a generator with model.fit()."
        )
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    data_lib.check_positive_int("epochs", epochs)
    data_lib.check_positive_int("batch_size", batch_size)
    data_lib.check_positive_int("checkpoint_every", checkpoint_every)
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir, the folder to resume from.")
    if checkpoint_dir is not None:
        checkpoint.check_folder("checkpoint_dir", checkpoint_dir)
    shuffle = data_lib.check_shuffle(shuffle)
    arguments.check_callbacks(callbacks)
    optimizer = _get_optimizer(optimizer)
    x, y, sample_weight = model.check_data(x, y, sample_weight)
    if getattr(model, "optimizer", None) is not optimizer:
        model.compile(optimizer=optimizer)
    model.prepare_training(
        data_lib.inputs_shape(x),
        data_lib.take_rows(x, slice(0, 1)),
        data_lib.take_rows(y, slice(0, 1)),
    )
    if validation_data is not None:
        validation_data = model.validation_dataset(validation_data, batch_size)
    optimizer = model.optimizer  # compile() may wrap it (mixed precision)
    if not optimizer.built:
        optimizer.build(model.trainable_variables)

    callbacks = list(callbacks or [])
    if checkpoint_dir is not None:
        backup = checkpoint.BackupAndRestore(
            checkpoint_dir, save_every=checkpoint_every, restore=resume, delete_checkpoint=False
        )
        callbacks.append(backup)
    epoch_runner = _Epochs(model, (x, y, sample_weight), batch_size, shuffle, mode)

    def validate(callback_list):
        return model.evaluate(validation_data, verbose=0, return_dict=True)

    return epochs_lib.run_epochs(
        model,
        epoch_runner.run,
        epochs=epochs,
        steps=math.ceil(data_lib.num_rows(x) / batch_size),
        full_batch=batch_size >= data_lib.num_rows(x),
        callbacks=callbacks,
        verbose=verbose,
        validate=None if validation_data is None else validate,
        restore=lambda c, m, e: epochs_lib.restore_training(c, m, e, shuffle=shuffle),
    )


def _get_optimizer(optimizer):
    """`keras.optimizers.get(optimizer)`, with errors naming `optimizer`."""
    if optimizer is None:
        raise TypeError(
            "optimizer is required: pass a keras.optimizers.Optimizer or its name, e.g. "
            "keras.optimizers.SGD(0.1) or 'adam'."
        )
    try:
        found = keras.optimizers.get(optimizer)
    except (TypeError, ValueError):
        found = None
    if not isinstance(found, keras.optimizers.Optimizer):
        error = ValueError if isinstance(optimizer, (str, dict)) else TypeError
        raise error(
            "optimizer must be a keras.optimizers.Optimizer or the name of one (e.g. 'sgd', "
            f"'adam'), got {optimizer!r}."
        )
    return found


class _Epochs:
    """The epochs of one `train` run: the rows of epoch `e` from `(model.shuffle_seed, e)`."""

    def __init__(self, model, arrays, batch_size, shuffle, mode):
        self.model = model
        self.arrays = arrays
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.steps = math.ceil(data_lib.num_rows(arrays[0]) / batch_size)
        self.epoch_function = None if mode == "eager" else _graph_epoch(model, mode == "xla")
        self.fixed = None

    def batches(self, epoch):
        """The epoch's arrays in its rows' order (stacked into batches for the graph modes)."""
        if not self.shuffle and self.fixed is not None:
            return self.fixed
        n = data_lib.num_rows(self.arrays[0])
        order = data_lib.epoch_rows(
            self.model.shuffle_seed, epoch, n, self.batch_size, self.shuffle
        )
        rows = slice(None) if order is None else order.numpy()
        batches = [data_lib.take_rows(a, rows) for a in self.arrays]
        if self.epoch_function is not None:
            batches = data_lib.stack_batches(*batches, batch_size=self.batch_size)
        if not self.shuffle:
            self.fixed = batches
        return batches

    def run(self, epoch, callback_list):
        """Trains epoch `epoch` (the `run_epoch` of `keras_mle.epochs.run_epochs`)."""
        batches = self.batches(epoch)
        if self.epoch_function is None:
            return _eager_epoch(self.model, batches, self.batch_size, callback_list)
        callback_list.on_train_batch_begin(self.steps - 1)
        logs = self.epoch_function(batches)
        callback_list.on_train_batch_end(self.steps - 1, logs)
        return logs


def _eager_epoch(model, batches, batch_size, callback_list):
    x, y, sample_weight = batches
    model.reset_metrics()
    for step, start in enumerate(range(0, data_lib.num_rows(x), batch_size)):
        callback_list.on_train_batch_begin(step)
        batch = slice(start, start + batch_size)
        model.apply_step(
            *(
                None
                if a is None
                else tf.nest.map_structure(tf.constant, data_lib.take_rows(a, batch))
                for a in (x, y, sample_weight)
            )
        )
        callback_list.on_train_batch_end(step, model.get_metrics_result())
        if model.stop_training:
            break
    return model.get_metrics_result()


def _graph_epoch(model, jit_compile):
    @tf.function(jit_compile=jit_compile)
    def train_epoch(batches):
        model.reset_metrics()
        model.train_batches(batches)
        return {**model.get_metrics_result(), **model.parameter_logs()}

    return train_epoch
