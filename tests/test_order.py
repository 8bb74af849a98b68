"""The rows' order (`keras_mle.data.order`): stateless from `(seed, epoch)`, one for every path."""

import keras
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from keras_mle import data

SEED = 2**61 + 12345  # above 2**32: both halves of the int64 seed matter
MODES = ["eager", "function", "xla"]


def run(mode, function, seed, epoch, *sizes):
    """`function(seed, epoch, *sizes)` eagerly, or traced by `tf.function` or compiled by XLA
    with the seed and the epoch as int64 tensors (the sizes, shapes, stay Python integers)."""
    if mode == "eager":
        return function(seed, epoch, *sizes)
    compiled = tf.function(lambda s, e: function(s, e, *sizes), jit_compile=mode == "xla")
    return compiled(tf.constant(seed, tf.int64), tf.constant(epoch, tf.int64))


# Epoch e's order in the previous release, `epoch_arrays(np.arange(10.0), batch_size=4,
# seed=s)`: stateless_shuffle(range(10), [s, e]), worked out with keras_mle 0.x.
PREVIOUS_RELEASE = {
    (12345, 0): [9, 7, 6, 1, 3, 4, 8, 2, 5, 0],
    (12345, 1): [3, 6, 0, 4, 1, 8, 9, 7, 5, 2],
    (12345, 2): [2, 0, 8, 6, 4, 1, 7, 9, 5, 3],
    (2**62 - 1, 7): [3, 2, 8, 4, 0, 6, 1, 9, 5, 7],
}


@pytest.mark.parametrize("seed_epoch", sorted(PREVIOUS_RELEASE))
def test_row_permutation_is_the_previous_releases_order(seed_epoch):
    seed, epoch = seed_epoch
    rows = data.row_permutation(seed, epoch, 10)
    assert rows.dtype == tf.int32
    assert rows.numpy().tolist() == PREVIOUS_RELEASE[seed_epoch]
    # And the epochs of epoch_arrays, which a backup resumes, are drawn by it.
    epochs = iter(data.epoch_arrays(np.arange(10.0), batch_size=4, seed=seed, first_epoch=epoch))
    assert next(epochs).order.numpy().tolist() == PREVIOUS_RELEASE[seed_epoch]


def test_row_permutation_is_the_formula_at_scale():
    pair = tf.constant([SEED, 5], tf.int64)
    expected = tf.random.experimental.stateless_shuffle(tf.range(100_000), seed=pair)
    np.testing.assert_array_equal(data.row_permutation(SEED, 5, 100_000), expected)


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_row_permutation_is_a_permutation_repeated_per_epoch(mode):
    n = 1000
    first = run(mode, data.row_permutation, SEED, 3, n).numpy()
    np.testing.assert_array_equal(np.sort(first), np.arange(n))
    np.testing.assert_array_equal(run(mode, data.row_permutation, SEED, 3, n), first)
    # Another epoch or another seed: another order (equal with probability 1/1000!).
    assert not np.array_equal(run(mode, data.row_permutation, SEED, 4, n), first)
    assert not np.array_equal(run(mode, data.row_permutation, SEED + 1, 3, n), first)
    np.testing.assert_array_equal(run(mode, data.row_permutation, SEED, 3, n), first)


def test_row_permutation_has_no_xla_kernel_so_it_is_drawn_outside_xla():
    """What the module's docstring says: TensorFlow's stateless_shuffle (the previous release's
    formula) does not compile with XLA. If a TensorFlow release adds the kernel, the compiled
    order must be the same, and the docstrings can drop the caveat."""
    try:
        compiled = run("xla", data.row_permutation, SEED, 3, 1000)
    except tf.errors.InvalidArgumentError as error:
        assert "StatelessShuffle" in str(error)
    else:
        np.testing.assert_array_equal(compiled, data.row_permutation(SEED, 3, 1000))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("k", [1, 2, 10, 1000])
def test_batch_permutation_is_the_same_permutation_in_every_mode(mode, k):
    eager = data.batch_permutation(SEED, 2, k)
    assert eager.dtype == tf.int32
    np.testing.assert_array_equal(np.sort(eager.numpy()), np.arange(k))
    result = run(mode, data.batch_permutation, SEED, 2, k)
    assert result.dtype == tf.int32
    np.testing.assert_array_equal(result, eager)


def test_batch_permutation_repeats_per_epoch_and_differs_from_the_rows_stream():
    first = data.batch_permutation(SEED, 0, 1000).numpy()
    np.testing.assert_array_equal(data.batch_permutation(SEED, 0, 1000), first)
    assert not np.array_equal(data.batch_permutation(SEED, 1, 1000), first)
    assert not np.array_equal(data.batch_permutation(SEED + 1, 0, 1000), first)
    # Its own stream: not the row permutation of the same pair.
    assert not np.array_equal(data.row_permutation(SEED, 0, 1000), first)


def test_batch_permutation_draws_every_order_equally_often():
    # The 24 orders of 4 batches over 4800 epochs, 200 expected each: a chi-square test
    # (23 degrees of freedom) that a correct draw fails with probability 1e-6.
    epochs = tf.range(4800, dtype=tf.int64)
    orders = tf.map_fn(
        lambda e: data.batch_permutation(SEED, e, 4), epochs, fn_output_signature=tf.int32
    ).numpy()
    codes = orders @ np.array([64, 16, 4, 1])
    counts = np.unique(codes, return_counts=True)[1]
    assert len(counts) == 24
    assert scipy.stats.chisquare(counts).pvalue > 1e-6


def rows_of(mode, shuffle, epoch, n=103, batch_size=10, seed=SEED):
    return run(mode, data.epoch_rows, seed, epoch, n, batch_size, shuffle)


@pytest.mark.parametrize("mode", MODES)
def test_batch_shuffle_keeps_each_batch_contiguous_and_the_tail_last(mode):
    rows = rows_of(mode, "batch", 1)
    assert rows.dtype == tf.int32
    rows = rows.numpy()
    np.testing.assert_array_equal(rows, rows_of("eager", "batch", 1))
    np.testing.assert_array_equal(np.sort(rows), np.arange(103))
    blocks = rows[:100].reshape(10, 10)
    starts = blocks[:, 0]
    # Every full batch is 10 consecutive rows from a multiple of 10, in batch_permutation order.
    np.testing.assert_array_equal(blocks, starts[:, None] + np.arange(10))
    np.testing.assert_array_equal(starts // 10, data.batch_permutation(SEED, 1, 10))
    np.testing.assert_array_equal(rows[100:], [100, 101, 102])  # the short batch, last
    # A new order of the batches each epoch (equal with probability 1/10!).
    assert not np.array_equal(rows_of(mode, "batch", 2), rows)


def test_batch_shuffle_of_batches_that_divide_the_rows_or_exceed_them():
    rows = data.epoch_rows(SEED, 0, 100, 25, "batch").numpy()
    assert sorted(rows[::25].tolist()) == [0, 25, 50, 75]
    np.testing.assert_array_equal(rows.reshape(4, 25), rows[::25, None] + np.arange(25))
    # A batch larger than the data is the full batch: one batch, the rows in order.
    np.testing.assert_array_equal(data.epoch_rows(SEED, 0, 7, 10**9, "batch"), np.arange(7))


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_epoch_rows_of_each_shuffle(mode):
    assert data.epoch_rows(SEED, 0, 103, 10, False) is None
    rows = rows_of(mode, True, 3)
    np.testing.assert_array_equal(rows, data.row_permutation(SEED, 3, 103))


def test_batches_per_epoch():
    assert data.batches_per_epoch(103, 10) == 11
    assert data.batches_per_epoch(100, 10) == 10
    assert data.batches_per_epoch(5, 100) == 1
    with pytest.raises(ValueError, match="^batch_size must be a positive integer"):
        data.batches_per_epoch(5, 0)


def test_check_shuffle():
    assert data.check_shuffle(True) is True
    assert data.check_shuffle(np.bool_(False)) is False
    assert data.check_shuffle("batch") == "batch"
    assert data.SHUFFLE_CHOICES == (True, False, "batch")
    choices = r"^shuffle must be True, False or 'batch' \(the order of whole batches\), got "
    with pytest.raises(ValueError, match=choices + "'rows'"):
        data.check_shuffle("rows")
    for value in (None, 1, 0.0):
        with pytest.raises(TypeError, match=choices + repr(value)):
            data.check_shuffle(value)
    with pytest.raises(ValueError, match="^shuffle must be"):
        data.epoch_rows(SEED, 0, 10, 2, "Batch")


def test_draw_seed_comes_from_numpys_generator():
    np.random.seed(7)
    expected = int(np.random.randint(2**62, dtype=np.int64))
    np.random.seed(7)
    seed = data.draw_seed()
    assert type(seed) is int and seed == expected and 0 <= seed < 2**62
    keras.utils.set_random_seed(3)
    first = data.draw_seed()
    keras.utils.set_random_seed(3)
    assert data.draw_seed() == first
    assert data.draw_seed() != first
