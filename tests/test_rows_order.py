"""One rows' order for every training path: epoch `e` of a shuffled run takes its rows from
`(model.shuffle_seed, e)` (`keras_mle.data.order`), whichever path trains it.

So `fit` with whole in-graph epochs, `fit` over Keras' batches (a callback that watches
batches), and `keras_mle.loops.train` eager and in `tf.function` make the same steps under the
same seed, and each of them resumes from a backup exactly. The steps are checked against
weighted minibatch SGD in NumPy (float64) on the rows in the order `epoch_rows` gives.
"""

import keras
import numpy as np
import pytest
from helpers import StopAfter, WatchesBatches

import keras_mle
from keras_mle import checkpoint, data, loops

N, BATCH, LR, EPOCHS = 103, 10, 0.3, 4
# float32 steps against float64 NumPy: 4 epochs of 11 steps each stay within 2e-5.
TOLERANCE = 2e-5


def line():
    x, y = data.noisy_line(n=N, seed=0)
    weights = np.random.default_rng(2).uniform(0.5, 2.0, N).astype(np.float32)
    return x, y, weights


def trained(path, shuffle, *, seed=0, epochs=EPOCHS, callbacks=(), backup=None):
    x, y, w = line()
    keras.utils.set_random_seed(seed)
    model = keras_mle.LinearRegression(m_initializer="zeros")
    callbacks = list(callbacks)
    if path in ("fit", "fit-batches"):
        model.compile(optimizer=keras.optimizers.SGD(LR))
        if path == "fit-batches":
            callbacks.append(WatchesBatches())
        if backup is not None:
            callbacks.append(checkpoint.BackupAndRestore(backup))
        model.fit(
            x, y, sample_weight=w, batch_size=BATCH, epochs=epochs, shuffle=shuffle,
            callbacks=callbacks, verbose=0,
        )  # fmt: skip
    else:
        loops.train(
            model, x, y, sample_weight=w, epochs=epochs, batch_size=BATCH,
            optimizer=keras.optimizers.SGD(LR), mode=path, shuffle=shuffle,
            callbacks=callbacks, verbose=0, checkpoint_dir=backup, resume=backup is not None,
        )  # fmt: skip
    return model


def numpy_sgd(seed, shuffle, epochs=EPOCHS):
    x, y, w = (a.astype(np.float64) for a in line())
    m = b = 0.0
    for epoch in range(epochs):
        order = data.epoch_rows(seed, epoch, N, BATCH, shuffle)
        order = np.arange(N) if order is None else np.asarray(order)
        for start in range(0, N, BATCH):
            rows = order[start : start + BATCH]
            r = m * x[rows] + b - y[rows]
            total = w[rows].sum()
            m -= LR * np.sum(w[rows] * 2 * r * x[rows]) / total
            b -= LR * np.sum(w[rows] * 2 * r) / total
    return m, b


PATHS = ["fit", "fit-batches", "eager", "function"]


@pytest.mark.parametrize("shuffle", [True, "batch", False])
@pytest.mark.parametrize("path", PATHS)
def test_every_path_takes_the_rows_in_the_one_order(path, shuffle):
    model = trained(path, shuffle)
    m, b = numpy_sgd(model.shuffle_seed, shuffle)
    assert (model.shuffle_seed is None) == (shuffle is False)
    np.testing.assert_allclose(model.params["m"][0], m, rtol=TOLERANCE)
    np.testing.assert_allclose(model.params["b"], b, rtol=TOLERANCE)


def test_the_seed_comes_from_numpys_generator_and_the_orders_differ():
    first, again, other = (trained("fit", True, seed=s) for s in (5, 5, 6))
    assert first.shuffle_seed == again.shuffle_seed != other.shuffle_seed
    assert float(first.params["b"]) == float(again.params["b"])
    by_batch = trained("fit", "batch", seed=5)
    in_order = trained("fit", False, seed=5)
    assert len({float(m.params["b"]) for m in (first, by_batch, in_order)}) == 3


@pytest.mark.parametrize("shuffle", [True, "batch"])
@pytest.mark.parametrize("path", PATHS)
def test_every_path_resumes_a_shuffled_run_exactly(tmp_path, path, shuffle):
    reference = trained(path, shuffle, seed=3)
    with pytest.raises(KeyboardInterrupt):
        trained(path, shuffle, seed=3, callbacks=[StopAfter(1)], backup=tmp_path)
    # Another seed: the order must come from the backup's seed.
    resumed = trained(path, shuffle, seed=99, backup=tmp_path)
    assert resumed.shuffle_seed == reference.shuffle_seed
    for name in reference.params:
        np.testing.assert_array_equal(resumed.params[name], reference.params[name], err_msg=name)
    assert int(resumed.optimizer.iterations) == int(reference.optimizer.iterations)


def test_shuffle_batch_keeps_each_batch_contiguous_and_the_short_batch_last():
    rows = np.asarray(data.epoch_rows(7, 2, N, BATCH, "batch"))
    batches = [rows[i : i + BATCH] for i in range(0, N, BATCH)]
    assert all(np.array_equal(b, np.arange(b[0], b[0] + len(b))) for b in batches)
    assert sorted(b[0] for b in batches[:-1]) == list(range(0, N - N % BATCH, BATCH))
    np.testing.assert_array_equal(batches[-1], np.arange(N - N % BATCH, N))
