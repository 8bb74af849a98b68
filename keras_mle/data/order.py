"""The one place that draws a rows' order: stateless, from `(seed, epoch)`, for every path.

Every training path that shuffles in-memory rows (the in-graph epochs of `fit`, Keras' batches
from `array_dataset`, the custom loops, the multi-worker fit) asks this module for epoch `e`'s
order, so that each sees the same rows in the same order, and a resumed run, which knows only
the seed and the epoch, repeats it. One seed is drawn per fit (`draw_seed`).

Three orders (`check_shuffle`):

- `False`: the rows in order;
- `True`: a permutation of the rows, new each epoch (`row_permutation`);
- `"batch"` (Keras 2's meaning): the rows cut into contiguous batches of `batch_size`, the
  order of the full batches drawn anew each epoch (`batch_permutation`), the rows inside a
  batch unchanged, and the last, shorter batch kept last.

Indices are int32 tensors (rows, batches); seeds and epochs are int64. Each function works
eagerly and inside `tf.function`, and the batch order also under XLA. The row permutation is
TensorFlow's `stateless_shuffle`, the formula of the previous release (its backups resume to
the same rows), which has no XLA kernel (TensorFlow 2.21): draw it outside an XLA-compiled
function (`epoch_arrays` draws it in its tf.data pipeline) and pass it in.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from keras_mle.data.validation import check_positive_int

__all__ = [
    "SHUFFLE_CHOICES",
    "check_shuffle",
    "draw_seed",
    "row_permutation",
    "batch_permutation",
    "epoch_rows",
    "batches_per_epoch",
]

#: The values `shuffle` may take, as `check_shuffle` returns them.
SHUFFLE_CHOICES = (True, False, "batch")

#: Or-ed into the epoch of the batch order's seed pair: the row order's epochs are >= 0, so the
#: two orders read disjoint Philox streams.
BATCH_STREAM = -(2**63)


def check_shuffle(shuffle) -> bool | str:
    """`shuffle` as `True`, `False` or `"batch"`; anything else raises naming `shuffle`.

    Raises:
        ValueError: for a string other than `"batch"`.
        TypeError: for any other type (`None`, a number).
    """
    if isinstance(shuffle, (bool, np.bool_)):
        return bool(shuffle)
    choices = "True, False or 'batch' (the order of whole batches)"
    if isinstance(shuffle, str):
        if shuffle == "batch":
            return "batch"
        raise ValueError(f"shuffle must be {choices}, got {shuffle!r}.")
    raise TypeError(f"shuffle must be {choices}, got {shuffle!r}.")


def draw_seed() -> int:
    """The seed of one fit's orders, from NumPy's global generator.

    `keras.utils.set_random_seed` seeds that generator, so it fixes the seed, hence every
    epoch's order. The value is in `[0, 2**62)`.
    """
    return int(np.random.randint(2**62, dtype=np.int64))


def _seed_pair(seed, epoch, stream=0) -> tf.Tensor:
    """The int64 pair `[seed, epoch | stream]` that seeds a stateless op."""
    epoch = tf.cast(epoch, tf.int64)
    if stream:
        epoch = tf.bitwise.bitwise_or(epoch, tf.constant(stream, tf.int64))
    return tf.stack([tf.cast(seed, tf.int64), epoch])


def row_permutation(seed, epoch, n) -> tf.Tensor:
    """Epoch `epoch`'s permutation of `n` rows: an int32 vector of shape `(n,)`.

    Formula:

    ```
    stateless_shuffle(range(n), seed=[seed, epoch])   # the pair as int64
    ```

    exactly that of the previous release's `epoch_arrays`, so its backups resume to the same
    rows. Not compilable by XLA (see the module's docstring).

    Args:
        seed: The fit's seed (`draw_seed`), an integer or an int scalar tensor.
        epoch: The epoch, >= 0.
        n: The number of rows.
    """
    return tf.random.experimental.stateless_shuffle(
        tf.range(tf.cast(n, tf.int32)), seed=_seed_pair(seed, epoch)
    )


def batch_permutation(seed, epoch, num_full_batches) -> tf.Tensor:
    """Epoch `epoch`'s order of the full batches for `shuffle="batch"`: int32, shape `(k,)`.

    Formula:

    ```
    keys = stateless_uniform_full_int([k], seed=[seed, epoch | BATCH_STREAM], alg="philox")
    order = argsort(keys, stable=True)
    ```

    a uniformly random order of `k = num_full_batches` batches (ties among 64-bit keys are
    broken by position). The seed pair differs from every pair of `row_permutation`, and the
    Philox algorithm is named, so eager, `tf.function` and XLA give the same order.

    Args:
        seed: The fit's seed (`draw_seed`).
        epoch: The epoch, >= 0.
        num_full_batches: The number of full batches, `n // batch_size`.
    """
    keys = tf.random.stateless_uniform(
        [tf.cast(num_full_batches, tf.int32)],
        seed=_seed_pair(seed, epoch, BATCH_STREAM),
        minval=None,
        maxval=None,
        dtype=tf.int64,
        alg="philox",
    )
    return tf.argsort(keys, stable=True)


def epoch_rows(seed, epoch, n: int, batch_size: int, shuffle) -> tf.Tensor | None:
    """Epoch `epoch`'s row indices as one int32 vector, for paths that gather rows.

    Batch `i` of the epoch is `rows[i * batch_size : (i + 1) * batch_size]` (a `batch_size`
    larger than `n` is `n`, the full batch).

    Args:
        seed: The fit's seed (`draw_seed`); unused for `shuffle=False`.
        epoch: The epoch, >= 0.
        n: The number of rows (a Python integer).
        batch_size: Rows per batch; used by `"batch"` only.
        shuffle: As `check_shuffle` takes it.

    Returns:
        `None` for `shuffle=False` (the rows in order); `row_permutation(seed, epoch, n)` for
        `True`; for `"batch"`, the rows of the full batches in `batch_permutation` order, then
        the tail rows `n // batch_size * batch_size, ..., n - 1` in order.
    """
    shuffle = check_shuffle(shuffle)
    if shuffle is False:
        return None
    if shuffle is True:
        return row_permutation(seed, epoch, n)
    batch_size = min(check_positive_int("batch_size", batch_size), n)
    full = n // batch_size
    starts = batch_permutation(seed, epoch, full) * batch_size
    rows = tf.reshape(starts[:, None] + tf.range(batch_size)[None, :], [-1])
    return tf.concat([rows, tf.range(full * batch_size, n)], axis=0)


def batches_per_epoch(n: int, batch_size: int) -> int:
    """Batches in one epoch of `n` rows: `ceil(n / batch_size)` (the last may be shorter).

    The `steps_per_epoch` with which Keras reads exactly one epoch of an endless, shuffled
    `array_dataset` per epoch.
    """
    return math.ceil(check_positive_int("n", n) / check_positive_int("batch_size", batch_size))
