"""Hand-written training loops over the same maths as `train_step`, to contrast with `fit()`.

`train(model, x, y, ...)` runs `model.compute_loss_and_gradients` (the function `train_step` uses)
and `optimizer.apply` in one of three modes:

- `"eager"`: a Python loop over epochs and batches, one eager step at a time (the articles' loop);
- `"function"`: each epoch is one `tf.function` call that loops over the batches in-graph;
- `"xla"`: the same epoch function compiled with XLA (`jit_compile=True`).

Keras callbacks are driven through `keras.callbacks.CallbackList` (a `History` and a progress
bar are added), so `EarlyStopping`, `ModelCheckpoint`, `TensorBoard` etc. work as in `fit()`.
In `"function"`/`"xla"` mode batch-level hooks run once per epoch (as `fit()` does with
`steps_per_execution`), with the index of the epoch's last batch.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

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
    shuffle: bool = False,
    sample_weight=None,
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
        shuffle: Draw a new order of the samples every epoch (from NumPy's global generator,
            which `keras.utils.set_random_seed` seeds). Defaults to `False`.
        sample_weight: Per-sample weights `>= 0`. Defaults to `None`.

    Returns:
        The `History` of the run: `loss` and every parameter per epoch.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    _check_positive_int("epochs", epochs)
    _check_positive_int("batch_size", batch_size)
    x, y, sample_weight = model.check_data(x, y, sample_weight)
    if not model.built:
        model(x[:2])
    optimizer = keras.optimizers.get(optimizer)
    if getattr(model, "optimizer", None) is not optimizer:
        model.compile(optimizer=optimizer)
    if not optimizer.built:
        optimizer.build(model.trainable_variables)

    n = len(x)
    steps = math.ceil(n / batch_size)
    callback_list = keras.callbacks.CallbackList(
        callbacks,
        add_history=True,
        add_progbar=verbose != 0,
        verbose=verbose,
        epochs=epochs,
        steps=steps,
        model=model,
    )
    tensors = [None if a is None else tf.convert_to_tensor(a) for a in (x, y, sample_weight)]
    if mode == "eager":
        run_epoch = _eager_epoch
    else:
        run_epoch = tf.function(_graph_epoch, jit_compile=mode == "xla")

    model.stop_training = False
    callback_list.on_train_begin()
    logs = {}
    for epoch in range(epochs):
        callback_list.on_epoch_begin(epoch)
        order = tf.constant(np.random.permutation(n)) if shuffle else None
        if mode == "eager":
            loss = run_epoch(model, optimizer, *tensors, order, batch_size, callback_list)
        else:
            callback_list.on_train_batch_begin(steps - 1)
            loss = run_epoch(model, optimizer, *tensors, order, batch_size)
            callback_list.on_train_batch_end(steps - 1, {"loss": loss})
        logs = {"loss": float(loss)}
        logs.update({k: float(v) for k, v in model.parameter_logs().items()})
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    return model.history


def optimizer_step(model, optimizer, x, y, sample_weight):
    """One optimizer step on one batch; returns the batch's weighted loss sum and weight sum."""
    _, gradients, sample_losses, weights = model.compute_loss_and_gradients(x, y, sample_weight)
    optimizer.apply(gradients, model.trainable_variables)
    return tf.reduce_sum(sample_losses * weights), tf.reduce_sum(weights)


def _eager_epoch(model, optimizer, x, y, sample_weight, order, batch_size, callback_list):
    if order is not None:
        x, y, sample_weight = _take(order, x, y, sample_weight)
    total = count = 0.0
    for step, start in enumerate(range(0, len(x), batch_size)):
        callback_list.on_train_batch_begin(step)
        batch = _take(slice(start, start + batch_size), x, y, sample_weight)
        batch_total, batch_count = optimizer_step(model, optimizer, *batch)
        total += batch_total
        count += batch_count
        callback_list.on_train_batch_end(step, {"loss": total / count})
    return total / count


def _graph_epoch(model, optimizer, x, y, sample_weight, order, batch_size):
    """One epoch in-graph: a `tf.while_loop` over the full batches, then the remainder."""
    if order is not None:
        x, y, sample_weight = _take(order, x, y, sample_weight)
    n = x.shape[0]
    full, remainder = divmod(n, batch_size)
    total = tf.zeros([], model.compute_dtype)
    count = tf.zeros([], model.compute_dtype)
    if full:
        # Whole batches as one (full, batch_size, ...) tensor: each step is a static-shape slice.
        batched = [
            None if a is None else tf.reshape(a[: full * batch_size], [full, batch_size, *a.shape[1:]])
            for a in (x, y, sample_weight)
        ]

        def body(i, total, count):
            batch = [None if a is None else a[i] for a in batched]
            batch_total, batch_count = optimizer_step(model, optimizer, *batch)
            return i + 1, total + batch_total, count + batch_count

        _, total, count = tf.while_loop(
            lambda i, *_: i < full, body, (tf.constant(0), total, count)
        )
    if remainder:
        batch = _take(slice(full * batch_size, n), x, y, sample_weight)
        batch_total, batch_count = optimizer_step(model, optimizer, *batch)
        total += batch_total
        count += batch_count
    return total / count


def _take(index, *arrays):
    if isinstance(index, slice):
        return [None if a is None else a[index] for a in arrays]
    return [None if a is None else tf.gather(a, index) for a in arrays]


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
