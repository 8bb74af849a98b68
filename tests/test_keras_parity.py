"""What Keras' own `fit()` offers, offered alike by the models' `fit()` and `keras_mle.loops.train`.

Mixed precision, optimizer finalization (EMA), `stop_training`, validation with `EarlyStopping`
and `ModelCheckpoint`, compiled metrics, the refusal of `loss`, and the package's callbacks, in
`fit()` and every mode of the custom loops. Every expected number is computed independently:
by the closed form (`keras_mle.closed_form`) or by NumPy in float64.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mle
from keras_mle import checkpoint, closed_form, loops

MODES = ["fit", "eager", "function", "xla"]

# Same float32 ops as fit() in eager and tf.function (bitwise equal in practice); XLA fuses and
# reorders them, about 1 ulp per step: 1e-5 over 20 steps leaves a wide margin.
PARITY_ATOL = {"fit": 1e-6, "eager": 1e-6, "function": 1e-6, "xla": 1e-5}


def _line_model(m=0.0, b=0.0, **kwargs):
    """A LinearRegression starting at the line `y = m x + b` (deterministic initializers)."""
    return keras_mle.LinearRegression(
        m_initializer=keras.initializers.Constant(m),
        b_initializer=keras.initializers.Constant(b),
        **kwargs,
    )


def _train(model, x, y, mode, *, optimizer, epochs, batch_size, **kwargs):
    """`fit()` (`mode="fit"`, no shuffling) or `loops.train(mode=...)`, silently; the History.

    The model is compiled with `optimizer` unless it is its optimizer already (so compiled
    metrics survive); `loops.train` does the same.
    """
    if mode == "fit":
        if getattr(model, "optimizer", None) is not optimizer:
            model.compile(optimizer=optimizer)
        return model.fit(
            x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0, **kwargs
        )
    return loops.train(
        model,
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        mode=mode,
        verbose=0,
        **kwargs,
    )


def _iterations(model):
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


def _sgd_path(x, y, m, b, learning_rate, batches):
    """Minibatch SGD on the MSE of `y = m x + b` in float64; `(m, b)` after each batch."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    path = []
    for rows in batches:
        residual = m * x[rows] + b - y[rows]
        m, b = (
            m - learning_rate * 2 * np.mean(residual * x[rows]),
            b - learning_rate * 2 * np.mean(residual),
        )
        path.append((m, b))
    return np.array(path)


def _batches(n, batch_size, epochs=1):
    return [
        np.arange(s, min(s + batch_size, n)) for _ in range(epochs) for s in range(0, n, batch_size)
    ]


# --------------------------------------------------------------------------- 1. mixed precision
@pytest.fixture
def mixed_float16():
    """The global mixed_float16 policy for one test, always restored to float32."""
    keras.config.set_dtype_policy("mixed_float16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy("float32")


def _full_batch_steps(model, x, y, mode, *, optimizer, steps):
    """`steps` full-batch steps as one epoch over `steps` copies of the data.

    With `shuffle=False` every batch is the whole data set, so this is exactly `steps` epochs
    of full-batch training, without paying Keras' per-epoch overhead `steps` times.
    """
    tiled = np.tile(x, steps), np.tile(y, steps)
    return _train(model, *tiled, mode, optimizer=optimizer, epochs=1, batch_size=len(x))


@pytest.mark.parametrize("mode", MODES)
def test_mixed_precision_reaches_ols_in_float32(mode, line, mixed_float16):
    x, y = line
    model = _line_model()
    assert model.dtype_policy.name == "mixed_float16"
    _full_batch_steps(model, x, y, mode, optimizer=keras.optimizers.SGD(0.5), steps=200)

    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert [v.dtype for v in model.trainable_variables] == ["float32", "float32"]
    assert _iterations(model) == 200  # the loss scale never skipped a step
    # Full-batch GD from (0, 0) with lr 0.5 contracts the slow direction of the MSE Hessian
    # (eigenvalue 0.131 for x ~ U[0, 1)) by 0.934 per step: 0.934^200 * 2 ~ 2e-6 is left after
    # 200 steps. A float16 loss could not resolve better than ~1e-3; the
    # likelihood runs in float32, so the fit lands within float32 rounding of OLS: 1e-5.
    ols = closed_form.ols(x, y)
    np.testing.assert_allclose(model.params["m"], ols["m"], atol=1e-5)
    np.testing.assert_allclose(model.params["b"], ols["b"], atol=1e-5)
    prediction = model.predict(x, verbose=0)
    assert prediction.dtype == np.float32
    np.testing.assert_allclose(prediction, ols["m"][0] * x + ols["b"], atol=2e-5)


@pytest.mark.parametrize("mode", MODES)
def test_hand_made_loss_scale_optimizer_in_float32(mode, line):
    x, y = line
    model = _line_model()
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.5))
    _full_batch_steps(model, x, y, mode, optimizer=optimizer, steps=30)

    assert model.optimizer is optimizer  # used as given, not wrapped again
    assert _iterations(model) == 30
    # The scale is a power of two, so scaling and unscaling are exact: these are plain gradient
    # descent steps, checked against float64 NumPy (float32 rounding, ~1e-7 a step: 1e-5).
    path = _sgd_path(x, y, 0.0, 0.0, 0.5, _batches(len(x), len(x), epochs=30))
    np.testing.assert_allclose(model.params["m"], path[-1, :1], atol=1e-5)
    np.testing.assert_allclose(model.params["b"], path[-1, 1], atol=1e-5)


# --------------------------------------------------------------------------- 2. finalize (EMA)
def _f32(value):
    """A float as a float32 tensor holds it (0.999 -> 0.99900001287...)."""
    return float(np.float32(value))


def _adam_path(x, y, m, b, steps, lr=0.05, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    """Full-batch Adam on the MSE (Keras' update rule) in float64 NumPy: `(m, b)` per step.

    As in Keras, the bias corrections raise the float32 betas to the step's power, while the
    moment updates use `1 - beta` from the Python floats: with float64 betas throughout, the
    correction `1 - beta_2 ** t` would be off by 1.3e-5 relative, a few 1e-6 on the path.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    theta, first, second, path = np.array([m, b], np.float64), np.zeros(2), np.zeros(2), []
    for t in range(1, steps + 1):
        residual = theta[0] * x + theta[1] - y
        gradient = np.array([2 * np.mean(residual * x), 2 * np.mean(residual)])
        first = first + (gradient - first) * (1 - beta_1)
        second = second + (gradient**2 - second) * (1 - beta_2)
        alpha = lr * np.sqrt(1 - _f32(beta_2) ** t) / (1 - _f32(beta_1) ** t)
        theta = theta - alpha * first / (np.sqrt(second) + epsilon)
        path.append(theta)
    return np.array(path)


@pytest.fixture(scope="module")
def ema_fit(line):
    """fit() with Adam + EMA for 20 full-batch epochs from (m, b) = (0.5, 0)."""
    x, y = line
    model = _line_model(0.5)
    optimizer = keras.optimizers.Adam(0.05, use_ema=True, ema_momentum=0.9)
    _train(model, x, y, "fit", optimizer=optimizer, epochs=20, batch_size=len(x))
    return model


@pytest.mark.parametrize("mode", MODES)
def test_training_ends_with_finalize_variable_values(mode, line, ema_fit):
    x, y = line
    if mode == "fit":
        model = ema_fit
    else:
        model = _line_model(0.5)
        optimizer = keras.optimizers.Adam(0.05, use_ema=True, ema_momentum=0.9)
        _train(model, x, y, mode, optimizer=optimizer, epochs=20, batch_size=len(x))

    # The EMA does not change the steps: the final values are the moving average of the Adam
    # path, which Keras starts at the first step's values (its momentum is 0 at iteration 0).
    path = _adam_path(x, y, 0.5, 0.0, steps=20)
    average = path[0]
    for theta in path[1:]:
        average = 0.9 * average + 0.1 * theta
    assert np.all(np.abs(average - path[-1]) > 1e-2)  # far from the last step's values
    for name, expected in (("m", average[:1]), ("b", average[1])):
        # float32 Adam against float64 NumPy: the paths drift ~2e-8 a step (measured: 5e-7
        # after 20 steps; the average, 3e-7): 1e-6.
        np.testing.assert_allclose(model.params[name], expected, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(
            model.params[name], ema_fit.params[name], atol=PARITY_ATOL[mode], err_msg=name
        )


# --------------------------------------------------------------------------- 3. stop_training
class _StopInSecondEpoch(keras.callbacks.Callback):
    """Sets `stop_training` at the first batch end of the second epoch with index >= 3."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 1 and batch >= 3:
            self.model.stop_training = True


# 10 batches of 10 per epoch. fit() and the eager loop stop after batch 3 (index) of epoch 2:
# 10 + 4 steps. The compiled loops run batch hooks once per epoch (index 9): a whole epoch.
STOP_ITERATIONS = {"fit": 14, "eager": 14, "function": 20, "xla": 20}


@pytest.mark.parametrize("mode", MODES)
def test_stop_training_from_a_batch_hook(mode, line):
    x, y = line
    model = _line_model()
    history = _train(
        model,
        x,
        y,
        mode,
        optimizer=keras.optimizers.SGD(0.1),
        epochs=5,
        batch_size=10,
        callbacks=[_StopInSecondEpoch()],
    )
    steps = STOP_ITERATIONS[mode]
    assert _iterations(model) == steps
    assert len(history.history["loss"]) == 2
    # The parameters are those after exactly these steps (float64 NumPy SGD; float32 rounding).
    path = _sgd_path(x, y, 0.0, 0.0, 0.1, _batches(len(x), 10, epochs=2))
    np.testing.assert_allclose(model.params["m"], [path[steps - 1, 0]], atol=1e-5)
    np.testing.assert_allclose(model.params["b"], path[steps - 1, 1], atol=1e-5)


# --------------------------------------------------------------------------- 4. validation
@pytest.fixture(scope="module")
def validation_line():
    """40 points of `y = x + 1`: the training fit (towards y = x + 2) passes it, then leaves."""
    rng = np.random.default_rng(7)
    xv = rng.uniform(size=40).astype(np.float32)
    yv = (xv + 1.0 + 0.05 * rng.normal(size=40)).astype(np.float32)
    return xv, yv


@pytest.mark.parametrize("mode", MODES)
def test_validation_early_stopping_and_best_checkpoint(mode, line, validation_line, tmp_path):
    x, y = line
    xv, yv = validation_line
    epochs, lr = 30, 0.1
    # The run, in float64 NumPy: full-batch GD from (0, 0), and val MSE after each epoch.
    path = _sgd_path(x, y, 0.0, 0.0, lr, _batches(len(x), len(x), epochs=epochs))
    val = np.mean((path[:, :1] * xv + path[:, 1:] - yv) ** 2, axis=1)
    # EarlyStopping(patience=1, min_delta=0) stops at the first epoch that does not improve.
    worse = np.flatnonzero(np.diff(val) >= 0)
    assert len(worse) and worse[0] + 2 < epochs  # the scenario does stop early
    stop = worse[0] + 2  # epochs run
    # Consecutive values differ by far more than float32 rounding: the same decisions in float32.
    assert np.min(np.abs(np.diff(val[:stop]))) > 1e-4

    path_file = tmp_path / "best.weights.h5"
    history = _train(
        _line_model(),
        x,
        y,
        mode,
        optimizer=keras.optimizers.SGD(lr),
        epochs=epochs,
        batch_size=len(x),
        validation_data=(xv, yv),
        callbacks=[
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=1),
            checkpoint.ModelCheckpoint(
                path_file, monitor="val_loss", save_best_only=True, save_weights_only=True
            ),
        ],
    ).history

    assert len(history["val_loss"]) == stop
    # val_loss is the MSE on the validation data at each epoch's end parameters (which History
    # holds as "m" and "b"): float32 evaluation of a float32 line, relative 1e-5.
    m, b = np.array(history["m"], np.float64), np.array(history["b"], np.float64)
    measured = np.mean((m[:, None] * xv + b[:, None] - yv) ** 2, axis=1)
    np.testing.assert_allclose(history["val_loss"], measured, rtol=1e-5)
    np.testing.assert_allclose(history["val_loss"], val[:stop], rtol=1e-4)

    # The checkpoint holds the best epoch's weights.
    best = _line_model()
    best(x[:2])
    best.load_weights(path_file)
    at = int(np.argmin(history["val_loss"]))
    assert at == stop - 2
    np.testing.assert_allclose(best.params["m"], [history["m"][at]], rtol=1e-7)
    np.testing.assert_allclose(best.params["b"], history["b"][at], rtol=1e-7)


# --------------------------------------------------------------------------- 5. streamed loops
def test_loops_refuse_a_dataset_naming_x(line):
    x, y = line
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)
    model = _line_model()
    with pytest.raises(TypeError, match=r"^x: .*Dataset"):
        loops.train(model, dataset, epochs=1, batch_size=10, optimizer="sgd", verbose=0)
    assert not model.built


# --------------------------------------------------------------------------- 6. metrics
def _metric_model(case):
    metrics = ["mae", keras.metrics.RootMeanSquaredError()]
    if case == "line":
        model = _line_model(0.5, 0.25)
    else:
        model = keras_mle.GaussianMLE(initial_mu=1.5, initial_sigma=1.2)
    model.compile(optimizer=keras.optimizers.SGD(0.0), metrics=metrics)
    return model


def _metric_data(case, line, samples):
    """`(x, y)` and the float64 residuals of the initial model: y - line, or sample - mu."""
    if case == "line":
        x, y = line
        return (x, y), np.float64(y) - (0.5 * np.float64(x) + 0.25)
    return (samples, None), np.float64(samples) - 1.5


def _assert_metrics(logs, residual):
    # float32 sums of 100 (or 1000) terms against float64 NumPy: a few 1e-7 relative.
    np.testing.assert_allclose(logs["mae"], np.mean(np.abs(residual)), rtol=1e-6)
    np.testing.assert_allclose(
        logs["root_mean_squared_error"], np.sqrt(np.mean(residual**2)), rtol=1e-6
    )


@pytest.mark.parametrize(
    "mode, case", [*((mode, "line") for mode in MODES), ("fit", "sample"), ("function", "sample")]
)
def test_compiled_metrics_with_even_batches(mode, case, line, samples):
    (x, y), residual = _metric_data(case, line, samples)
    model = _metric_model(case)
    # Batches that divide the data: 5 of 20 (line), 10 of 100 (sample); SGD(0) never moves.
    batch_size = len(x) // 5 if case == "line" else 100
    history = _train(
        model, x, y, mode, optimizer=model.optimizer, epochs=1, batch_size=batch_size
    ).history
    _assert_metrics({k: v[0] for k, v in history.items()}, residual)
    _assert_metrics(
        model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True), residual
    )


@pytest.mark.parametrize("mode", ["fit", "function"])  # one mode per cause
def test_compiled_metrics_with_an_uneven_last_batch(mode, line):
    (x, y), residual = _metric_data("line", line, None)
    model = _metric_model("line")
    # 100 rows in batches of 32: 32, 32, 32 and 4.
    history = _train(model, x, y, mode, optimizer=model.optimizer, epochs=1, batch_size=32)
    _assert_metrics({k: v[0] for k, v in history.history.items()}, residual)


def test_evaluate_metrics_with_the_default_batch_size(line):
    (x, y), residual = _metric_data("line", line, None)
    model = _metric_model("line")
    _assert_metrics(model.evaluate(x, y, verbose=0, return_dict=True), residual)  # batches of 32


def _metrics_along_the_path(x, y, lr, batch_size, epochs, m=0.5, b=0.25):
    """Keras' train_step semantics in float64 NumPy: each batch's metrics are taken from the
    forward pass, i.e. at the parameters *before* its step. `[(mae, rmse)]` per epoch."""
    batches = _batches(len(x), batch_size)
    path = _sgd_path(x, y, m, b, lr, batches * epochs)
    before = np.vstack([[m, b], path[:-1]])
    result = []
    for epoch in range(epochs):
        params = before[epoch * len(batches) : (epoch + 1) * len(batches)]
        residual = np.concatenate(
            [np.float64(y[s]) - (p * x[s] + q) for s, (p, q) in zip(batches, params, strict=True)]
        )
        result.append((np.mean(np.abs(residual)), np.sqrt(np.mean(residual**2))))
    return result


@pytest.mark.parametrize("mode", ["fit", "function"])  # apply_step is shared by all modes
def test_training_metrics_use_the_parameters_before_each_step(mode, line):
    x, y = line
    model = _metric_model("line")
    model.optimizer.learning_rate.assign(0.1)
    history = _train(model, x, y, mode, optimizer=model.optimizer, epochs=2, batch_size=20)
    for epoch, (mae, rmse) in enumerate(_metrics_along_the_path(x, y, 0.1, 20, 2)):
        # float32 parameters and sums against float64 NumPy, after up to 10 steps.
        np.testing.assert_allclose(history.history["mae"][epoch], mae, rtol=1e-5)
        np.testing.assert_allclose(
            history.history["root_mean_squared_error"][epoch], rmse, rtol=1e-5
        )


def test_mirrored_metrics_equal_one_device(line, mirrored_strategy):
    x, y = line
    single = _metric_model("line")
    with mirrored_strategy.scope():
        mirrored = _metric_model("line")
    for model in (single, mirrored):
        model.optimizer.learning_rate.assign(0.1)
    # Batches of 20: 10 rows per replica, so that per-replica batch means weigh alike.
    kwargs = {"batch_size": 20, "epochs": 1, "shuffle": False, "verbose": 0}
    expected = single.fit(x, y, **kwargs).history
    history = mirrored.fit(x, y, **kwargs).history
    assert _iterations(mirrored) == _iterations(single) == 5
    # Two replicas of 10 rows sum in another order than one device of 20: float32 rounding.
    for name in ("loss", "mae", "root_mean_squared_error", "m", "b"):
        np.testing.assert_allclose(history[name], expected[name], rtol=1e-6, err_msg=name)


# --------------------------------------------------------------------------- 7. no loss
@pytest.mark.parametrize(
    "kwargs, name",
    [({"loss": "mse"}, "loss"), ({"loss_weights": [1.0]}, "loss_weights")],
)
def test_compile_refuses_a_loss(kwargs, name):
    model = keras_mle.LinearRegression()
    with pytest.raises(ValueError, match=rf"^{name}: "):
        model.compile(optimizer="sgd", **kwargs)
    assert getattr(model, "optimizer", None) is None


# --------------------------------------------------------------------------- 8. callbacks smoke
def test_package_callbacks_in_fit_of_an_unbuilt_model(line, validation_line, tmp_path):
    x, y = line
    model = keras_mle.LinearRegression()
    assert not model.built
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    parameters = keras_mle.callbacks.ParameterHistory()
    history = model.fit(
        x,
        y,
        batch_size=50,
        epochs=2,
        verbose=0,
        validation_data=validation_line,
        callbacks=[
            parameters,
            keras_mle.callbacks.ParameterTensorBoard(tmp_path / "tb", data=(x, y)),
            keras_mle.callbacks.ConvergenceStopping((x, y), gradient_tolerance=1e-3),
            keras_mle.checkpoint.BackupAndRestore(tmp_path / "backup"),
        ],
    )
    assert len(history.history["loss"]) == 2
    assert parameters.epoch == [0, 1]
    np.testing.assert_allclose(parameters.history["m"][-1], model.params["m"][0], rtol=1e-7)
    assert _iterations(model) == 4


def test_positional_validation_data(line, validation_line):
    x, y = line
    xv, yv = validation_line
    model = _line_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    # fit(x, y, batch_size, epochs, verbose, callbacks, validation_split, validation_data)
    history = model.fit(x, y, 32, 2, 0, None, 0.0, (xv, yv)).history
    assert _iterations(model) == 8  # 2 epochs of 4 batches (32, 32, 32, 4)
    m, b = np.array(history["m"], np.float64), np.array(history["b"], np.float64)
    measured = np.mean((m[:, None] * xv + b[:, None] - yv) ** 2, axis=1)
    np.testing.assert_allclose(history["val_loss"], measured, rtol=1e-5)
