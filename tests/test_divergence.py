"""Divergence stops training with the last finite state kept, on every training path.

The diverging case: a line with x scaled to [0, 1000) and SGD(0.1), in batches of 10. Each step
multiplies the slope by about -lr * 2 * mean(x^2), some -7e4, so after four steps the residuals
are near 1e20 and the fifth batch's float32 loss (their mean square) overflows to Inf. That step
is refused, and the parameters are those after four steps, which NumPy computes in float64.
"""

import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import built

import keras_mle
from keras_mle import checkpoint, data

N, BATCH, LR = 50, 10, 0.1
PATHS = ["arrays", "dataset", "epoch_dataset", "loops-eager", "loops-function", "loops-xla"]
# float32 steps against a float64 simulation: each step's rounding (1e-7 relative) is carried
# along, not amplified (the growth is the same factor for errors and values): 1e-5 is ample.
RTOL = 1e-5


def diverging_line():
    x, y = data.noisy_line(n=N, seed=0)
    return x * np.float32(1000), y


def numpy_steps(x, y, steps):
    """Minibatch SGD on the mean squared error, in float64, from m = b = 0."""
    m = b = 0.0
    for i in range(steps):
        xb = x[i * BATCH : (i + 1) * BATCH].astype(np.float64)
        yb = y[i * BATCH : (i + 1) * BATCH].astype(np.float64)
        r = m * xb + b - yb
        m, b = m - LR * np.mean(2 * r * xb), b - LR * np.mean(2 * r)
    return m, b


def train(path, model, x, y, optimizer, epochs=20, callbacks=None, sample_weight=None):
    """Trains through one of `PATHS` (no shuffling), returning the History."""
    if path.startswith("loops-"):
        return keras_mle.loops.train(
            model,
            x,
            y,
            sample_weight=sample_weight,
            epochs=epochs,
            batch_size=BATCH,
            optimizer=optimizer,
            mode=path.removeprefix("loops-"),
            shuffle=False,
            callbacks=callbacks,
            verbose=0,
        )
    model.compile(optimizer=optimizer)
    if path == "arrays":
        return model.fit(
            x, y, sample_weight=sample_weight, batch_size=BATCH, epochs=epochs, shuffle=False,
            callbacks=callbacks, verbose=0,
        )  # fmt: skip
    if path == "dataset":
        parts = (x, y) if sample_weight is None else (x, y, sample_weight)
        dataset = tf.data.Dataset.from_tensor_slices(parts).batch(BATCH)
        return model.fit(dataset, epochs=epochs, callbacks=callbacks, verbose=0)
    dataset = data.epoch_dataset(*model.check_data(x, y, sample_weight), batch_size=BATCH)
    return model.fit(dataset, epochs=epochs, steps_per_epoch=1, callbacks=callbacks, verbose=0)


def caught(run):
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        result = run()
    messages = [str(r.message) for r in records if r.category is keras_mle.DivergenceWarning]
    return result, messages


@pytest.mark.parametrize("path", PATHS)
def test_divergence_stops_before_the_first_non_finite_step(path):
    x, y = diverging_line()
    model = keras_mle.LinearRegression(m_initializer="zeros")
    history, messages = caught(lambda: train(path, model, x, y, keras.optimizers.SGD(LR)))

    # Independently: after four float64 steps the fifth batch's float32 loss overflows.
    m, b = numpy_steps(x, y, 4)
    residuals = (np.float32(m) * x[40:50] + np.float32(b) - y[40:50]).astype(np.float32)
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.mean(residuals * residuals, dtype=np.float32))
    assert np.isfinite(np.mean(numpy_steps(x, y, 3)[0] * x[30:40]) ** 2)

    assert len(messages) == 1
    assert messages[0].startswith(
        "Training diverged in epoch 1, batch 5: the loss, a gradient or an update"
    )
    assert "those before that batch" in messages[0] and "smaller learning rate" in messages[0]
    assert "adapt" in messages[0]
    assert history.history["stop_reason"] == [model.divergence]
    assert len(history.history["loss"]) == 1  # stopped after the first epoch
    assert int(model.optimizer.iterations.numpy()) == 4
    np.testing.assert_allclose(model.params["m"], [m], rtol=RTOL)
    np.testing.assert_allclose(model.params["b"], b, rtol=RTOL)


@pytest.mark.parametrize("path", ["arrays", "loops-xla"])
def test_an_update_that_overflows_restores_the_start_of_the_epoch(path):
    # A learning rate of 1e38 sends the first update to -Inf although its loss and gradient are
    # finite: that step is blamed (its update checked after it), and the last finite state is
    # the epoch's start.
    x, y = data.noisy_line(n=N, seed=0)
    model = keras_mle.LinearRegression(m_initializer="zeros")
    history, messages = caught(lambda: train(path, model, x, y, keras.optimizers.SGD(1e38)))
    assert len(messages) == 1
    assert "batch 1:" in messages[0] and "those at the start of the epoch" in messages[0]
    np.testing.assert_array_equal(model.params["m"], [0.0])
    assert model.params["b"] == 0.0
    assert int(model.optimizer.iterations.numpy()) == 0
    assert len(history.history["loss"]) == 1


def test_adam_state_is_that_before_the_refused_step():
    # Adam's moments and iteration count are part of the state a divergence must not spoil:
    # a copy of the model trained for the four finite steps alone has the same state.
    x, y = diverging_line()
    weights = np.full(N, 1e37, np.float32)  # finite, but their sum overflows float32 at row 35
    weights[:30] = 1.0
    model = keras_mle.LinearRegression(m_initializer="zeros")
    _, messages = caught(
        lambda: train("arrays", model, x, y, keras.optimizers.Adam(0.1), sample_weight=weights)
    )
    assert messages and "batch 4" in messages[0]

    reference = keras_mle.LinearRegression(m_initializer="zeros")
    reference.compile(optimizer=keras.optimizers.Adam(0.1))
    reference.fit(
        x[:30], y[:30], sample_weight=weights[:30], batch_size=BATCH, shuffle=False, verbose=0
    )
    for got, want in zip(model.optimizer.variables, reference.optimizer.variables, strict=True):
        np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=got.path)
    np.testing.assert_array_equal(model.params["m"], reference.params["m"])


def test_no_backup_holds_a_diverged_state(tmp_path):
    x, y = data.noisy_line(n=N, seed=0)
    model = keras_mle.LinearRegression(m_initializer="zeros")
    backup = checkpoint.BackupAndRestore(str(tmp_path / "backup"), delete_checkpoint=False)
    _, messages = caught(
        lambda: train("arrays", model, x, y, keras.optimizers.SGD(1e38), callbacks=[backup])
    )
    assert messages
    fresh = built(keras_mle.LinearRegression(), x)
    fresh.compile(optimizer=keras.optimizers.SGD(1e38))
    # The divergence is acted on first: the backup of that epoch holds the restored state.
    assert os.path.exists(tmp_path / "backup" / checkpoint.WEIGHTS_FILE)
    checkpoint.restore_backup(fresh, str(tmp_path / "backup"))
    np.testing.assert_array_equal(fresh.params["m"], [0.0])
    assert int(fresh.optimizer.iterations.numpy()) == 0


def test_divergence_under_a_mirrored_strategy_matches_one_device(mirrored_strategy):
    x, y = diverging_line()
    single = keras_mle.LinearRegression(m_initializer="zeros")
    _, expected = caught(lambda: train("arrays", single, x, y, keras.optimizers.SGD(LR)))
    with mirrored_strategy.scope():
        mirrored = built(keras_mle.LinearRegression(m_initializer="zeros"), x)
        mirrored.compile(optimizer=keras.optimizers.SGD(LR))
    _, messages = caught(
        lambda: mirrored.fit(x, y, batch_size=BATCH, epochs=5, shuffle=False, verbose=0)
    )
    assert messages == expected
    # Two replicas sum in another order: float32 rounding of 1e-7 per step (see RTOL).
    np.testing.assert_allclose(mirrored.params["m"], single.params["m"], rtol=RTOL)
    assert int(mirrored.optimizer.iterations.numpy()) == 4


def test_evaluate_reports_a_non_finite_loss_without_refusing():
    # Evaluation of clean data refuses nothing: an overflowing loss is the model's value.
    x, y = diverging_line()
    model = built(keras_mle.LinearRegression(m_initializer="zeros"), x)
    model.set_params({"m": [1e20], "b": 0.0})
    model.compile(optimizer="sgd")
    assert np.isinf(model.evaluate(x, y, verbose=0))


def test_mixed_precision_overflow_is_not_divergence():
    # A loss-scale optimizer skips steps whose scaled gradients overflow, by design.
    x, y = data.noisy_line(n=N, seed=0)
    model = keras_mle.LinearRegression(m_initializer="zeros")
    optimizer = keras.optimizers.LossScaleOptimizer(
        keras.optimizers.SGD(0.5), initial_scale=2.0**127
    )
    _, messages = caught(lambda: train("arrays", model, x, y, optimizer, epochs=3))
    assert messages == []


@pytest.mark.parametrize("path", ["fit", "function"])
def test_an_accepted_step_that_overflows_the_parameters_is_divergence(path):
    # One full-batch step: the gradient -2 * x * (y - 0) = -2e38 is finite (float32 tops out
    # at 3.4e38), but SGD(10) moves m by 2e39: Inf. No later step is refused to notice it.
    x = np.full((4, 1), 1e37, np.float32)
    y = np.full(4, 10.0, np.float32)
    model = keras_mle.LinearRegression(m_initializer="zeros")
    with pytest.warns(keras_mle.DivergenceWarning, match="a gradient or an update was NaN"):
        if path == "fit":
            model.compile(optimizer=keras.optimizers.SGD(10.0))
            history = model.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0)
        else:
            history = keras_mle.loops.train(
                model, x, y, epochs=3, batch_size=4, optimizer=keras.optimizers.SGD(10.0),
                mode="function", verbose=0,
            )  # fmt: skip
    assert len(history.epoch) == 1
    assert "epoch 1, batch 1" in model.divergence
    assert "at the start of the epoch" in model.divergence
    assert float(model.params["m"][0]) == 0.0 and float(model.params["b"]) == 0.0


@pytest.mark.parametrize("path", ["fit", "eager"])
def test_an_epoch_that_diverged_at_its_first_step_logs_a_nan_loss_not_zero(path):
    # Epoch 1's one step is finite (loss 1) and moves m to 2e18; epoch 2's loss, 4e72, is Inf
    # in float32, so that step is refused and the epoch has no accepted step to average.
    x = np.full((4, 1), 1e18, np.float32)
    y = np.ones(4, np.float32)
    model = keras_mle.LinearRegression(m_initializer="zeros")
    with pytest.warns(keras_mle.DivergenceWarning, match="diverged in epoch 2, batch 1"):
        if path == "fit":
            model.compile(optimizer=keras.optimizers.SGD(1.0))
            history = model.fit(x, y, batch_size=4, epochs=5, shuffle=False, verbose=0)
        else:
            history = keras_mle.loops.train(
                model, x, y, epochs=5, batch_size=4, optimizer=keras.optimizers.SGD(1.0),
                mode="eager", verbose=0,
            )  # fmt: skip
    losses = history.history["loss"]
    assert len(losses) == 2 and losses[0] == 1.0 and np.isnan(losses[1])


def test_the_loss_of_no_step_is_nan_and_of_some_steps_their_mean():
    tracker = keras_mle.metrics.LossMean(name="loss")
    assert np.isnan(float(tracker.result()))
    tracker.update_state([1.0, 3.0], sample_weight=[1.0, 3.0])
    assert float(tracker.result()) == 2.5


def weighted_line():
    """Frequency weights 1-389 that grow with |x - mean|: the weighted spread of x is several
    times the unweighted one, so a whitening that ignores the weights leaves SGD(0.5) a step
    too large for the weighted objective."""
    rng = np.random.default_rng(7)
    x = rng.normal(loc=50.0, scale=10.0, size=(300, 1))
    y = 0.8 * x[:, 0] + 3.0 + rng.normal(size=300)
    distance = np.abs(x[:, 0] - x[:, 0].mean())
    weights = 1.0 + np.floor(388 * distance / distance.max())
    return x, y, weights


def test_a_weighted_adapt_makes_sgd_solve_weighted_least_squares():
    x, y, w = weighted_line()
    model = keras_mle.LinearRegression(dtype="float64")
    model.adapt(x, y, sample_weight=w)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    model.fit(x, y, sample_weight=w, batch_size=len(x), epochs=3, shuffle=False, verbose=0)
    exact = keras_mle.closed_form.ols(x, y, sample_weight=w)
    # One full-batch step solves it: float64 rounding of the whitened solve only.
    np.testing.assert_allclose(model.params["m"], exact["m"], rtol=1e-10)
    np.testing.assert_allclose(model.params["b"], exact["b"], rtol=1e-10)


@pytest.mark.parametrize("path", ["fit", "function"])
def test_a_full_batch_loss_that_keeps_rising_stops_at_the_lowest_loss(path):
    x, y, w = weighted_line()
    model = keras_mle.LinearRegression(dtype="float64")
    model.adapt(x, y)  # unweighted: the step is too large for the weighted objective
    with pytest.warns(keras_mle.DivergenceWarning, match="the full-batch loss rose for 10"):
        if path == "fit":
            model.compile(optimizer=keras.optimizers.SGD(0.5))
            history = model.fit(
                x, y, sample_weight=w, batch_size=len(x), epochs=300, shuffle=False, verbose=0
            )
        else:
            history = keras_mle.loops.train(
                model, x, y, sample_weight=w, epochs=300, batch_size=len(x),
                optimizer=keras.optimizers.SGD(0.5), mode="function", verbose=0,
            )  # fmt: skip
    losses = history.history["loss"]
    assert len(losses) < 300 and losses[-1] > 2 * min(losses)
    # The parameters are those at the lowest loss: their loss is that loss (float64).
    kept = model.evaluate(x, y, sample_weight=w, batch_size=len(x), verbose=0)
    np.testing.assert_allclose(kept, min(losses), rtol=1e-12)
