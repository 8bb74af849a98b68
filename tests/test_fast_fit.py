"""Plain `fit(x, y)` runs each epoch as one compiled call (`data.epoch_arrays`, `train_arrays`).

Its steps are those of Keras' per-batch loop: the same batches in the same order (the last one
shorter), with Keras' epoch semantics (History, validation, callbacks per epoch). A callback
that acts between batches gets the per-batch loop instead.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import StopAfter, WatchesBatches

import keras_mle
from keras_mle import checkpoint, data

N, BATCH, LR, EPOCHS = 103, 10, 0.3, 4


def line(n=N):
    x, y = data.noisy_line(n=n, seed=0)
    weights = np.random.default_rng(2).uniform(0.5, 2.0, n).astype(np.float32)
    return x, y, weights


def trained(callbacks=(), shuffle=False, epochs=EPOCHS, seed=0, **kwargs):
    x, y, w = line()
    keras.utils.set_random_seed(seed)
    model = keras_mle.LinearRegression(m_initializer="zeros")
    model.compile(optimizer=keras.optimizers.SGD(LR))
    history = model.fit(
        x, y, sample_weight=w, batch_size=BATCH, epochs=epochs, shuffle=shuffle,
        callbacks=list(callbacks), verbose=0, **kwargs,
    )  # fmt: skip
    return model, history


def numpy_sgd(orders):
    """Weighted minibatch SGD on the MSE in float64, one row order per epoch."""
    x, y, w = (a.astype(np.float64) for a in line())
    m = b = 0.0
    for order in orders:
        for start in range(0, N, BATCH):
            rows = order[start : start + BATCH]
            r = m * x[rows] + b - y[rows]
            total = w[rows].sum()
            m -= LR * np.sum(w[rows] * 2 * r * x[rows]) / total
            b -= LR * np.sum(w[rows] * 2 * r) / total
    return m, b


def test_in_order_epochs_match_the_per_batch_loop_and_numpy():
    fast, history = trained()
    slow, slow_history = trained(callbacks=[WatchesBatches()])
    assert int(fast.optimizer.iterations.numpy()) == EPOCHS * 11  # 10 full batches + 3 rows
    for name in fast.params:
        np.testing.assert_array_equal(fast.params[name], slow.params[name], err_msg=name)
    # float32 steps against float64: 44 steps of 1e-7 rounding each; 1e-5 is ample.
    m, b = numpy_sgd([np.arange(N)] * EPOCHS)
    np.testing.assert_allclose(fast.params["m"], [m], rtol=1e-5)
    np.testing.assert_allclose(fast.params["b"], b, rtol=1e-5)
    # One History entry per epoch, the same losses as the per-batch loop.
    assert history.epoch == list(range(EPOCHS))
    np.testing.assert_allclose(history.history["loss"], slow_history.history["loss"], rtol=1e-6)


def test_shuffled_epochs_draw_a_new_order_each_epoch():
    fast, _ = trained(shuffle=True, seed=7)
    # Independently: the seed is a NumPy draw at the fit's start, epoch e's order TF's
    # stateless shuffle of [seed, e].
    np.random.seed(7)
    seed = np.random.randint(2**62, dtype=np.int64)
    assert fast.shuffle_seed == seed
    orders = []
    for epoch in range(EPOCHS):
        pair = tf.constant([seed, epoch], tf.int64)
        orders.append(tf.random.experimental.stateless_shuffle(tf.range(N), pair).numpy())
    assert not np.array_equal(orders[0], orders[1])
    m, b = numpy_sgd(orders)
    np.testing.assert_allclose(fast.params["m"], [m], rtol=1e-5)
    np.testing.assert_allclose(fast.params["b"], b, rtol=1e-5)
    again, _ = trained(shuffle=True, seed=7)
    np.testing.assert_array_equal(again.params["m"], fast.params["m"])  # deterministic


def test_a_shuffled_fit_resumes_exactly_from_its_backup(tmp_path):
    reference, _ = trained(shuffle=True, seed=3)
    backup = checkpoint.BackupAndRestore(tmp_path / "backup")
    with pytest.raises(KeyboardInterrupt):
        trained(callbacks=[backup, StopAfter(1)], shuffle=True, seed=3)
    # The backup keeps the interrupted fit's shuffling seed: another seed here changes nothing.
    resumed, history = trained(
        callbacks=[checkpoint.BackupAndRestore(tmp_path / "backup")], shuffle=True, seed=99
    )
    assert history.epoch == [2, 3]
    for name in reference.params:
        np.testing.assert_array_equal(resumed.params[name], reference.params[name], err_msg=name)
    np.testing.assert_array_equal(
        resumed.optimizer.iterations.numpy(), reference.optimizer.iterations.numpy()
    )


def test_validation_and_epoch_callbacks_see_every_epoch():
    x, y, _ = line()
    epochs_seen = []
    model, history = trained(
        callbacks=[
            keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: epochs_seen.append(e)),
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=100),
        ],
        validation_data=(x[:20], y[:20]),
    )
    assert epochs_seen == list(range(EPOCHS))
    assert len(history.history["val_loss"]) == EPOCHS
    np.testing.assert_allclose(
        history.history["val_loss"][-1], model.evaluate(x[:20], y[:20], verbose=0), rtol=1e-6
    )


def test_large_in_memory_epochs_are_compiled_with_xla_unless_told_not_to():
    x, y = data.noisy_line(n=100_000, seed=0)

    class SeesXla(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.jit_compile = self.model.jit_compile

    auto, seen = keras_mle.LinearRegression(m_initializer="zeros"), SeesXla()
    auto.compile(optimizer=keras.optimizers.SGD(0.3))  # jit_compile="auto"
    auto.fit(x, y, batch_size=50_000, epochs=1, shuffle=False, verbose=0, callbacks=[seen])
    assert seen.jit_compile is True
    assert auto.jit_compile is False  # XLA was that fit's choice: the model's setting is kept
    off, seen = keras_mle.LinearRegression(m_initializer="zeros"), SeesXla()
    off.compile(optimizer=keras.optimizers.SGD(0.3), jit_compile=False)
    off.fit(x, y, batch_size=50_000, epochs=1, shuffle=False, verbose=0, callbacks=[seen])
    assert seen.jit_compile is False
    # The same two steps: XLA and the plain graph differ by float32 rounding only.
    np.testing.assert_allclose(auto.params["m"], off.params["m"], rtol=1e-5)
    np.testing.assert_allclose(auto.params["b"], off.params["b"], rtol=1e-5)


def test_a_second_large_fit_reuses_the_xla_epoch_and_the_model_keeps_its_setting():
    x, y = data.noisy_line(n=100_000, seed=0)

    class SeesTheFunction(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append((self.model.train_function, self.model.jit_compile))

    seen = []
    model = keras_mle.LinearRegression(m_initializer="zeros")
    model.compile(optimizer=keras.optimizers.SGD(0.3))
    for _ in range(2):
        model.fit(x, y, batch_size=50_000, epochs=1, shuffle=False, verbose=0,
                  callbacks=[SeesTheFunction()])  # fmt: skip
        assert model.jit_compile is False
    (first, xla_first), (second, xla_second) = seen
    assert xla_first and xla_second and first is second  # traced and compiled once
    model.fit(x[:10], y[:10], epochs=1, verbose=0)  # a small fit: the plain function
    assert model.jit_compile is False
