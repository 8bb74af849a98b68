"""ParameterHistory, ConvergenceStopping and the fit statistics, in fit() and in the custom loops.

Expected numbers are worked out independently: gradient-descent trajectories and gradients in
float64 NumPy, log-likelihoods with `scipy.stats.norm`, MLEs from `keras_mle.closed_form`.
"""

import helpers
import keras
import numpy as np
import pytest
from scipy import stats

import keras_mle
from keras_mle import callbacks as mle_callbacks
from keras_mle import closed_form

#: float32 training against a float64 NumPy trajectory, over a few epochs.
TRAJECTORY_TOL = 1e-5
#: float32 statistics against float64 references (relative).
STATISTIC_RTOL = 1e-5
#: Distance to the MLE left when the gradient norm is under GRADIENT_TOL (Hessian ~ identity).
GRADIENT_TOL = 1e-5
CONVERGED_TOL = 1e-4
LEARNING_RATE = 0.25
EPOCHS = 5
MODES = ["fit", "eager", "function", "xla"]


def two_feature_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)).astype("float32")
    y = (x @ np.array([1.5, -0.5]) + 2.0 + 0.3 * rng.normal(size=n)).astype("float32")
    return x, y


def train(model, x, y, mode, epochs, callbacks, optimizer=None):
    optimizer = optimizer or keras.optimizers.SGD(LEARNING_RATE)
    return helpers.train(model, x, y, mode, epochs, callbacks, optimizer)


def gradient_descent_mse(x, y, m, b, epochs, learning_rate=LEARNING_RATE):
    """Full-batch gradient descent on the MSE of `y = x @ m + b` in float64: (m, b) per epoch."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    m, b = np.asarray(m, np.float64), float(b)
    path = []
    for _ in range(epochs):
        residual = x @ m + b - y
        m, b = (
            m - learning_rate * 2 * x.T @ residual / len(y),
            b - learning_rate * 2 * residual.mean(),
        )
        path.append((m.copy(), b))
    return path


@pytest.mark.parametrize("mode", MODES)
def test_parameter_history_follows_gradient_descent(mode):
    x, y = two_feature_data()
    model = keras_mle.LinearRegression()
    model(x[:2])
    start = model.params
    parameters = mle_callbacks.ParameterHistory()
    history = train(model, x, y, mode, EPOCHS, [parameters])

    assert parameters.epoch == list(range(EPOCHS))
    assert {"loss", "m_0", "m_1", "b"} <= set(history.history)
    for name in ("m_0", "m_1", "b"):
        assert parameters.history[name] == history.history[name]
    expected = gradient_descent_mse(x, y, start["m"], start["b"], EPOCHS)
    np.testing.assert_allclose(
        parameters.history["m_0"], [m[0] for m, _ in expected], atol=TRAJECTORY_TOL
    )
    np.testing.assert_allclose(
        parameters.history["m_1"], [m[1] for m, _ in expected], atol=TRAJECTORY_TOL
    )
    np.testing.assert_allclose(
        parameters.history["b"], [b for _, b in expected], atol=TRAJECTORY_TOL
    )
    assert parameters.history["b"][-1] == float(model.params["b"])


def test_parameter_history_adds_parameters_a_train_step_does_not_report():
    class QuietGaussian(keras_mle.GaussianMLE):
        def train_step(self, data):
            return {"loss": super().train_step(data)["loss"]}

    samples = keras_mle.data.gaussian_sample(n=100)
    model = QuietGaussian(mu=1.4, sigma=1.3)
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


# ------------------------------------------------------------------- fit_statistics
def test_fit_statistics_of_a_gaussian_sample_match_scipy_and_the_analytic_gradient():
    samples = keras_mle.data.gaussian_sample(mu=2.0, sigma=1.0, n=500, seed=3)
    model = keras_mle.GaussianMLE(mu=1.7, sigma=0.8)
    mle = closed_form.gaussian_mle(samples)
    result = mle_callbacks.fit_statistics(model, samples, closed_form=mle)

    x = samples.astype(np.float64)
    mu, sigma = 1.7, 0.8
    expected_ll = stats.norm.logpdf(x, mu, sigma).sum()
    # Gradient of the mean NLL w.r.t. the variables (mu, log sigma).
    d_mu = -(x.mean() - mu) / sigma**2
    d_log_sigma = 1.0 - np.mean((x - mu) ** 2) / sigma**2
    np.testing.assert_allclose(result["log_likelihood"], expected_ll, rtol=STATISTIC_RTOL)
    np.testing.assert_allclose(
        result["gradient_norm"], np.hypot(d_mu, d_log_sigma), rtol=STATISTIC_RTOL
    )
    np.testing.assert_allclose(
        result["distance_to_closed_form"],
        np.hypot(mu - mle["mu"], sigma - mle["sigma"]),
        rtol=STATISTIC_RTOL,
    )


def test_fit_statistics_of_a_weighted_line():
    x, y = keras_mle.data.noisy_line(n=80, seed=4)
    weights = np.random.default_rng(5).uniform(0.5, 2.0, size=80).astype("float32")
    model = keras_mle.LinearRegression(m_initializer=keras.initializers.Constant(0.5))
    model(x[:2])
    result = mle_callbacks.fit_statistics(model, x, y, weights)

    w, x64, y64 = weights.astype(np.float64), x.astype(np.float64), y.astype(np.float64)
    residual = 0.5 * x64 - y64  # b = 0
    mse = np.sum(w * residual**2) / w.sum()
    gradient = 2 * np.array([np.sum(w * residual * x64), np.sum(w * residual)]) / w.sum()
    np.testing.assert_allclose(result["mse"], mse, rtol=STATISTIC_RTOL)
    np.testing.assert_allclose(
        result["gradient_norm"], np.linalg.norm(gradient), rtol=STATISTIC_RTOL
    )
    assert "distance_to_closed_form" not in result


def test_known_closed_forms():
    x, y = two_feature_data()
    ols = closed_form.ols(x, y)
    regression = keras_mle.GaussianRegression()
    assert set(mle_callbacks.known_closed_form(regression, x, y)) == {"m", "b", "sigma"}
    line = mle_callbacks.known_closed_form(keras_mle.LinearRegression(), x, y)
    assert set(line) == {"m", "b"}
    np.testing.assert_array_equal(line["m"], ols["m"])


# ------------------------------------------------------------------- ConvergenceStopping
@pytest.mark.parametrize("mode", ["fit", "function"])
def test_convergence_stopping_on_the_gradient_norm(mode, capsys):
    samples = keras_mle.data.gaussian_sample(mu=2.0, sigma=1.0, n=200, seed=6)
    model = keras_mle.GaussianMLE(mu=1.4, sigma=1.3)
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
    mle = closed_form.gaussian_mle(samples)
    assert abs(model.params["mu"] - mle["mu"]) < CONVERGED_TOL
    assert abs(model.params["sigma"] - mle["sigma"]) < CONVERGED_TOL


def test_convergence_stopping_on_the_parameter_change():
    x, y = two_feature_data()
    model = keras_mle.LinearRegression()
    stopper = mle_callbacks.ConvergenceStopping(parameter_tolerance=1e-6, patience=2, verbose=0)
    history = train(model, x, y, "function", 1000, [stopper])

    changes = history.history["parameter_change"]
    assert len(changes) < 1000
    assert all(c < 1e-6 for c in changes[-2:]) and changes[-3] >= 1e-6
    assert "relative parameter change" in history.history["stop_reason"][0]
    ols = closed_form.ols(x, y)
    np.testing.assert_allclose(model.params["m"], ols["m"], atol=CONVERGED_TOL)
    np.testing.assert_allclose(model.params["b"], ols["b"], atol=CONVERGED_TOL)


def test_no_stop_reason_when_training_runs_to_the_end():
    x, y = two_feature_data()
    stopper = mle_callbacks.ConvergenceStopping(parameter_tolerance=1e-12)
    history = train(keras_mle.LinearRegression(), x, y, "function", 3, [stopper])
    assert "stop_reason" not in history.history and stopper.stop_reason is None


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

    x, y = two_feature_data()
    board = mle_callbacks.ParameterTensorBoard("unused", (x, y), closed_form={"slope": 1.0})
    with pytest.raises(ValueError, match="closed_form"):
        train(keras_mle.LinearRegression(), x, y, "function", 1, [board])


# ------------------------------------------------------------------- fit pictures
@pytest.mark.parametrize(
    "model, data",
    [
        (keras_mle.GaussianMLE(mu=1.0, sigma=2.0), (keras_mle.data.gaussian_sample(n=300),)),
        (keras_mle.LinearRegression(), keras_mle.data.noisy_line(n=50)),
        (keras_mle.GaussianRegression(), two_feature_data()),
    ],
    ids=["density", "line", "observed-vs-predicted"],
)
def test_render_fit_draws_an_image(model, data):
    checked = model.check_data(*data)
    model(checked[0][:2])
    image = mle_callbacks.render_fit(model, *checked, title="epoch 0")
    assert image.dtype == np.uint8 and image.shape == (320, 480, 4)
    # Not a blank canvas: the plot has many distinct colours.
    assert len(np.unique(image.reshape(-1, 4), axis=0)) > 50
