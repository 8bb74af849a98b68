"""The datasets `fit` reads from in-memory arrays, and their element types.

- `array_dataset`: Keras' batches, in the arrays' own dtype (Keras' array adapter would cast
  them to `floatx()`), shuffled in the order of `keras_mle.data.order`;
- `epoch_arrays` (elements `EpochArrays`): one whole epoch per element, batched inside the
  compiled step, in the same order;
- `stack_batches` and `epoch_dataset` (elements `EpochBatches`): the batches of an epoch
  stacked, for `train_batches`;
- `held_tensor`: an array as a tensor without a transient second copy.

The datasets that hold arrays hold them once: tf.data's default graph rewrites, which would
copy them, are off (`_without_rewrites`).
"""

from __future__ import annotations

import typing

import numpy as np
import tensorflow as tf

from keras_mle.data import order as order_lib
from keras_mle.data.validation import check_positive_int, check_sample_weight, check_xy, num_rows

__all__ = [
    "Inputs",
    "array_dataset",
    "stack_batches",
    "epoch_dataset",
    "EpochBatches",
    "epoch_arrays",
    "EpochArrays",
    "held_tensor",
]


def stack_batches(x, y=None, sample_weight=None, *, batch_size: int, repeats: int = 1):
    """The batches of one epoch as an `EpochBatches`: the full batches stacked, the last apart.

    `x[i]` of the result is full batch `i` (shape `(num_full, batch_size, ...)`), and `last_x`
    the last, shorter batch when `batch_size` does not divide the rows (else `None`): the steps
    are exactly those of `fit(x, y, batch_size=batch_size, shuffle=False)`. Nothing is padded
    or copied `repeats` times: `repeats` is how many passes one `train_batches` call makes.

    The steps of `train_batches` do not check their batches, so the data are checked here,
    once: NaN or Inf anywhere, or a negative weight, raises a `ValueError` naming the argument.

    Args:
        x, y, sample_weight: Arrays in the model's dtype (as from `model.check_data`).
        batch_size: Rows per batch.
        repeats: Epochs per call. Defaults to `1`.
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("repeats", repeats)
    x, y = check_xy(x, y, x_ndim=None if isinstance(x, dict) or np.ndim(x) > 2 else (1, 2))
    n = num_rows(x)
    sample_weight = check_sample_weight(sample_weight, n)
    # A batch larger than the data is the full batch (shapes, hence memory, follow the data).
    batch_size = min(batch_size, n)
    full = n // batch_size * batch_size

    def stack(a):
        return tf.constant(a[:full].reshape(-1, batch_size, *a.shape[1:]))

    def split(a):
        if a is None:
            return None, None
        last = tf.nest.map_structure(lambda a: tf.constant(a[full:]), a) if full < n else None
        return tf.nest.map_structure(stack, a), last

    (x, last_x), (y, last_y), (w, last_w) = split(x), split(y), split(sample_weight)
    return EpochBatches(
        x=x,
        y=y,
        sample_weight=w,
        last_x=last_x,
        last_y=last_y,
        last_sample_weight=last_w,
        repeats=tf.constant(repeats),
    )


def epoch_dataset(x, y=None, sample_weight=None, *, batch_size: int, repeats: int = 1):
    """A `tf.data.Dataset` whose every element is one whole epoch, for the fast `fit()` path.

    `fit(epoch_dataset(x, y, batch_size=B), epochs=E, steps_per_epoch=1)` makes the same optimizer
    steps as `fit(x, y, batch_size=B, epochs=E, shuffle=False)`, but each epoch is one call of the
    compiled `train_step` (an in-graph loop over the batches; compile with `jit_compile=True`),
    so Keras' per-batch and per-epoch overheads are paid once per epoch. For small data, `repeats`
    packs several epochs into one element: one Keras epoch is then `repeats` passes.

    Each element is an `EpochBatches`, the explicit type by which `train_step` recognises it.
    Pass arrays in the model's dtype (`model.check_data(x, y, sample_weight)` gives them);
    `stack_batches` refuses non-finite values and negative weights.
    """
    element = stack_batches(x, y, sample_weight, batch_size=batch_size, repeats=repeats)
    return tf.data.Dataset.from_tensors(element).repeat()


def array_dataset(
    arrays: tuple,
    *,
    batch_size: int,
    shuffle: bool | str = False,
    seed: int | None = None,
    first_epoch: int = 0,
):
    """Batches of in-memory arrays as a `tf.data.Dataset`, in the arrays' own dtype.

    This is what the models' `fit`, `evaluate` and `predict` feed Keras instead of the arrays
    themselves: Keras' array adapter casts every float array to `keras.config.floatx()`, which
    would round float64 data for a float64 or adapted model. Each element is the tuple of the
    batch's rows of every array (the bare array when there is one); the last batch of an epoch
    may be shorter. The arrays are held once (`held_tensor`).

    With `shuffle=False`, one epoch: `batches_per_epoch(n, batch_size)` batches, the rows in
    order, a known cardinality. With `shuffle=True` or `"batch"`, an endless dataset: the
    batches of epoch `first_epoch`, then of `first_epoch + 1`, and so on, epoch `e`'s rows
    `order.epoch_rows(seed, e, n, batch_size, shuffle)`. Fitted with
    `steps_per_epoch=batches_per_epoch(n, batch_size)` (Keras then reads on from one epoch to
    the next), the steps are exactly those of the in-graph epochs of `epoch_arrays` with the
    same seed, whatever the callbacks.

    Args:
        arrays: Checked arrays with the same first dimension, e.g. `(x, y, sample_weight)`;
            `x` may be a dict of arrays (a network's named inputs).
        batch_size: Rows per batch; a batch larger than the data is the full batch.
        shuffle: `False`, `True` or `"batch"` (`order.check_shuffle`). Defaults to `False`.
        seed: The fit's seed (`order.draw_seed()`), required when shuffling. Defaults to `None`.
        first_epoch: The epoch of the first batches (`initial_epoch` of a resumed fit).
            Defaults to `0`.
    """
    check_positive_int("batch_size", batch_size)
    shuffle = _checked_order(shuffle, seed, "array_dataset")
    first_epoch = _check_epoch(first_epoch)
    n = num_rows(arrays[0])
    batch_size = min(batch_size, n)
    num_batches = order_lib.batches_per_epoch(n, batch_size)
    held = tf.nest.map_structure(held_tensor, tuple(arrays))
    data = tf.data.Dataset.from_tensors(held).repeat()
    if shuffle:

        def batches_of(epoch):
            rows = order_lib.epoch_rows(seed, epoch, n, batch_size, shuffle)
            return tf.data.Dataset.range(num_batches).map(
                lambda i: rows[i * batch_size : (i + 1) * batch_size]
            )

        keys = tf.data.Dataset.range(first_epoch, _ENDLESS).flat_map(batches_of)

        def take(rows, arrays):
            return tf.nest.map_structure(lambda a: tf.gather(a, rows), arrays)

    else:
        keys = tf.data.Dataset.range(num_batches)

        def take(i, arrays):
            return tf.nest.map_structure(lambda a: a[i * batch_size : (i + 1) * batch_size], arrays)

    if len(arrays) == 1:
        dataset = tf.data.Dataset.zip((keys, data)).map(lambda key, a: take(key, a)[0])
    else:
        dataset = tf.data.Dataset.zip((keys, data)).map(take)
    # Known cardinality: Keras then makes exactly num_batches steps per epoch (or, for the
    # endless shuffled dataset, asks for steps_per_epoch).
    cardinality = tf.data.INFINITE_CARDINALITY if shuffle else num_batches
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(cardinality))
    return _without_rewrites(dataset.prefetch(1))


#: The end of the epochs' range: a dataset over epochs never runs out.
_ENDLESS = 2**62


def _checked_order(shuffle, seed, caller):
    """`shuffle` checked (`order.check_shuffle`), and a seed required when it shuffles."""
    shuffle = order_lib.check_shuffle(shuffle)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise TypeError(f"seed must be an integer or None, got {seed!r}.")
    if shuffle and seed is None:
        raise ValueError(
            f"seed: {caller}(shuffle={shuffle!r}) draws each epoch's order from a seed; pass "
            "seed=keras_mle.data.draw_seed() (NumPy's generator, which "
            "keras.utils.set_random_seed fixes)."
        )
    return shuffle


def _check_epoch(epoch) -> int:
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise ValueError(f"first_epoch must be an integer >= 0, got {epoch!r}.")
    return int(epoch)


def _without_rewrites(dataset):
    """`dataset` with tf.data's default graph rewrites off, so its arrays stay held once.

    The rewrites serialize the pipeline, and with it a copy of the arrays it holds, at every
    iterator: a transient second copy of the data.
    """
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    return dataset.with_options(options)


#: A model's inputs inside the epoch types: one tensor, or a dict of them (named inputs).
Inputs = typing.Union[tf.Tensor, typing.Mapping[str, tf.Tensor]]  # noqa: UP007


class EpochBatches(tf.experimental.ExtensionType):
    """`repeats` passes over the batches of one epoch (see `stack_batches`).

    The element type of `epoch_dataset`, by which `train_step` knows to run an in-graph loop
    (`train_batches`) rather than one step. `x[i]` is full batch `i`; `last_*` the last,
    shorter batch, or `None`.
    """

    x: Inputs
    y: typing.Optional[tf.Tensor]  # noqa: UP045 (ExtensionType reads typing.Optional)
    sample_weight: typing.Optional[tf.Tensor]  # noqa: UP045
    last_x: typing.Optional[Inputs]  # noqa: UP045
    last_y: typing.Optional[tf.Tensor]  # noqa: UP045
    last_sample_weight: typing.Optional[tf.Tensor]  # noqa: UP045
    repeats: tf.Tensor


class EpochArrays(tf.experimental.ExtensionType):
    """One epoch of in-memory arrays, batched (and shuffled) inside the compiled step.

    The element type of `epoch_arrays`, by which `train_step` knows to run a whole epoch in one
    call (`train_arrays`). With `n` rows, `size = batch_size` and `full = n // size`, the
    consumer makes these batches, exactly the rows `order.epoch_rows(seed, e, n, size,
    shuffle)` of the epoch, cut every `size` rows:

    - `order` and `batch_order` both `None` (`shuffle=False`): batch `i` is rows
      `i * size : (i + 1) * size`;
    - `order` set (`shuffle=True`, an int32 vector of shape `(n,)`): batch `i` gathers rows
      `order[i * size : (i + 1) * size]`;
    - `batch_order` set (`shuffle="batch"`, an int32 vector of shape `(full,)`): batch `i < full`
      is the contiguous rows `batch_order[i] * size : (batch_order[i] + 1) * size` (a slice, no
      gather), then batch `full` is the tail `full * size : n`;

    and in every case the last batch is shorter when `size` does not divide `n`. At most one of
    `order` and `batch_order` is set.
    """

    x: Inputs
    y: typing.Optional[tf.Tensor]  # noqa: UP045 (ExtensionType reads typing.Optional)
    sample_weight: typing.Optional[tf.Tensor]  # noqa: UP045
    order: typing.Optional[tf.Tensor]  # noqa: UP045
    batch_size: int
    batch_order: typing.Optional[tf.Tensor] = None  # noqa: UP045


def epoch_arrays(
    x,
    y=None,
    sample_weight=None,
    *,
    batch_size: int,
    seed: int | None = None,
    shuffle: bool | str | None = None,
    first_epoch: int = 0,
):
    """A `tf.data.Dataset` whose every element is one epoch of the arrays (`EpochArrays`).

    What `fit(x, y)` trains on: `fit(epoch_arrays(...), steps_per_epoch=1)` makes the steps of
    `fit(x, y, batch_size=batch_size)` with each epoch one compiled call. The arrays are held once
    (`held_tensor`); batches are sliced, or gathered through the epoch's permutation, in the
    step. Epoch `e`'s order (`keras_mle.data.order`) depends only on `seed` and `e`, so a resumed
    run repeats it; the next epoch's order is drawn while this one trains, in the tf.data
    pipeline (where `row_permutation`, which XLA cannot compile, runs).

    Args:
        x, y, sample_weight: Checked arrays in the model's dtype (`model.check_data`).
        batch_size: Rows per batch; a batch larger than the data is the full batch.
        seed: The fit's seed (`order.draw_seed()`), required when shuffling. Defaults to
            `None`.
        shuffle: `False` (rows in order), `True` (`order`: `order.row_permutation(seed, e, n)`)
            or `"batch"` (`batch_order`: `order.batch_permutation(seed, e, n // batch_size)`).
            Defaults to `None`: `True` when a seed is given, else `False` (the previous
            release's `seed=` alone).
        first_epoch: The epoch of the first element. Defaults to `0`.
    """
    check_positive_int("batch_size", batch_size)
    if shuffle is None:
        shuffle = seed is not None
    shuffle = _checked_order(shuffle, seed, "epoch_arrays")
    first_epoch = _check_epoch(first_epoch)
    n = num_rows(x)
    tensors = [
        None if a is None else tf.nest.map_structure(held_tensor, a) for a in (x, y, sample_weight)
    ]
    batch_size = min(batch_size, n)

    def epoch(e):
        rows = order_lib.row_permutation(seed, e, n) if shuffle is True else None
        batches = None
        if shuffle == "batch":
            batches = order_lib.batch_permutation(seed, e, n // batch_size)
        x, y, w = tensors
        return EpochArrays(
            x=x, y=y, sample_weight=w, order=rows, batch_size=batch_size, batch_order=batches
        )

    # The next epoch's order is drawn while this one trains.
    dataset = tf.data.Dataset.range(first_epoch, _ENDLESS).map(epoch).prefetch(1)
    return _without_rewrites(dataset)


#: Alignment of the buffers `held_tensor` hands to TensorFlow (that of its own allocations).
_ALIGNMENT = 64


def held_tensor(array: np.ndarray) -> tf.Tensor:
    """A tensor of a copy of `array`, made without a second, transient copy.

    `tf.constant` of a NumPy array holds two copies of it until an op first reads the tensor
    (TensorFlow 2.21): the peak memory of converting 1 GB of data is 2 GB. Here the array is
    copied once into an aligned NumPy buffer that TensorFlow then uses as it is (DLPack, no
    copy), or, where that is not available, converted by `tf.constant`.
    """
    array = np.asarray(array)
    array = array.astype(array.dtype.newbyteorder("="), copy=False)  # DLPack: native order only
    buffer = np.empty(array.nbytes + _ALIGNMENT, np.uint8)
    start = -buffer.ctypes.data % _ALIGNMENT
    copy = buffer[start : start + array.nbytes].view(array.dtype).reshape(array.shape)
    copy[...] = array
    try:
        return tf.experimental.dlpack.from_dlpack(copy.__dlpack__())
    except (AttributeError, BufferError, TypeError, ValueError, tf.errors.OpError):
        return tf.constant(array)
