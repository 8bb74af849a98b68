"""The data module: the articles' data sets, the shared checks, and the datasets fit() reads."""

import warnings

import keras
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from keras_mle import data


def test_noisy_line_defaults_are_the_first_articles():
    x, y = data.noisy_line()
    assert x.shape == y.shape == (100,)
    assert x.dtype == y.dtype == np.float32
    assert 0.0 <= x.min() and x.max() < 1.0


def test_noisy_line_is_seeded():
    x1, y1 = data.noisy_line(seed=7)
    x2, y2 = data.noisy_line(seed=7)
    x3, _ = data.noisy_line(seed=8)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, x3)


def test_noisy_line_distribution_matches_scipy():
    # x ~ U[0, 1) and noise ~ N(0, noise^2), checked by Kolmogorov-Smirnov against scipy.stats;
    # a correct generator fails with probability 1e-6 per test.
    x, y = data.noisy_line(m=0.5, b=-1.0, n=20_000, noise=0.2, seed=3)
    noise = y.astype(np.float64) - (0.5 * x.astype(np.float64) - 1.0)
    assert scipy.stats.kstest(x, "uniform").pvalue > 1e-6
    assert scipy.stats.kstest(noise, "norm", args=(0.0, 0.2)).pvalue > 1e-6


def test_noisy_line_moments():
    n = 200_000
    x, y = data.noisy_line(m=1.0, b=2.0, n=n, noise=0.15, seed=0)
    noise = y.astype(np.float64) - (x.astype(np.float64) + 2.0)
    # Five standard errors: U[0,1) has sd 1/sqrt(12); the noise mean has sd 0.15/sqrt(n) and
    # the noise sd an asymptotic sd of 0.15/sqrt(2n). A false alarm has probability < 1e-6.
    assert abs(x.mean() - 0.5) < 5 / np.sqrt(12 * n)
    assert abs(noise.mean()) < 5 * 0.15 / np.sqrt(n)
    assert abs(noise.std() - 0.15) < 5 * 0.15 / np.sqrt(2 * n)


def test_noise_free_line_is_exact():
    x, y = data.noisy_line(m=3.0, b=-1.0, n=10, noise=0.0, seed=1)
    # One float32 rounding of a value below 3 in magnitude: at most 2.4e-7.
    np.testing.assert_allclose(y, 3.0 * x.astype(np.float64) - 1.0, atol=2.5e-7)


def test_gaussian_sample_defaults_are_the_second_articles():
    samples = data.gaussian_sample()
    assert samples.shape == (1000,)
    assert samples.dtype == np.float32
    np.testing.assert_array_equal(samples, data.gaussian_sample(seed=0))
    assert not np.array_equal(samples, data.gaussian_sample(seed=1))


def test_gaussian_sample_distribution_matches_scipy():
    samples = data.gaussian_sample(mu=-3.0, sigma=0.5, n=20_000, seed=5)
    assert scipy.stats.kstest(samples, "norm", args=(-3.0, 0.5)).pvalue > 1e-6
    assert scipy.stats.kstest(samples, "norm", args=(-3.0, 0.55)).pvalue < 1e-6


def test_gaussian_sample_moments():
    n = 200_000
    samples = data.gaussian_sample(mu=2.0, sigma=1.0, n=n, seed=0).astype(np.float64)
    # Five standard errors of the mean (sigma/sqrt(n)) and of the sd (sigma/sqrt(2n)).
    assert abs(samples.mean() - 2.0) < 5 / np.sqrt(n)
    assert abs(samples.std() - 1.0) < 5 / np.sqrt(2 * n)


def test_stack_batches_keeps_the_last_batch_apart():
    x = np.arange(10.0)
    w = np.arange(10.0) + 1
    batches = data.stack_batches(x, 2 * x, w, batch_size=4, repeats=3)
    np.testing.assert_array_equal(batches.x.numpy(), [[0, 1, 2, 3], [4, 5, 6, 7]])
    np.testing.assert_array_equal(batches.y.numpy(), 2 * batches.x.numpy())
    np.testing.assert_array_equal(batches.last_x.numpy(), [8, 9])
    np.testing.assert_array_equal(batches.last_sample_weight.numpy(), [9, 10])
    assert int(batches.repeats) == 3


def test_stack_batches_without_a_remainder_or_targets():
    batches = data.stack_batches(np.arange(8.0), batch_size=4)
    assert batches.x.shape == (2, 4)
    assert batches.y is None and batches.sample_weight is None and batches.last_x is None
    # Fewer rows than a batch: the full batch, so shapes follow the data, not batch_size.
    short = data.stack_batches(np.arange(3.0), batch_size=4)
    assert short.x.shape == (1, 3) and short.last_x is None


def test_epoch_dataset_element_is_one_epoch():
    x, y = data.noisy_line(n=10)
    element = next(iter(data.epoch_dataset(x, y, batch_size=4)))
    assert isinstance(element, data.EpochBatches)
    assert element.x.shape == element.y.shape == (2, 4)
    assert element.last_x.shape == (2,)


@pytest.mark.parametrize("dtype", [np.int64, np.bool_])
def test_check_array_casts_integers_and_booleans_to_float64(dtype):
    checked = data.check_array("x", np.ones(3, dtype=dtype))
    assert checked.dtype == np.float64


def test_integers_are_kept_exactly():
    big = np.array([2**40 + 1, 2**40 + 3])
    np.testing.assert_array_equal(data.check_array("x", big), big)


@pytest.mark.parametrize("shuffle", [False, True])
def test_array_dataset_keeps_dtype_rows_and_cardinality(shuffle):
    x = np.arange(10, dtype=np.float64) + 1e8 + 0.25  # not representable in float32
    w = np.arange(10, dtype=np.float64)
    dataset = data.array_dataset((x, w), batch_size=4, shuffle=shuffle, seed=5 if shuffle else None)
    # One epoch of 3 batches; shuffled, one epoch after another without end (Keras is then
    # given steps_per_epoch=3).
    infinite = int(tf.data.INFINITE_CARDINALITY)
    assert int(dataset.cardinality()) == (infinite if shuffle else 3)
    assert data.batches_per_epoch(10, 4) == 3
    batches = list(dataset.take(3))
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    assert all(b[0].dtype == tf.float64 for b in batches)
    rows = np.concatenate([b[0].numpy() for b in batches])
    weights = np.concatenate([b[1].numpy() for b in batches])
    # Every row once, its weight with it; in order unless shuffled.
    np.testing.assert_array_equal(np.sort(rows), x)
    np.testing.assert_array_equal(weights, rows - x[0])
    assert np.array_equal(rows, x) != shuffle


SEED = 2**40 + 3


def epochs_of(dataset, n=10, batch_size=4, epochs=2):
    """The rows of `epochs` consecutive epochs, read from the batches of `dataset`."""
    batches = list(dataset.take(epochs * data.batches_per_epoch(n, batch_size)))
    per_epoch = len(batches) // epochs
    return [
        np.concatenate([b[0].numpy() for b in batches[e * per_epoch : (e + 1) * per_epoch]])
        for e in range(epochs)
    ], [len(b[0]) for b in batches]


@pytest.mark.parametrize("shuffle", [True, "batch"])
def test_shuffled_array_dataset_reads_epoch_rows_epoch_after_epoch(shuffle):
    x = np.arange(10.0)
    arrays = (x, 10 * x)
    rows, sizes = epochs_of(data.array_dataset(arrays, batch_size=4, shuffle=shuffle, seed=SEED))
    assert sizes == [4, 4, 2, 4, 4, 2]  # each epoch ends with its short batch
    for epoch in (0, 1):
        expected = data.epoch_rows(SEED, epoch, 10, 4, shuffle).numpy()
        np.testing.assert_array_equal(rows[epoch], x[expected], err_msg=f"epoch {epoch}")
    # A resumed fit starts at its first epoch: the rows of epochs 3 and 4.
    resumed = data.array_dataset(arrays, batch_size=4, shuffle=shuffle, seed=SEED, first_epoch=3)
    rows, _ = epochs_of(resumed)
    for epoch in (3, 4):
        expected = data.epoch_rows(SEED, epoch, 10, 4, shuffle).numpy()
        np.testing.assert_array_equal(rows[epoch - 3], x[expected], err_msg=f"epoch {epoch}")
    # Weights travel with their rows.
    batch = next(iter(resumed))
    np.testing.assert_array_equal(batch[1], 10 * batch[0])


class Recorder(keras.Model):
    """A Keras model whose (eager) train step only records the rows of its batch."""

    def __init__(self):
        super().__init__()
        self.rows = []

    def train_step(self, data):
        self.rows.append(data[0].numpy())
        return {"rows": tf.constant(float(len(data[0])))}


@pytest.mark.parametrize("shuffle", [True, "batch"])
def test_keras_fit_reads_one_epoch_of_rows_per_epoch(shuffle):
    # Given steps_per_epoch, Keras reads on through the endless dataset: its epoch e is
    # exactly epoch e of the order, from a resumed fit's first epoch too.
    x = np.arange(10.0)
    for initial_epoch in (0, 3):
        model = Recorder()
        model.compile(run_eagerly=True)
        dataset = data.array_dataset(
            (x, x), batch_size=4, shuffle=shuffle, seed=SEED, first_epoch=initial_epoch
        )
        steps = data.batches_per_epoch(10, 4)
        model.fit(dataset, epochs=initial_epoch + 2, initial_epoch=initial_epoch,
                  steps_per_epoch=steps, shuffle=False, verbose=0)  # fmt: skip
        assert [len(rows) for rows in model.rows] == [4, 4, 2] * 2
        for k, epoch in enumerate((initial_epoch, initial_epoch + 1)):
            seen = np.concatenate(model.rows[k * steps : (k + 1) * steps])
            expected = data.epoch_rows(SEED, epoch, 10, 4, shuffle).numpy()
            np.testing.assert_array_equal(seen, x[expected], err_msg=f"epoch {epoch}")


def test_shuffled_array_dataset_keeps_the_element_structure():
    x = {"a": np.arange(6.0), "b": np.arange(12.0).reshape(6, 2)}
    y = np.arange(6.0) * 10
    plain = data.array_dataset((x, y), batch_size=4)
    shuffled = data.array_dataset((x, y), batch_size=4, shuffle=True, seed=SEED)
    assert shuffled.element_spec == plain.element_spec
    batch_x, batch_y = next(iter(shuffled))
    rows = data.epoch_rows(SEED, 0, 6, 4, True).numpy()[:4]
    np.testing.assert_array_equal(batch_x["a"], rows)
    np.testing.assert_array_equal(batch_x["b"], x["b"][rows])
    np.testing.assert_array_equal(batch_y, 10 * rows)


def test_shuffling_needs_a_seed():
    with pytest.raises(ValueError, match=r"^seed: array_dataset\(shuffle=True\) draws"):
        data.array_dataset((np.arange(4.0),), batch_size=2, shuffle=True)
    with pytest.raises(ValueError, match=r"^seed: epoch_arrays\(shuffle='batch'\) draws"):
        data.epoch_arrays(np.arange(4.0), batch_size=2, shuffle="batch")
    with pytest.raises(TypeError, match="^seed must be an integer or None, got 1.5"):
        data.array_dataset((np.arange(4.0),), batch_size=2, shuffle=True, seed=1.5)
    with pytest.raises(ValueError, match="^first_epoch must be an integer >= 0, got -1"):
        data.array_dataset((np.arange(4.0),), batch_size=2, shuffle=True, seed=1, first_epoch=-1)
    with pytest.raises(ValueError, match="^shuffle must be True, False or 'batch'"):
        data.array_dataset((np.arange(4.0),), batch_size=2, shuffle="rows", seed=1)


def rows_of_epoch(element):
    """The rows of an `EpochArrays`, batch after batch, as its docstring tells a consumer."""
    n = int(element.x.shape[0])
    size = element.batch_size
    full = n // size
    if element.order is not None:
        return element.order.numpy()
    if element.batch_order is None:
        return np.arange(n)
    starts = element.batch_order.numpy() * size
    return np.concatenate([*(np.arange(s, s + size) for s in starts), np.arange(full * size, n)])


@pytest.mark.parametrize(
    "kwargs, shuffle",
    [
        ({}, False),
        ({"shuffle": False, "seed": SEED}, False),  # a seed given but not shuffling
        ({"seed": SEED}, True),  # the previous release's seed= alone
        ({"shuffle": True, "seed": SEED}, True),
        ({"shuffle": "batch", "seed": SEED}, "batch"),
    ],
)
def test_epoch_arrays_orders_each_epoch_as_epoch_rows(kwargs, shuffle):
    x = np.arange(10.0)
    epochs = iter(data.epoch_arrays(x, 2 * x, batch_size=4, first_epoch=2, **kwargs))
    for epoch in (2, 3):
        element = next(epochs)
        assert isinstance(element, data.EpochArrays) and element.batch_size == 4
        assert (element.order is not None) == (shuffle is True)
        assert (element.batch_order is not None) == (shuffle == "batch")
        expected = data.epoch_rows(SEED, epoch, 10, 4, shuffle)
        expected = np.arange(10) if expected is None else expected.numpy()
        np.testing.assert_array_equal(rows_of_epoch(element), expected, err_msg=f"epoch {epoch}")


def test_array_dataset_of_one_array_yields_bare_batches():
    batches = list(data.array_dataset((np.arange(5.0),), batch_size=2))
    assert [b.numpy().tolist() for b in batches] == [[0.0, 1.0], [2.0, 3.0], [4.0]]


def test_cast_for_model_warns_when_the_cast_merges_values():
    # x near 1e8 with a spread of 100: float32 values there are 8 apart.
    x = 1e8 + np.linspace(0.0, 100.0, 200)
    with pytest.warns(data.PrecisionWarning, match="^x: casting the float64 data"):
        cast = data.cast_for_model("x", x, np.float32)
    assert len(np.unique(cast)) < 20
    # A well-scaled column loses nothing that matters: no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data.cast_for_model("x", np.linspace(0.0, 1.0, 200), np.float32)
        data.cast_for_model("x", x, np.float64)


def test_cast_for_model_names_the_lossy_column():
    x = np.stack([np.linspace(0.0, 1.0, 50), 1e7 + np.linspace(0.0, 1.0, 50)], axis=1)
    with pytest.warns(data.PrecisionWarning, match=r"column\(s\) \[1\]"):
        data.cast_for_model("x", x, np.float32)


def test_check_not_constant():
    data.check_not_constant("samples", np.array([1.0, 1.0 + 1e-12]))
    with pytest.raises(ValueError, match="^samples are constant"):
        data.check_not_constant("samples", np.full(4, 3.0))
    with pytest.raises(ValueError, match=r"^y is constant: .* no MLE exists\. Use OLS\.$"):
        data.check_not_constant("y", np.full(4, 3.0), hint=" Use OLS.")


def test_check_sample_weight_compares_pandas_indexes_with_the_data():
    pd = pytest.importorskip("pandas")
    x = pd.Series([1.0, 2.0, 3.0], index=[10, 11, 12])
    w = data.check_sample_weight(
        pd.Series([1.0, 2.0, 3.0], index=x.index), 3, aligned_with=("x", x)
    )
    np.testing.assert_array_equal(w, [1.0, 2.0, 3.0])
    data.check_sample_weight(np.ones(3), 3, aligned_with=("x", x))  # an array pairs by position
    with pytest.raises(ValueError, match=r"^x and sample_weight .* \(at position 0: 10 and 0\)"):
        data.check_sample_weight(pd.Series([1.0, 2.0, 3.0]), 3, aligned_with=("x", x))


def test_check_array_refuses_masked_cells_and_keeps_an_empty_mask():
    values = np.ma.masked_array([[1.0, 2.0], [3.0, 4.0]], mask=[[0, 1], [0, 0]])
    with pytest.raises(ValueError, match=r"^y is a masked array with 1 masked cell\(s\) of 4"):
        data.check_array("y", values)
    np.testing.assert_array_equal(data.check_array("y", np.ma.masked_array([1.0, 2.0])), [1, 2])


def test_check_array_keeps_float64_and_accepts_lists_and_tensors():
    import tensorflow as tf

    assert data.check_array("x", np.ones(3)).dtype == np.float64
    np.testing.assert_array_equal(data.check_array("x", [1.0, 2.0]), [1.0, 2.0])
    np.testing.assert_array_equal(data.check_array("x", tf.constant([1.0, 2.0])), [1.0, 2.0])


def test_check_xy_flattens_column_targets():
    x, y = data.check_xy(np.zeros((4, 2)), np.arange(4.0).reshape(4, 1))
    assert y.shape == (4,)
    np.testing.assert_array_equal(y, np.arange(4.0))


@pytest.mark.parametrize(
    "array",
    [
        np.arange(7.0),
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.asfortranarray(np.arange(12.0).reshape(4, 3)),  # not C-contiguous
        np.arange(40.0).reshape(10, 4)[::3, 1:],  # a strided view
        np.ones((2, 5, 5, 1), np.float32),
        np.arange(6.0).astype(">f8"),  # big-endian: held in native order
    ],
)
def test_held_tensor_is_an_exact_copy(array):
    tensor = data.held_tensor(array)
    assert tensor.dtype == array.dtype.newbyteorder("=") and tuple(tensor.shape) == array.shape
    np.testing.assert_array_equal(tensor.numpy(), array)
    array_before = array.copy()
    array[...] = -1.0  # the tensor holds a copy: changing the array later changes nothing
    np.testing.assert_array_equal(tensor.numpy(), array_before)
    np.testing.assert_array_equal(tf.reduce_sum(tensor).numpy(), array_before.sum())
