"""Training data from files: `data.csv_dataset`, `data.write_shards` and `data.shard_dataset`."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mle
from keras_mle import data

N = 1003  # not a multiple of the batch sizes or the shard sizes below


@pytest.fixture(scope="module")
def table():
    x, y = data.noisy_line(n=N, seed=0)
    x2 = np.stack([x, x**2], axis=1)
    w = np.linspace(0.5, 2.0, N).astype(np.float32)
    return x2, y, w


def write_csv(path, header, rows, *, sep=",", bom=False):
    with open(path, "w", encoding="utf-8-sig" if bom else "utf-8") as file:
        file.write(sep.join(header) + "\n")
        for row in rows:
            file.write(sep.join("" if v is None else repr(float(v)) for v in row) + "\n")


@pytest.fixture
def csv_parts(tmp_path, table):
    """The table in three semicolon-separated files with a byte order mark, columns shuffled."""
    x2, y, w = table
    for i, (start, stop) in enumerate([(0, 400), (400, 800), (800, N)]):
        rows = zip(w[start:stop], y[start:stop], x2[start:stop, 1], x2[start:stop, 0], strict=True)
        write_csv(tmp_path / f"part-{i}.csv", ["w", "y", "b", "a"], rows, sep=";", bom=True)
    return str(tmp_path / "part-*.csv")


def gathered(dataset):
    batches = list(dataset)
    return [np.concatenate([b[i] for b in batches]) for i in range(3)], [len(b[0]) for b in batches]


def test_csv_dataset_reads_named_columns_across_files(csv_parts, table):
    dataset = data.csv_dataset(
        csv_parts, x=["a", "b"], y="y", sample_weight="w", batch_size=100, sep=";"
    )
    assert dataset.cardinality() == 11  # known: one step per batch
    (x, y, w), sizes = gathered(dataset)
    # float32 values written with repr and parsed back: exact.
    np.testing.assert_array_equal(x, table[0])
    np.testing.assert_array_equal(y, table[1])
    np.testing.assert_array_equal(w, table[2])
    assert sizes == [100] * 10 + [3]  # batches run across file boundaries


def test_fit_on_csv_equals_fit_on_arrays(csv_parts, table):
    x2, y, w = table
    expected = keras_mle.LinearRegression(m_initializer="zeros")
    expected.compile(optimizer=keras.optimizers.SGD(0.1))
    expected.fit(x2, y, sample_weight=w, batch_size=100, shuffle=False, epochs=2, verbose=0)
    model = keras_mle.LinearRegression(m_initializer="zeros")
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    dataset = data.csv_dataset(
        csv_parts, x=["a", "b"], y="y", sample_weight="w", batch_size=100, sep=";"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. Keras' "Your input ran out of data"
        model.fit(dataset, epochs=2, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 22
    for name, value in expected.params.items():
        np.testing.assert_array_equal(model.params[name], value, err_msg=name)


def test_csv_missing_values(tmp_path):
    rows = [(1.0, 2.0), (None, 3.0), (2.0, 5.0), (3.0, None), (4.0, 9.0)]
    write_csv(tmp_path / "m.csv", ["x", "y"], rows)
    dropped = data.csv_dataset(tmp_path / "m.csv", x=["x"], y="y", batch_size=2, missing="drop")
    assert dropped.cardinality() == 2
    x, y = (np.concatenate([b[i] for b in dropped]) for i in range(2))
    np.testing.assert_array_equal(x[:, 0], [1.0, 2.0, 4.0])
    np.testing.assert_array_equal(y, [2.0, 5.0, 9.0])
    # The 3 complete rows in batches of one: 3 batches, as many as are read.
    single = data.csv_dataset(tmp_path / "m.csv", x=["x"], y="y", batch_size=1, missing="drop")
    assert single.cardinality() == 3 == len(list(single))
    strict = data.csv_dataset(tmp_path / "m.csv", x=["x"], y="y", batch_size=2)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"column\W+x\W+has a missing"):
        list(strict)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"x": ["a"], "y": "nope"}, r"column\(s\) \['nope'\] not found"),
        ({"x": "a", "y": "y"}, "x must be a non-empty list"),
        ({"x": ["a"], "y": "a"}, r"columns \['a'\] are named more than once"),
        ({"x": ["a"], "y": "y", "missing": "zero"}, "missing must be one of"),
        ({"x": ["a"], "y": "y", "sep": ";;"}, "sep must be one character"),
        ({"x": ["a"], "y": "y", "batch_size": 0}, "batch_size must be a positive"),
    ],
)
def test_csv_dataset_refuses_bad_arguments(tmp_path, kwargs, match):
    write_csv(tmp_path / "f.csv", ["a", "y"], [(1.0, 2.0)])
    arguments = {"batch_size": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        data.csv_dataset(tmp_path / "f.csv", **arguments)


def test_csv_dataset_refuses_bad_files(tmp_path):
    with pytest.raises(ValueError, match="pattern: no file matches"):
        data.csv_dataset(str(tmp_path / "*.csv"), x=["a"], batch_size=2)
    write_csv(tmp_path / "1.csv", ["a", "y"], [(1.0, 2.0)])
    write_csv(tmp_path / "2.csv", ["y", "a"], [(1.0, 2.0)])
    with pytest.raises(ValueError, match="2.csv: its header differs"):
        data.csv_dataset(str(tmp_path / "*.csv"), x=["a"], y="y", batch_size=2)
    write_csv(tmp_path / "3.csv", ["a", "a"], [(1.0, 2.0)])
    with pytest.raises(ValueError, match=r"duplicate column name\(s\) \['a'\]"):
        data.csv_dataset(tmp_path / "3.csv", x=["a"], batch_size=2)


@pytest.mark.parametrize("batch_size", [100, 128])
def test_shards_round_trip(tmp_path, table, batch_size):
    x2, y, w = table
    manifest = data.write_shards(tmp_path / "s", x2, y, w, rows_per_shard=300)
    dataset = data.shard_dataset(manifest, batch_size=batch_size)
    assert dataset.cardinality() == -(-N // batch_size)
    (x, yy, ww), sizes = gathered(dataset)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(yy, y)
    np.testing.assert_array_equal(ww, w)
    assert sizes[:-1] == [batch_size] * (len(sizes) - 1)  # across shard boundaries


def test_fit_on_float64_shards_equals_fit_on_arrays(tmp_path, table):
    x2, y, _ = table
    manifest = data.write_shards(tmp_path / "s", x2, y, rows_per_shard=250, dtype="float64")
    expected = keras_mle.LinearRegression(m_initializer="zeros", dtype="float64")
    expected.compile(optimizer=keras.optimizers.SGD(0.1))
    expected.fit(x2.astype(np.float64), y.astype(np.float64), batch_size=64, shuffle=False,
                 verbose=0)  # fmt: skip
    model = keras_mle.LinearRegression(m_initializer="zeros", dtype="float64")
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.fit(data.shard_dataset(manifest, batch_size=64), verbose=0)
    for name, value in expected.params.items():
        np.testing.assert_array_equal(model.params[name], value, err_msg=name)


def test_a_nan_in_a_shard_is_refused_by_the_step(tmp_path, table):
    x2, y, _ = table
    x2 = x2.copy()
    manifest = data.write_shards(tmp_path / "s", x2, y)
    # Corrupt one value on disk after writing (write_shards itself refuses NaN).
    shard = str(tmp_path / "s-g1-00000-of-00001.bin")
    values = np.fromfile(shard, "<f4")
    values[3 * 250] = np.nan  # row 250, first feature: batch 3 of 100 rows
    values.tofile(shard)
    model = keras_mle.LinearRegression()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    with pytest.raises(ValueError, match="^x has NaN or Inf values in epoch 1, batch 3"):
        model.fit(data.shard_dataset(manifest, batch_size=100), verbose=0)


def test_write_shards_protects_existing_files(tmp_path, table):
    x2, y, _ = table
    data.write_shards(tmp_path / "s", x2, y)
    with pytest.raises(ValueError, match="shards of .* exist; pass overwrite=True"):
        data.write_shards(tmp_path / "s", x2, y)
    with pytest.raises(ValueError, match="^x contains 1 NaN"):
        data.write_shards(tmp_path / "t", np.array([1.0, np.nan]), overwrite=True)
    with pytest.raises(ValueError, match="prefix: folder"):
        data.write_shards(tmp_path / "no" / "s", x2, y)


def test_shard_dataset_refuses_damaged_shards(tmp_path, table):
    x2, y, _ = table
    manifest = data.write_shards(tmp_path / "s", x2, y, rows_per_shard=500)
    with open(tmp_path / "s-g1-00001-of-00003.bin", "r+b") as file:
        file.truncate(100)
    with pytest.raises(ValueError, match="s-g1-00001-of-00003.bin' is missing or not 6000 bytes"):
        data.shard_dataset(manifest, batch_size=10)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="is not a shard manifest"):
        data.shard_dataset(tmp_path / "bad.json", batch_size=10)
