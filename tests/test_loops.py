"""`keras_mle.loops.train` against `fit()`: the same steps in every mode, callbacks, History."""

import keras
import numpy as np
import pytest
from helpers import built

import keras_mle
from keras_mle import loops

# Parameters of order 1 after 20 float32 steps. Eager and tf.function run the same float32 ops
# as fit() (bitwise equal in practice; 1e-6 is a few ulps); XLA fuses and reorders them, about
# 1 ulp per step, so 20 steps stay well under 1e-5.
PARITY_ATOL = {"eager": 1e-6, "function": 1e-6, "xla": 1e-5}


CASES = {
    "linear_regression": (keras_mle.LinearRegression, {}, 0.5),
    "gaussian_mle": (keras_mle.GaussianMLE, {"initial_mu": 1.4, "initial_sigma": 1.3}, 0.5),
    "gaussian_regression": (keras_mle.GaussianRegression, {"initial_sigma": 0.5}, 0.02),
}


def _data(case, line, samples):
    return (samples, None) if case == "gaussian_mle" else line


def _pair(case, x):
    """Two models of `case` with the same initial values, and the learning rate."""
    cls, kwargs, lr = CASES[case]
    first = built(cls(**kwargs), x)
    second = built(cls(**kwargs), x)
    second.set_weights(first.get_weights())
    return first, second, lr


def _assert_params_close(a, b, atol):
    assert set(a.params) == set(b.params)
    for k in a.params:
        np.testing.assert_allclose(a.params[k], b.params[k], atol=atol, rtol=0, err_msg=k)


@pytest.fixture(scope="module")
def fit_reference(line, samples):
    """Per case, once per module: the initial weights and the model `fit()` trained from them."""
    cache = {}

    def get(case):
        if case not in cache:
            x, y = _data(case, line, samples)
            reference, _, lr = _pair(case, x)
            init = reference.get_weights()
            reference.compile(optimizer=keras.optimizers.SGD(lr), jit_compile=False)
            history = reference.fit(x, y, batch_size=len(x), epochs=20, shuffle=False, verbose=0)
            cache[case] = (init, reference, history)
        return cache[case]

    return get


@pytest.mark.parametrize("mode", loops.MODES)
@pytest.mark.parametrize("case", list(CASES))
def test_full_batch_loop_matches_fit(case, mode, line, samples, fit_reference):
    x, y = _data(case, line, samples)
    init, reference, fit_history = fit_reference(case)
    looped, _, lr = _pair(case, x)
    looped.set_weights(init)
    history = loops.train(
        looped,
        x,
        y,
        epochs=20,
        batch_size=len(x),
        optimizer=keras.optimizers.SGD(lr),
        mode=mode,
        verbose=0,
    )
    _assert_params_close(looped, reference, PARITY_ATOL[mode])
    assert int(looped.optimizer.iterations) == 20
    assert set(history.history) == set(fit_history.history)
    for key, values in fit_history.history.items():
        # Per-epoch loss and parameters, of order 1 to 10: float32 agreement.
        np.testing.assert_allclose(history.history[key], values, rtol=1e-5, err_msg=key)


@pytest.mark.parametrize("mode", loops.MODES)
def test_minibatch_loop_matches_fit(mode, line):
    # 100 rows in batches of 32: four steps an epoch, the last one of 4 rows.
    x, y = line
    w = np.random.default_rng(0).uniform(0.5, 2.0, size=len(x)).astype(np.float32)
    reference, looped, lr = _pair("gaussian_regression", x)
    reference.compile(optimizer=keras.optimizers.SGD(lr), jit_compile=False)
    reference.fit(x, y, sample_weight=w, batch_size=32, epochs=5, shuffle=False, verbose=0)
    history = loops.train(
        looped,
        x,
        y,
        sample_weight=w,
        epochs=5,
        batch_size=32,
        optimizer=keras.optimizers.SGD(lr),
        mode=mode,
        verbose=0,
    )
    _assert_params_close(looped, reference, PARITY_ATOL[mode])
    assert int(looped.optimizer.iterations) == int(reference.optimizer.iterations) == 20
    assert len(history.history["loss"]) == 5


def test_loop_keeps_the_models_own_optimizer(line):
    x, y = line
    model, _, _ = _pair("linear_regression", x)
    optimizer = keras.optimizers.SGD(0.5)
    model.compile(optimizer=optimizer)
    loops.train(model, x, y, epochs=2, batch_size=100, optimizer=optimizer, verbose=0)
    loops.train(model, x, y, epochs=3, batch_size=100, optimizer=optimizer, verbose=0)
    assert model.optimizer is optimizer
    assert int(optimizer.iterations) == 5


class Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.events = []
        self.epoch_logs = []

    def on_train_begin(self, logs=None):
        self.events.append("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self.events.append(f"epoch_begin {epoch}")

    def on_train_batch_end(self, batch, logs=None):
        self.events.append(f"batch_end {batch}")

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(f"epoch_end {epoch}")
        self.epoch_logs.append(dict(logs))

    def on_train_end(self, logs=None):
        self.events.append("train_end")


@pytest.mark.parametrize("mode", loops.MODES)
def test_callbacks_are_driven(mode, line):
    x, y = line
    model, _, _ = _pair("linear_regression", x)
    recorder = Recorder()
    history = loops.train(
        model,
        x,
        y,
        epochs=3,
        batch_size=50,
        optimizer=keras.optimizers.SGD(0.5),
        mode=mode,
        callbacks=[recorder],
        verbose=0,
    )
    # Eager runs the batch hooks per step; the graph modes once per epoch, with the last index.
    batch_ends = ["batch_end 0", "batch_end 1"] if mode == "eager" else ["batch_end 1"]
    expected = ["train_begin"]
    for epoch in range(3):
        expected += [f"epoch_begin {epoch}", *batch_ends, f"epoch_end {epoch}"]
    assert recorder.events == [*expected, "train_end"]
    assert recorder.model is model
    assert isinstance(history, keras.callbacks.History)
    assert history is model.history
    assert history.epoch == [0, 1, 2]
    assert len(history.history["loss"]) == 3
    for epoch, logs in enumerate(recorder.epoch_logs):
        assert set(logs) == {"loss", "m", "b"}
        assert logs["loss"] == history.history["loss"][epoch]
        assert logs["m"] == history.history["m"][epoch]
    assert history.history["m"][-1] == pytest.approx(float(model.params["m"][0]), abs=0)


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_early_stopping_stops_the_loop(mode, line):
    x, y = line
    model, _, _ = _pair("linear_regression", x)
    # No epoch can improve the loss by 100: the second epoch is a miss and training stops.
    stopper = keras.callbacks.EarlyStopping(monitor="loss", min_delta=100.0, patience=1)
    history = loops.train(
        model,
        x,
        y,
        epochs=50,
        batch_size=100,
        optimizer=keras.optimizers.SGD(0.5),
        mode=mode,
        callbacks=[stopper],
        verbose=0,
    )
    assert stopper.stopped_epoch == 1
    assert len(history.history["loss"]) == 2
    assert int(model.optimizer.iterations) == 2


def test_early_stopping_restores_best_weights_as_fit_does(samples):
    # SGD at 2.2 overshoots (the step on mu contracts by 1 - 2.2 / sigma^2 < -1): the loss
    # rises after the second epoch and training stops two epochs later.
    results = []
    for run in ("fit", "loop"):
        model = keras_mle.GaussianMLE(initial_mu=1.4, initial_sigma=1.3)
        stopper = keras.callbacks.EarlyStopping(
            monitor="loss", patience=2, restore_best_weights=True
        )
        arguments = {"epochs": 30, "batch_size": 1000, "callbacks": [stopper], "verbose": 0}
        if run == "fit":
            model.compile(optimizer=keras.optimizers.SGD(2.2), jit_compile=False)
            history = model.fit(samples, shuffle=False, **arguments)
        else:
            optimizer = keras.optimizers.SGD(2.2)
            history = loops.train(model, samples, optimizer=optimizer, mode="function", **arguments)
        results.append((model.params, history.history, stopper.best_epoch, stopper.stopped_epoch))
    (fit_params, fit_history, *fit_epochs), (params, history, *epochs) = results
    assert epochs == fit_epochs
    best, stopped = epochs
    assert len(history["loss"]) == stopped + 1 < 30
    assert best == int(np.argmin(history["loss"]))
    # Keras keeps the weights at the end of the best epoch.
    np.testing.assert_allclose(params["mu"], history["mu"][best], rtol=1e-6)
    np.testing.assert_allclose(params["sigma"], history["sigma"][best], rtol=1e-6)
    for k in params:
        np.testing.assert_allclose(params[k], fit_params[k], rtol=1e-6)


def test_progress_bar_is_shown(line, capsys):
    x, y = line
    model, _, _ = _pair("linear_regression", x)
    loops.train(
        model, x, y, epochs=2, batch_size=100, optimizer=keras.optimizers.SGD(0.5), verbose=1
    )
    out = capsys.readouterr().out
    assert "Epoch 2/2" in out and "loss" in out


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_shuffle_is_reproducible_with_a_seed(mode, line):
    x, y = line
    results = []
    for _ in range(2):
        model, _, _ = _pair("linear_regression", x)
        model.set_weights([np.array([0.3], np.float32), np.array(0.1, np.float32)])
        keras.utils.set_random_seed(123)
        loops.train(
            model,
            x,
            y,
            epochs=3,
            batch_size=25,
            optimizer=keras.optimizers.SGD(0.3),
            mode=mode,
            shuffle=True,
            verbose=0,
        )
        results.append(model.params)
    for k in ("m", "b"):
        np.testing.assert_array_equal(results[0][k], results[1][k])
    # And shuffling does change the path of minibatch SGD.
    fixed, _, _ = _pair("linear_regression", x)
    fixed.set_weights([np.array([0.3], np.float32), np.array(0.1, np.float32)])
    loops.train(
        fixed,
        x,
        y,
        epochs=3,
        batch_size=25,
        optimizer=keras.optimizers.SGD(0.3),
        mode=mode,
        verbose=0,
    )
    assert not np.array_equal(fixed.params["b"], results[0]["b"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "graph"}, "mode must be one of"),
        ({"mode": None}, "mode must be one of"),
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"epochs": 2.5}, "epochs must be a positive integer"),
        ({"epochs": True}, "epochs must be a positive integer"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"batch_size": -3}, "batch_size must be a positive integer"),
        ({"batch_size": "32"}, "batch_size must be a positive integer"),
    ],
)
def test_bad_arguments_raise_before_any_work(kwargs, match, line):
    x, y = line
    model, _, _ = _pair("linear_regression", x)
    before = model.get_weights()
    arguments = {"epochs": 2, "batch_size": 100, "mode": "eager", **kwargs}
    with pytest.raises(ValueError, match=match):
        loops.train(model, x, y, optimizer=keras.optimizers.SGD(0.5), verbose=0, **arguments)
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)
    assert getattr(model, "optimizer", None) is None
