"""The three models: exact optimizer steps, convergence to the closed forms, and their API.

Expected numbers come from outside the package: a float64 NumPy gradient descent written out
from the formulas, statsmodels, scipy, and the closed forms checked in test_closed_form.py.
"""

import helpers
import keras
import numpy as np
import pytest
import scipy.stats
import statsmodels.api as sm
from helpers import built, fit_steps, load_example

import keras_mle
from keras_mle import closed_form, data

# Float32 training against a float64 reference of the same steps: each step rounds at about
# 1e-7 relative and the steps contract errors, so ten steps stay within a few 1e-7.
STEP_ATOL = 2e-6
# Converged float32 fit against the float64 closed form: the float32 optimum is within about
# 1e-6 relative of the exact one; 1e-5 asks for five significant digits.
CONVERGED_RTOL = 1e-5
# Two float32 runs of the same steps whose reductions may sum in a different order.
SAME_STEPS_ATOL = 1e-6
# Float32 values of order 1 computed two ways (model vs float64 NumPy on its parameters).
F32_RTOL = 1e-6


@pytest.fixture(scope="module")
def plane():
    """Three features: `y = x @ [0.5, -2, 3] + 1.5` plus N(0, 0.3^2) noise, 200 rows."""
    return helpers.plane(200, seed=11, slopes=(0.5, -2.0, 3.0), intercept=1.5)


def numpy_gradient_descent(kind, params, x, y=None, w=None, *, lr, epochs, batch_size=None):
    """Plain SGD on the models' objectives, in float64, from the formulas.

    Returns the final parameters and the per-epoch mean loss (over the epoch's batches, each
    evaluated before its step, as Keras' loss tracker does).
    """
    x = np.asarray(x, np.float64)
    x = x.reshape(len(x), -1)
    y = None if y is None else np.asarray(y, np.float64)
    w = np.ones(len(x)) if w is None else np.asarray(w, np.float64)
    params = {k: np.array(v, np.float64) for k, v in params.items()}
    batch_size = batch_size or len(x)
    losses = []
    for _ in range(epochs):
        total, weight = 0.0, 0.0
        for start in range(0, len(x), batch_size):
            xb, wb = x[start : start + batch_size], w[start : start + batch_size]
            yb = None if y is None else y[start : start + batch_size]
            loss, grads = _objective(kind, params, xb, yb, wb)
            total += loss * wb.sum()
            weight += wb.sum()
            for k in params:
                params[k] = params[k] - lr * grads[k]
        losses.append(total / weight)
    return params, losses


def _objective(kind, p, x, y, w):
    n = w.sum()
    if kind == "gaussian_mle":
        # Variables mu and t = log(sigma).
        z2 = (x[:, 0] - p["mu"]) ** 2 * np.exp(-2 * p["t"])
        loss = w @ (0.5 * np.log(2 * np.pi) + p["t"] + 0.5 * z2) / n
        grads = {"mu": -(w @ (x[:, 0] - p["mu"])) * np.exp(-2 * p["t"]) / n, "t": 1 - w @ z2 / n}
        return loss, grads
    r = y - x @ p["m"] - p["b"]
    if kind == "linear_regression":
        loss = w @ r**2 / n
        return loss, {"m": -2 * (w * r) @ x / n, "b": -2 * w @ r / n}
    inv_var = np.exp(-2 * p["t"])
    loss = w @ (0.5 * np.log(2 * np.pi) + p["t"] + 0.5 * r**2 * inv_var) / n
    grads = {"m": -(w * r) @ x * inv_var / n, "b": -(w @ r) * inv_var / n}
    grads["t"] = 1 - w @ r**2 * inv_var / n
    return loss, grads


def _variables(model):
    """The model's variables as a dict in the NumPy reference's names (t = log sigma)."""
    params = {k: np.asarray(v, np.float64) for k, v in model.params.items()}
    if "sigma" in params:
        params["t"] = np.log(params.pop("sigma"))
    return params


# ---------------------------------------------------------------- exact steps of fit()


@pytest.mark.parametrize("batch_size", [100, 32])
def test_linear_regression_fit_takes_the_gradient_descent_steps(line, batch_size):
    x, y = line
    model = built(keras_mle.LinearRegression(), x)
    start = _variables(model)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    history = model.fit(x, y, batch_size=batch_size, epochs=10, shuffle=False, verbose=0)
    expected, losses = numpy_gradient_descent(
        "linear_regression", start, x, y, lr=0.5, epochs=10, batch_size=batch_size
    )
    np.testing.assert_allclose(model.params["m"], expected["m"], atol=STEP_ATOL)
    np.testing.assert_allclose(model.params["b"], expected["b"], atol=STEP_ATOL)
    np.testing.assert_allclose(history.history["loss"], losses, rtol=1e-5)
    np.testing.assert_allclose(history.history["m"][-1], expected["m"][0], atol=STEP_ATOL)
    np.testing.assert_allclose(history.history["b"][-1], expected["b"], atol=STEP_ATOL)


def test_gaussian_mle_fit_takes_the_gradient_descent_steps(samples):
    model = keras_mle.GaussianMLE(initial_mu=1.4, initial_sigma=1.3)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    history = model.fit(samples, batch_size=1000, epochs=10, shuffle=False, verbose=0)
    expected, losses = numpy_gradient_descent(
        "gaussian_mle", {"mu": 1.4, "t": np.log(1.3)}, samples, lr=0.5, epochs=10
    )
    np.testing.assert_allclose(model.params["mu"], expected["mu"], atol=STEP_ATOL)
    np.testing.assert_allclose(np.log(model.params["sigma"]), expected["t"], atol=STEP_ATOL)
    np.testing.assert_allclose(history.history["loss"], losses, rtol=1e-5)


def test_gaussian_regression_fit_takes_the_gradient_descent_steps(line):
    x, y = line
    model = built(keras_mle.GaussianRegression(initial_sigma=0.5), x)
    start = _variables(model)
    model.compile(optimizer=keras.optimizers.SGD(0.02))
    history = model.fit(x, y, batch_size=100, epochs=10, shuffle=False, verbose=0)
    expected, losses = numpy_gradient_descent(
        "gaussian_regression", start, x, y, lr=0.02, epochs=10
    )
    got = _variables(model)
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], atol=STEP_ATOL)
    np.testing.assert_allclose(history.history["loss"], losses, rtol=1e-5)


def test_weighted_fit_takes_the_weighted_steps(line):
    x, y = line
    w = np.random.default_rng(0).uniform(0.0, 3.0, size=len(x)).astype(np.float32)
    model = built(keras_mle.LinearRegression(), x)
    start = _variables(model)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    model.fit(x, y, sample_weight=w, batch_size=100, epochs=10, shuffle=False, verbose=0)
    expected, _ = numpy_gradient_descent("linear_regression", start, x, y, w, lr=0.5, epochs=10)
    np.testing.assert_allclose(model.params["m"], expected["m"], atol=STEP_ATOL)
    np.testing.assert_allclose(model.params["b"], expected["b"], atol=STEP_ATOL)


# ---------------------------------------------------------------- the articles' experiments


def test_linear_regression_recovers_the_line(line):
    x, y = line
    model = fit_steps(
        built(keras_mle.LinearRegression(), x), x, y, optimizer=keras.optimizers.SGD(0.7), steps=300
    )
    ols = closed_form.ols(x, y)
    np.testing.assert_allclose(model.params["m"], ols["m"], rtol=CONVERGED_RTOL)
    np.testing.assert_allclose(model.params["b"], ols["b"], rtol=CONVERGED_RTOL)
    # The ground truth m=1, b=2 lies within 3 standard errors (statsmodels) of the estimate.
    result = sm.OLS(y.astype(np.float64), sm.add_constant(x.astype(np.float64))).fit()
    assert abs(model.params["b"] - 2.0) < 3 * result.bse[0]
    assert abs(model.params["m"][0] - 1.0) < 3 * result.bse[1]


def test_gaussian_mle_recovers_the_sample_from_the_articles_start(samples):
    # The second article's start: mu=1.4, sigma=1.3; plain fit() with full-batch SGD.
    model = keras_mle.GaussianMLE(initial_mu=1.4, initial_sigma=1.3)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    history = model.fit(samples, batch_size=1000, epochs=40, shuffle=False, verbose=0)
    mle = closed_form.gaussian_mle(samples)
    np.testing.assert_allclose(model.params["mu"], mle["mu"], rtol=CONVERGED_RTOL)
    np.testing.assert_allclose(model.params["sigma"], mle["sigma"], rtol=CONVERGED_RTOL)
    np.testing.assert_allclose(model.params["mu"], np.mean(samples, dtype=np.float64), rtol=1e-5)
    np.testing.assert_allclose(model.params["sigma"], np.std(samples, dtype=np.float64), rtol=1e-5)
    # Truth mu=2, sigma=1: within 4 standard errors (1/sqrt(n) and 1/sqrt(2n)).
    assert abs(model.params["mu"] - 2.0) < 4 / np.sqrt(1000)
    assert abs(model.params["sigma"] - 1.0) < 4 / np.sqrt(2000)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["sigma"][0] > 0 and history.history["sigma"][-1] > 0


@pytest.mark.parametrize(
    "optimizer",
    [lambda: keras.optimizers.SGD(0.03), lambda: keras.optimizers.Adam(0.05, amsgrad=True)],
    ids=["sgd", "adam_amsgrad"],
)
def test_gaussian_regression_converges_to_ols(line, optimizer):
    x, y = line
    model = built(keras_mle.GaussianRegression(initial_sigma=0.3), x)
    fit_steps(model, x, y, optimizer=optimizer(), steps=1000)
    ols = closed_form.ols(x, y)
    np.testing.assert_allclose(model.params["m"], ols["m"], rtol=CONVERGED_RTOL)
    np.testing.assert_allclose(model.params["b"], ols["b"], rtol=CONVERGED_RTOL)
    # sigma's MLE is sqrt(RSS / n), not the unbiased OLS convention.
    np.testing.assert_allclose(model.params["sigma"], ols["sigma"], rtol=CONVERGED_RTOL)
    rss = np.sum((y - ols["m"][0] * x.astype(np.float64) - ols["b"]) ** 2)
    np.testing.assert_allclose(model.params["sigma"], np.sqrt(rss / len(x)), rtol=CONVERGED_RTOL)


def test_multi_feature_linear_regression_matches_ols(plane):
    x, y = plane
    model = built(keras_mle.LinearRegression(), x)
    assert model.params["m"].shape == (3,)
    fit_steps(model, x, y, optimizer=keras.optimizers.SGD(0.3), steps=200)
    result = sm.OLS(y.astype(np.float64), sm.add_constant(x.astype(np.float64))).fit()
    np.testing.assert_allclose(model.params["m"], result.params[1:], rtol=CONVERGED_RTOL)
    np.testing.assert_allclose(model.params["b"], result.params[0], rtol=CONVERGED_RTOL)


def test_multi_feature_gaussian_regression_matches_ols(plane):
    x, y = plane
    model = built(keras_mle.GaussianRegression(initial_sigma=0.5), x)
    fit_steps(model, x, y, optimizer=keras.optimizers.SGD(0.02), steps=1000)
    ols = closed_form.ols(x, y)
    for k in ("m", "b", "sigma"):
        np.testing.assert_allclose(model.params[k], ols[k], rtol=CONVERGED_RTOL)


# ---------------------------------------------------------------- sample weights


def test_integer_weights_equal_repeated_rows(line):
    x, y = line
    w = np.random.default_rng(5).integers(0, 4, size=len(x))
    w[0] = 2
    init = built(keras_mle.LinearRegression(), x).get_weights()
    weighted = built(keras_mle.LinearRegression(), x)
    repeated = built(keras_mle.LinearRegression(), x)
    for model in (weighted, repeated):
        model.set_weights(init)
        model.compile(optimizer=keras.optimizers.SGD(0.5))
    weighted.fit(x, y, sample_weight=w, batch_size=len(x), epochs=5, shuffle=False, verbose=0)
    xr, yr = np.repeat(x, w), np.repeat(y, w)
    repeated.fit(xr, yr, batch_size=len(xr), epochs=5, shuffle=False, verbose=0)
    for k in ("m", "b"):
        np.testing.assert_allclose(weighted.params[k], repeated.params[k], atol=SAME_STEPS_ATOL)


@pytest.mark.parametrize("cls", [keras_mle.LinearRegression, keras_mle.GaussianRegression])
def test_weighted_fit_converges_to_wls(line, cls):
    x, y = line
    w = np.random.default_rng(6).uniform(0.2, 3.0, size=len(x)).astype(np.float32)
    linear = cls is keras_mle.LinearRegression
    model = built(cls() if linear else cls(initial_sigma=0.3), x)
    lr = 0.7 if linear else 0.03
    fit_steps(model, x, y, w, optimizer=keras.optimizers.SGD(lr), steps=1000)
    result = sm.WLS(y.astype(np.float64), sm.add_constant(x.astype(np.float64)), weights=w).fit()
    np.testing.assert_allclose(model.params["m"], result.params[1:], rtol=CONVERGED_RTOL)
    np.testing.assert_allclose(model.params["b"], result.params[0], rtol=CONVERGED_RTOL)
    if "sigma" in model.params:
        expected = np.sqrt(result.ssr / w.sum(dtype=np.float64))
        np.testing.assert_allclose(model.params["sigma"], expected, rtol=CONVERGED_RTOL)


def test_weighted_gaussian_mle_fit_and_evaluate_use_the_weights(samples):
    # Keras drops sample_weight when y is None; a model of a sample must still apply it.
    w = (np.arange(len(samples)) % 3).astype(np.float32)
    model = keras_mle.GaussianMLE(initial_mu=1.4, initial_sigma=1.3)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    history = model.fit(
        samples,
        sample_weight=w,
        batch_size=1000,
        epochs=5,
        shuffle=False,
        verbose=0,
        validation_data=(samples, None, w),
    )
    expected, losses = numpy_gradient_descent(
        "gaussian_mle", {"mu": 1.4, "t": np.log(1.3)}, samples, None, w, lr=0.5, epochs=5
    )
    np.testing.assert_allclose(model.params["mu"], expected["mu"], atol=STEP_ATOL)
    np.testing.assert_allclose(np.log(model.params["sigma"]), expected["t"], atol=STEP_ATOL)
    np.testing.assert_allclose(history.history["loss"], losses, rtol=1e-5)
    p = model.params
    expected_nll = -np.average(scipy.stats.norm.logpdf(samples, p["mu"], p["sigma"]), weights=w)
    np.testing.assert_allclose(history.history["val_loss"][-1], expected_nll, rtol=F32_RTOL)


def test_weighted_gaussian_mle_converges_to_weighted_moments(samples):
    w = np.random.default_rng(7).integers(1, 4, size=len(samples)).astype(np.float32)
    model = fit_steps(
        keras_mle.GaussianMLE(initial_mu=1.4, initial_sigma=1.3),
        samples,
        None,
        w,
        optimizer=keras.optimizers.SGD(0.5),
        steps=60,
    )
    x = samples.astype(np.float64)
    mean = np.average(x, weights=w)
    np.testing.assert_allclose(model.params["mu"], mean, rtol=CONVERGED_RTOL)
    np.testing.assert_allclose(
        model.params["sigma"], np.sqrt(np.average((x - mean) ** 2, weights=w)), rtol=CONVERGED_RTOL
    )


# ---------------------------------------------------------------- evaluate / predict / params


def test_evaluate_is_the_mean_nll(samples):
    model = keras_mle.GaussianMLE(initial_mu=1.9, initial_sigma=1.2)
    model.compile(optimizer="sgd")
    p = model.params
    expected = -np.sum(scipy.stats.norm.logpdf(samples, p["mu"], p["sigma"])) / len(samples)
    got = model.evaluate(samples, batch_size=256, verbose=0, return_dict=True)
    np.testing.assert_allclose(got["loss"], expected, rtol=F32_RTOL)
    w = np.arange(len(samples)) % 3
    expected_w = -np.average(scipy.stats.norm.logpdf(samples, p["mu"], p["sigma"]), weights=w)
    got_w = model.evaluate(samples, sample_weight=w, verbose=0, return_dict=True)
    np.testing.assert_allclose(got_w["loss"], expected_w, rtol=F32_RTOL)


def test_evaluate_gaussian_regression_at_the_fit(line):
    x, y = line
    model = built(keras_mle.GaussianRegression(initial_sigma=0.3), x)
    fit_steps(model, x, y, optimizer=keras.optimizers.SGD(0.03), steps=1000)
    p = model.params
    mean = p["m"][0] * x.astype(np.float64) + p["b"]
    expected = -np.sum(scipy.stats.norm.logpdf(y, mean, p["sigma"])) / len(x)
    got = model.evaluate(x, y, batch_size=100, verbose=0, return_dict=True)
    np.testing.assert_allclose(got["loss"], expected, rtol=F32_RTOL)
    # At the MLE the mean NLL is 0.5 log(2 pi sigma^2) + 0.5 (closed form, float64).
    sigma = closed_form.ols(x, y)["sigma"]
    np.testing.assert_allclose(got["loss"], 0.5 * np.log(2 * np.pi * sigma**2) + 0.5, rtol=1e-5)


def test_evaluate_linear_regression_is_the_mse(line):
    x, y = line
    model = built(keras_mle.LinearRegression(), x)
    model.compile(optimizer="sgd")
    p = model.params
    expected = np.mean((y - p["m"][0] * x.astype(np.float64) - p["b"]) ** 2)
    got = model.evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_allclose(got["loss"], expected, rtol=F32_RTOL)


def test_predict_is_the_linear_predictor(line, plane):
    x, _ = line
    model = built(keras_mle.LinearRegression(b_initializer="ones"), x)
    p = model.params
    pred = model.predict(x, verbose=0)
    assert pred.shape == (len(x),)
    np.testing.assert_allclose(pred, x * p["m"][0] + p["b"], rtol=F32_RTOL)

    x3, _ = plane
    model3 = built(keras_mle.GaussianRegression(), x3)
    p3 = model3.params
    pred3 = model3.predict(x3, verbose=0)
    np.testing.assert_allclose(pred3, x3.astype(np.float64) @ p3["m"] + p3["b"], atol=1e-5)

    dist = model3.predict_distribution(x3, verbose=0)
    assert set(dist) == {"mean", "sigma"}
    np.testing.assert_array_equal(dist["mean"], pred3)
    np.testing.assert_allclose(dist["sigma"], np.full(len(x3), p3["sigma"]), rtol=0)


def test_gaussian_mle_predict_and_sample(samples):
    model = keras_mle.GaussianMLE(initial_mu=2.5, initial_sigma=0.5)
    np.testing.assert_allclose(model.predict(samples[:7], verbose=0), np.full(7, 2.5))
    draws = model.sample(100_000, seed=0)
    # Five standard errors of the mean (0.5 / sqrt(n)) and of the sd (0.5 / sqrt(2n)).
    assert abs(draws.mean() - 2.5) < 5 * 0.5 / np.sqrt(100_000)
    assert abs(draws.std() - 0.5) < 5 * 0.5 / np.sqrt(200_000)


def test_params_keys_and_positive_sigma(line, samples, plane):
    x, _ = line
    assert set(built(keras_mle.LinearRegression(), x).params) == {"m", "b"}
    regression = built(keras_mle.GaussianRegression(initial_sigma=0.25), x)
    assert set(regression.params) == {"m", "b", "sigma"}
    np.testing.assert_allclose(regression.params["sigma"], 0.25, rtol=F32_RTOL)
    gaussian = keras_mle.GaussianMLE(initial_mu=1.4, initial_sigma=1.3)
    assert set(gaussian.params) == {"mu", "sigma"}
    np.testing.assert_allclose(gaussian.params["mu"], 1.4, rtol=F32_RTOL)
    np.testing.assert_allclose(gaussian.params["sigma"], 1.3, rtol=F32_RTOL)
    assert all(isinstance(v, np.ndarray) for v in gaussian.params.values())


def test_sigma_stays_positive_under_a_huge_step(samples):
    # d NLL / d sigma = 1/sigma - mean((x - mu)^2) / sigma^3 is about 0.19 at sigma=5: a step
    # of 30 would take a plain sigma to about -0.8. On log(sigma) the step ends at
    # log(5) - 30 * 0.96, so sigma is about 1.6e-12: tiny, but positive.
    model = keras_mle.GaussianMLE(initial_mu=2.0, initial_sigma=5.0)
    model.compile(optimizer=keras.optimizers.SGD(30.0))
    model.fit(samples, batch_size=1000, epochs=1, verbose=0)
    t = np.log(5.0) - 30.0 * (1 - np.mean((samples.astype(np.float64) - 2.0) ** 2) / 25.0)
    assert 0 < model.params["sigma"] < 1e-10
    np.testing.assert_allclose(np.log(model.params["sigma"]), t, rtol=1e-5)


def test_history_keys(line, plane, samples):
    x, y = line
    model = built(keras_mle.GaussianRegression(), x)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    history = model.fit(x, y, batch_size=100, epochs=2, verbose=0, validation_data=(x, y))
    assert set(history.history) == {"loss", "m", "b", "sigma", "val_loss"}
    assert len(history.history["loss"]) == 2

    x3, y3 = plane
    model3 = built(keras_mle.LinearRegression(), x3)
    model3.compile(optimizer=keras.optimizers.SGD(0.01))
    history3 = model3.fit(x3, y3, batch_size=200, epochs=1, verbose=0)
    assert set(history3.history) == {"loss", "m_0", "m_1", "m_2", "b"}
    np.testing.assert_allclose(
        [history3.history[f"m_{i}"][-1] for i in range(3)], model3.params["m"], rtol=0
    )

    gaussian = keras_mle.GaussianMLE()
    gaussian.compile(optimizer=keras.optimizers.SGD(0.01))
    history_g = gaussian.fit(samples, batch_size=1000, epochs=1, verbose=0)
    assert set(history_g.history) == {"loss", "mu", "sigma"}


@pytest.mark.parametrize("y_shape", ["(N,)", "(N, 1)"])
def test_column_x_and_column_y_fit_like_one_feature(line, y_shape):
    x, y = line
    reference = built(keras_mle.LinearRegression(), x)
    init = reference.get_weights()
    column = built(keras_mle.LinearRegression(), x[:, None])
    column.set_weights(init)
    for model in (reference, column):
        model.compile(optimizer=keras.optimizers.SGD(0.5))
    expected = reference.fit(x, y, batch_size=100, epochs=5, shuffle=False, verbose=0)
    targets = y if y_shape == "(N,)" else y[:, None]
    history = column.fit(x[:, None], targets, batch_size=100, epochs=5, shuffle=False, verbose=0)
    for k in ("m", "b"):
        np.testing.assert_allclose(column.params[k], reference.params[k], atol=SAME_STEPS_ATOL)
    # A (B, B) broadcast would show in the loss first: it would average over all pairs. The
    # (N, 1) path sums through a matvec: float32 rounding of about 1e-6 relative.
    np.testing.assert_allclose(history.history["loss"], expected.history["loss"], rtol=1e-5)


def test_column_targets_for_gaussian_regression(line):
    x, y = line
    a = built(keras_mle.GaussianRegression(initial_sigma=0.5), x)
    b = built(keras_mle.GaussianRegression(initial_sigma=0.5), x)
    b.set_weights(a.get_weights())
    for model, targets in ((a, y), (b, y[:, None])):
        model.compile(optimizer=keras.optimizers.SGD(0.02))
        model.fit(x, targets, batch_size=100, epochs=3, shuffle=False, verbose=0)
    for k in ("m", "b", "sigma"):
        np.testing.assert_allclose(a.params[k], b.params[k], atol=SAME_STEPS_ATOL)


def test_get_weights_set_weights_copy_an_initialisation(line):
    x, y = line
    first = built(keras_mle.GaussianRegression(initial_sigma=0.7), x)
    second = built(keras_mle.GaussianRegression(initial_sigma=0.7), x)
    assert not np.array_equal(first.params["m"], second.params["m"])
    second.set_weights(first.get_weights())
    for k in first.params:
        np.testing.assert_array_equal(first.params[k], second.params[k])
    for model in (first, second):
        model.compile(optimizer=keras.optimizers.SGD(0.02))
        model.fit(x, y, batch_size=100, epochs=3, shuffle=False, verbose=0)
    for k in first.params:
        np.testing.assert_array_equal(first.params[k], second.params[k])


def test_initializers_are_configurable(line):
    x, _ = line
    model = built(
        keras_mle.LinearRegression(
            m_initializer=keras.initializers.Constant(0.25), b_initializer="ones"
        ),
        x,
    )
    np.testing.assert_array_equal(model.params["m"], [0.25])
    np.testing.assert_array_equal(model.params["b"], 1.0)


@pytest.mark.parametrize("n, batch_size", [(100, 100), (100, 32), (37, 10)])
def test_epoch_dataset_takes_the_same_steps_as_fit(n, batch_size):
    x, y = data.noisy_line(n=n, seed=1)
    w = np.random.default_rng(1).uniform(0.5, 2.0, size=n).astype(np.float32)
    init = built(keras_mle.GaussianRegression(initial_sigma=0.5), x).get_weights()
    plain = built(keras_mle.GaussianRegression(initial_sigma=0.5), x)
    fast = built(keras_mle.GaussianRegression(initial_sigma=0.5), x)
    for model in (plain, fast):
        model.set_weights(init)
        model.compile(optimizer=keras.optimizers.SGD(0.02))
    plain.fit(x, y, sample_weight=w, batch_size=batch_size, epochs=4, shuffle=False, verbose=0)
    history = fast.fit(
        data.epoch_dataset(x, y, w, batch_size=batch_size),
        steps_per_epoch=1,
        epochs=4,
        shuffle=False,
        verbose=0,
    )
    assert int(fast.optimizer.iterations) == int(plain.optimizer.iterations)
    for k in ("m", "b", "sigma"):
        np.testing.assert_allclose(fast.params[k], plain.params[k], atol=SAME_STEPS_ATOL)
    assert set(history.history) == {"loss", "m", "b", "sigma"}


# ---------------------------------------------------------------- a user-written model


def test_poisson_example_matches_statsmodels_glm(tmp_path):
    example = load_example("poisson_regression")
    results = example.main(str(tmp_path), epochs=40, verbose=0)
    x, y = results["x"].astype(np.float64), results["y"].astype(np.float64)
    glm = sm.GLM(y, sm.add_constant(x), family=sm.families.Poisson()).fit(tol=1e-14)
    expected = {"b": glm.params[0], "m": glm.params[1:]}
    # Float32 parameters of order 1 hold about 7 digits; converged fits sit within 1e-7.
    for key in ("fit", "reloaded", "loop"):
        params = results[key].params
        np.testing.assert_allclose(params["m"], expected["m"], atol=2e-6, err_msg=key)
        np.testing.assert_allclose(params["b"], expected["b"], atol=2e-6, err_msg=key)
    assert type(results["reloaded"]) is example.PoissonRegression

    # Its evaluate() is the mean Poisson NLL at the fit, as scipy computes it.
    model = results["fit"]
    rate = np.exp(x @ model.params["m"] + model.params["b"])
    expected_nll = -np.mean(scipy.stats.poisson.logpmf(y, rate))
    got = model.evaluate(results["x"], results["y"], verbose=0, return_dict=True)
    np.testing.assert_allclose(got["loss"], expected_nll, rtol=F32_RTOL)
    np.testing.assert_allclose(model.predict(results["x"], verbose=0), rate, rtol=1e-5)
