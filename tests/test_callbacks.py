"""The callbacks in fit() and in the custom loops, on new and on built models.

Expected numbers are worked out independently: gradient-descent trajectories in float64 NumPy,
MLEs with `numpy.linalg.lstsq` on the design with a column of ones and with `np.mean` / `np.std`.
"""

import helpers
import keras
import numpy as np
import pytest

import keras_mle
from keras_mle import callbacks as mle_callbacks
from keras_mle import checkpoint, statistics

#: float32 training against a float64 NumPy trajectory, over a few epochs.
TRAJECTORY_TOL = 1e-5
#: Distance to the MLE left when the gradient norm is under GRADIENT_TOL (Hessian ~ identity).
GRADIENT_TOL = 1e-5
CONVERGED_TOL = 1e-4
#: float64 closed forms against another float64 solver.
CLOSED_FORM_RTOL = 1e-10
LEARNING_RATE = 0.25
EPOCHS = 5
MODES = ["fit", "eager", "function", "xla"]


def train(model, x, y, mode, epochs, callbacks, optimizer=None):
    optimizer = optimizer or keras.optimizers.SGD(LEARNING_RATE)
    return helpers.train(model, x, y, mode, epochs, callbacks, optimizer)


def test_the_module_reexports_the_checkpoint_callbacks_and_the_statistics():
    assert mle_callbacks.BackupAndRestore is checkpoint.BackupAndRestore
    assert mle_callbacks.ModelCheckpoint is checkpoint.ModelCheckpoint
    assert mle_callbacks.fit_statistics is statistics.fit_statistics
    assert set(mle_callbacks.__all__) == {
        "ParameterHistory",
        "ParameterTensorBoard",
        "ConvergenceStopping",
        "BackupAndRestore",
        "ModelCheckpoint",
        "fit_statistics",
    }


# ------------------------------------------------------------------- ParameterHistory
@pytest.mark.parametrize("mode", MODES)
def test_parameter_history_follows_gradient_descent(mode):
    x, y = helpers.two_feature_data()
    model = keras_mle.LinearRegression()
    model(x[:2])
    start = model.params
    parameters = mle_callbacks.ParameterHistory()
    history = train(model, x, y, mode, EPOCHS, [parameters])

    assert parameters.epoch == list(range(EPOCHS))
    assert {"loss", "m_0", "m_1", "b"} <= set(history.history)
    for name in ("m_0", "m_1", "b"):
        assert parameters.history[name] == history.history[name]
    expected = helpers.gradient_descent_mse(
        x, y, start["m"], start["b"], EPOCHS, learning_rate=LEARNING_RATE
    )
    for column, name in enumerate(("m_0", "m_1", "b")):
        np.testing.assert_allclose(
            parameters.history[name], expected[:, column], atol=TRAJECTORY_TOL
        )
    assert parameters.history["b"][-1] == float(model.params["b"])


def test_parameter_history_adds_parameters_a_train_step_does_not_report():
    class QuietGaussian(keras_mle.GaussianMLE):
        def train_step(self, data):
            return {"loss": super().train_step(data)["loss"]}

    samples = keras_mle.data.gaussian_sample(n=100)
    model = QuietGaussian(initial_mu=1.4, initial_sigma=1.3)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    without = model.fit(samples, epochs=2, batch_size=100, verbose=0)
    assert set(without.history) == {"loss"}
    history = model.fit(
        samples,
        epochs=2,
        batch_size=100,
        verbose=0,
        callbacks=[mle_callbacks.ParameterHistory()],
    )
    assert set(history.history) == {"loss", "mu", "sigma"}
    assert history.history["sigma"][-1] == float(model.params["sigma"])


# ------------------------------------------------------------------- ConvergenceStopping
@pytest.mark.parametrize("mode", ["fit", "function"])
def test_convergence_stopping_on_the_gradient_norm(mode, capsys):
    samples = keras_mle.data.gaussian_sample(mu=2.0, sigma=1.0, n=200, seed=6)
    model = keras_mle.GaussianMLE(initial_mu=1.4, initial_sigma=1.3)
    stopper = mle_callbacks.ConvergenceStopping(
        samples, gradient_tolerance=GRADIENT_TOL, parameter_tolerance=None, patience=3
    )
    history = train(model, samples, None, mode, 500, [stopper], keras.optimizers.SGD(0.5))

    norms = history.history["gradient_norm"]
    assert len(norms) < 500
    assert all(n < GRADIENT_TOL for n in norms[-3:]) and norms[-4] >= GRADIENT_TOL
    assert stopper.stopped_epoch == len(norms) - 1
    assert history.history["stop_reason"] == [stopper.stop_reason]
    assert "gradient norm" in stopper.stop_reason
    assert f"ConvergenceStopping: {stopper.stop_reason}" in capsys.readouterr().out
    x = samples.astype(np.float64)
    assert abs(model.params["mu"] - np.mean(x)) < CONVERGED_TOL
    assert abs(model.params["sigma"] - np.std(x)) < CONVERGED_TOL


def test_convergence_stopping_on_the_parameter_change():
    x, y = helpers.two_feature_data()
    model = keras_mle.LinearRegression()
    stopper = mle_callbacks.ConvergenceStopping(parameter_tolerance=1e-6, patience=2, verbose=0)
    history = train(model, x, y, "function", 1000, [stopper])

    changes = history.history["parameter_change"]
    assert len(changes) < 1000
    assert all(c < 1e-6 for c in changes[-2:]) and changes[-3] >= 1e-6
    assert "relative parameter change" in history.history["stop_reason"][0]
    m, b, _ = helpers.least_squares(x, y)
    np.testing.assert_allclose(model.params["m"], m, atol=CONVERGED_TOL)
    np.testing.assert_allclose(model.params["b"], b, atol=CONVERGED_TOL)


def test_no_stop_reason_when_training_runs_to_the_end():
    x, y = helpers.two_feature_data()
    stopper = mle_callbacks.ConvergenceStopping(parameter_tolerance=1e-12)
    history = train(keras_mle.LinearRegression(), x, y, "function", 3, [stopper])
    assert "stop_reason" not in history.history and stopper.stop_reason is None


def test_gradient_norm_from_the_logs_stops_where_the_loop_logs_it():
    class LogsAGradientNorm(keras.callbacks.Callback):
        """Stands in for a loop that logs `gradient_norm` (10, 1, 0.1, ... per epoch)."""

        def on_epoch_end(self, epoch, logs=None):
            logs["gradient_norm"] = 10.0 ** (1 - epoch)

    x, y = helpers.two_feature_data()
    stopper = mle_callbacks.ConvergenceStopping(
        parameter_tolerance=None, gradient_tolerance=0.05, patience=2, gradient_from_logs=True
    )
    history = train(
        keras_mle.LinearRegression(), x, y, "function", 10, [LogsAGradientNorm(), stopper]
    )
    # Below 0.05 from the fourth epoch (norm 0.01) on: stopped after two such epochs.
    assert len(history.epoch) == 5 and stopper.stopped_epoch == 4
    assert stopper.stop_reason == (
        "converged at epoch 5: gradient norm 0.001 < 0.05 for 2 epoch(s)"
    )
    silent = mle_callbacks.ConvergenceStopping(gradient_tolerance=0.05, gradient_from_logs=True)
    with pytest.raises(ValueError, match="this training loop logs no gradient_norm"):
        train(keras_mle.LinearRegression(), x, y, "function", 2, [silent])


def test_callback_arguments_are_checked():
    with pytest.raises(ValueError, match="parameter_tolerance or gradient_tolerance"):
        mle_callbacks.ConvergenceStopping(parameter_tolerance=None)
    with pytest.raises(ValueError, match="needs data"):
        mle_callbacks.ConvergenceStopping(gradient_tolerance=1e-6)
    with pytest.raises(ValueError, match="patience"):
        mle_callbacks.ConvergenceStopping(patience=0)
    with pytest.raises(ValueError, match="gradient_tolerance"):
        mle_callbacks.ConvergenceStopping((np.ones(3),), gradient_tolerance=-1.0)
    with pytest.raises(ValueError, match="image_every"):
        mle_callbacks.ParameterTensorBoard("logs", image_every=-1)
    with pytest.raises(ValueError, match="closed_form must be"):
        mle_callbacks.ParameterTensorBoard("logs", closed_form="ols")

    x, y = helpers.two_feature_data()
    board = mle_callbacks.ParameterTensorBoard("unused", (x, y), closed_form={"slope": 1.0})
    with pytest.raises(ValueError, match="closed_form"):
        train(keras_mle.LinearRegression(), x, y, "function", 1, [board])


@pytest.mark.parametrize(
    "callback",
    [
        mle_callbacks.ParameterTensorBoard("unused", data=helpers.two_feature_data()),
        mle_callbacks.ConvergenceStopping(
            helpers.two_feature_data(), gradient_tolerance=1e-3, parameter_tolerance=None
        ),
    ],
    ids=["ParameterTensorBoard", "ConvergenceStopping"],
)
def test_a_loop_that_does_not_build_the_model_is_told_so(callback):
    callback.set_model(keras_mle.LinearRegression())
    with pytest.raises(ValueError, match="needs a built model"):
        callback.on_train_begin()


# ------------------------------------------------------------------- closed forms
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize(
    "make_model, names",
    [
        (keras_mle.LinearRegression, {"m", "b"}),
        (keras_mle.GaussianRegression, {"m", "b", "sigma"}),
    ],
)
def test_regression_closed_forms_are_least_squares(make_model, names, weighted):
    x, y = helpers.two_feature_data()
    w = np.random.default_rng(7).uniform(0.2, 3.0, len(x)) if weighted else None
    model = make_model()
    model(x[:2])
    result = model.closed_form(x, y, w)
    m, b, sigma = helpers.least_squares(x, y, w)
    assert set(result) == names
    np.testing.assert_allclose(result["m"], m, rtol=CLOSED_FORM_RTOL)
    np.testing.assert_allclose(result["b"], b, rtol=CLOSED_FORM_RTOL)
    if "sigma" in names:
        np.testing.assert_allclose(result["sigma"], sigma, rtol=CLOSED_FORM_RTOL)


@pytest.mark.parametrize("weighted", [False, True])
def test_the_gaussian_closed_form_is_the_sample_mean_and_std(weighted):
    samples = keras_mle.data.gaussian_sample(mu=2.0, sigma=1.5, n=300, seed=8)
    x = samples.astype(np.float64)
    w = np.random.default_rng(9).uniform(0.2, 3.0, len(x)) if weighted else None
    result = keras_mle.GaussianMLE().closed_form(samples, sample_weight=w)
    if weighted:
        mu = np.average(x, weights=w)
        sigma = np.sqrt(np.average((x - mu) ** 2, weights=w))
    else:
        mu, sigma = np.mean(x), np.std(x)
    assert set(result) == {"mu", "sigma"}
    np.testing.assert_allclose(result["mu"], mu, rtol=CLOSED_FORM_RTOL)
    np.testing.assert_allclose(result["sigma"], sigma, rtol=CLOSED_FORM_RTOL)


def test_a_user_model_has_no_closed_form():
    model = keras_mle.MaximumLikelihoodModel()
    assert model.closed_form(np.ones(3), np.ones(3)) is None


# ------------------------------------------------------------------- new and built models
NEW_EPOCHS = 15
LINE = keras_mle.data.noisy_line(n=64, seed=8)
SAMPLE = (keras_mle.data.gaussian_sample(n=200, seed=8), None)
#: name: (model factory, data, learning rate, gradient tolerance that stops within NEW_EPOCHS).
MODELS = {
    "LinearRegression": (
        lambda: keras_mle.LinearRegression(m_initializer=keras.initializers.RandomNormal(seed=0)),
        LINE,
        0.3,
        0.05,
    ),
    "GaussianRegression": (
        lambda: keras_mle.GaussianRegression(
            initial_sigma=0.5, m_initializer=keras.initializers.RandomNormal(seed=0)
        ),
        LINE,
        0.02,
        2.0,
    ),
    "GaussianMLE": (
        lambda: keras_mle.GaussianMLE(initial_mu=1.4, initial_sigma=1.3),
        SAMPLE,
        0.3,
        0.05,
    ),
}
CALLBACKS = ["ParameterHistory", "ParameterTensorBoard", "ConvergenceStopping", "BackupAndRestore"]


def _make_callback(kind, data, gradient_tolerance, folder):
    if kind == "ParameterHistory":
        return mle_callbacks.ParameterHistory()
    if kind == "ParameterTensorBoard":
        return mle_callbacks.ParameterTensorBoard(folder, data=data, image_every=5)
    if kind == "ConvergenceStopping":
        return mle_callbacks.ConvergenceStopping(
            data,
            gradient_tolerance=gradient_tolerance,
            parameter_tolerance=None,
            patience=2,
            verbose=0,
        )
    return mle_callbacks.BackupAndRestore(folder, delete_checkpoint=False)


def _run(name, kinds, folder, *, built, mode="fit", epochs=NEW_EPOCHS):
    make_model, (x, y), learning_rate, gradient_tolerance = MODELS[name]
    data = x if y is None else (x, y)
    model = make_model()
    if built:
        model(x[:2])
    callbacks = [_make_callback(kind, data, gradient_tolerance, folder / kind) for kind in kinds]
    history = helpers.train(
        model, x, y, mode, epochs, callbacks, keras.optimizers.SGD(learning_rate)
    )
    return model, dict(zip(kinds, callbacks, strict=True)), history


def _assert_same_runs(name, kinds, new_folder, built_folder, mode):
    new_model, new_callbacks, new_history = _run(name, kinds, new_folder, built=False, mode=mode)
    model, callbacks, history = _run(name, kinds, built_folder, built=True, mode=mode)

    assert new_history.epoch == history.epoch
    assert new_history.history == history.history
    assert new_model.parameter_names == model.parameter_names
    for parameter, value in model.params.items():
        np.testing.assert_array_equal(new_model.params[parameter], value)
    # The logs hold every parameter at every epoch, so equal logs mean equal trajectories.
    assert set(model.parameter_logs()) <= set(history.history)

    if "ParameterHistory" in kinds:
        assert new_callbacks["ParameterHistory"].history == callbacks["ParameterHistory"].history
        assert callbacks["ParameterHistory"].epoch == history.epoch
    if "ParameterTensorBoard" in kinds:
        new_events = helpers.read_events(new_folder / "ParameterTensorBoard" / "train")
        events = helpers.read_events(built_folder / "ParameterTensorBoard" / "train")
        # The closed form ("auto") was found for the new model too.
        assert "statistics/distance_to_closed_form" in events
        assert {"statistics/gradient_norm", "fit"} <= set(events)
        assert set(new_events) == set(events)
        for tag, (steps, values, plugin) in events.items():
            assert new_events[tag][0] == steps, tag
            if plugin == "scalars":
                assert steps == history.epoch, tag
                assert new_events[tag][1] == values, tag
            elif plugin == "images":
                for new_image, image in zip(new_events[tag][1], values, strict=True):
                    np.testing.assert_array_equal(new_image, image)
    if "ConvergenceStopping" in kinds:
        stopper = callbacks["ConvergenceStopping"]
        assert stopper.stop_reason is not None and len(history.epoch) < NEW_EPOCHS
        assert new_callbacks["ConvergenceStopping"].stop_reason == stopper.stop_reason
        assert new_callbacks["ConvergenceStopping"].stopped_epoch == stopper.stopped_epoch
    if "BackupAndRestore" in kinds:
        saved = checkpoint.read_backup(built_folder / "BackupAndRestore")
        assert saved["epoch"] == len(history.epoch)
        assert checkpoint.read_backup(new_folder / "BackupAndRestore")["epoch"] == saved["epoch"]


@pytest.mark.parametrize("name", list(MODELS))
def test_a_new_model_in_fit_gets_the_same_run_as_a_built_one(tmp_path, name):
    # All four callbacks in one fit: each is compared on its own below.
    _assert_same_runs(name, CALLBACKS, tmp_path / "new", tmp_path / "built", "fit")


@pytest.mark.parametrize("name", list(MODELS))
def test_a_new_model_in_the_custom_loops_gets_the_same_run_as_a_built_one(tmp_path, name):
    _assert_same_runs(name, CALLBACKS, tmp_path / "new", tmp_path / "built", "function")


@pytest.mark.parametrize("name", list(MODELS))
def test_a_new_model_resumes_a_backup_exactly(tmp_path, name):
    reference, _, uninterrupted = _run(name, [], tmp_path, built=True, epochs=8)

    _run(name, ["BackupAndRestore"], tmp_path, built=False, epochs=4)
    model, callbacks, resumed = _run(name, ["BackupAndRestore"], tmp_path, built=False, epochs=8)

    assert callbacks["BackupAndRestore"].restored_epoch == 4
    assert resumed.epoch == list(range(4, 8))
    for key, values in resumed.history.items():
        assert values == uninterrupted.history[key][4:], key
    for parameter, value in reference.params.items():
        np.testing.assert_array_equal(model.params[parameter], value)
