"""float64 end to end, and badly scaled data through the documented workflow (adapt, then fit).

Results are checked against float64 closed forms at ~1e-10 or tighter: float32 rounding anywhere
on the way (data cast to float32 on their way to Keras, a float32 constant, a float32 metric)
shows up as errors of 1e-8 or more. `fit_steps(..., path="arrays")` trains through plain
`fit()` on NumPy arrays, the path on which such a cast would happen.
"""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from helpers import fit_steps

import keras_mle


@pytest.fixture(scope="module")
def offset_sample():
    """Float32 cannot hold these: the spacing of float32 numbers near 1000 is 6e-5."""
    return 1000.0 + np.random.default_rng(0).normal(0.0, 1.0, 500)


# ---------------------------------------------------------------------------- float64
@pytest.mark.slow  # a fresh process that imports TensorFlow: 8-15 s
def test_set_floatx_before_models_in_a_fresh_process():
    """The global switch must come before any layer exists, so it runs in its own process."""
    script = textwrap.dedent(
        """
        import json, os
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        import keras
        keras.config.set_floatx("float64")
        import numpy as np, keras_mle
        x, y = keras_mle.data.noisy_line(n=100, seed=0)
        x = x.astype(np.float64) + 1e-9 * np.arange(100)  # digits float32 would drop
        model = keras_mle.LinearRegression(m_initializer="zeros").adapt(x, y)
        model.compile(optimizer=keras.optimizers.SGD(0.5))
        history = model.fit(x, y, epochs=2, batch_size=100, shuffle=False, verbose=0)
        reference = keras_mle.closed_form.ols(x, y)
        print(json.dumps({
            "dtypes": sorted({v.dtype for v in model.weights} | {model.loss_tracker.dtype}),
            "error": max(float(np.max(abs(model.params[k] - reference[k]))) for k in "mb"),
            "loss": history.history["loss"][-1],
            "mse": float(reference["rss"]) / 100,
        }))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["dtypes"] == ["float64"]
    assert result["error"] < 1e-12
    assert result["loss"] == pytest.approx(result["mse"], rel=1e-12)


def test_per_model_float64_keeps_float64_data(offset_sample):
    assert keras.config.floatx() == "float32"
    model = keras_mle.GaussianMLE(initial_mu=1000.0, initial_sigma=1.0, dtype="float64")
    fit_steps(model, offset_sample, optimizer=keras.optimizers.SGD(0.5), steps=60, path="arrays")
    reference = keras_mle.closed_form.gaussian_mle(offset_sample)
    assert model.params["mu"].dtype == np.float64
    # float32 data would move the mean by ~1e-6 (1e-9 relative).
    assert model.params["mu"] == pytest.approx(reference["mu"], rel=1e-13)
    assert model.params["sigma"] == pytest.approx(reference["sigma"], rel=1e-11)
    loglik = -keras_mle.losses.gaussian_nll(offset_sample, reference["mu"], reference["sigma"])
    mean_nll = -float(np.mean(loglik))
    assert model.evaluate(offset_sample, batch_size=500, verbose=0) == pytest.approx(
        mean_nll, rel=1e-13
    )
    prediction = model.predict(offset_sample[:3], verbose=0)
    assert prediction.dtype == np.float64 and prediction[0] == model.params["mu"]
    assert keras.config.floatx() == "float32"  # no global switch: the data came as float64


def test_per_model_float64_custom_loop_matches_fit(offset_sample):
    model = keras_mle.GaussianMLE(initial_mu=1000.0, initial_sigma=1.0, dtype="float64")
    keras_mle.loops.train(
        model,
        offset_sample,
        epochs=60,
        batch_size=500,
        optimizer=keras.optimizers.SGD(0.5),
        mode="function",
        verbose=0,
    )
    assert model.params["mu"] == pytest.approx(np.mean(offset_sample), rel=1e-13)


def test_integer_data_reach_the_model_as_float64():
    """Integers near 2**30 are exact in float64 but 128 apart in float32: no float32 on the way."""
    rng = np.random.default_rng(6)
    x = 2**30 + np.arange(100, dtype=np.int64)
    y = 3 * (x - 2**30) + rng.integers(-5, 6, size=100)
    model = keras_mle.LinearRegression(dtype="float64").adapt(x, y)
    checked, targets, _ = model.check_data(x, y)
    assert checked.dtype == targets.dtype == np.float64
    np.testing.assert_array_equal(checked - 2.0**30, np.arange(100.0))
    # Adapted, the squared error's Hessian is 2 I: one full-batch SGD(0.5) step is the OLS fit,
    # up to float64 rounding (1e-12 leaves room for the intercept's extrapolation to x = 0).
    fit_steps(model, x, y, optimizer=keras.optimizers.SGD(0.5), steps=1, path="arrays")
    reference = keras_mle.closed_form.ols(x, y)
    np.testing.assert_allclose(model.params["m"], reference["m"], rtol=1e-12)
    assert model.params["b"] == pytest.approx(reference["b"], rel=1e-12)
    # Predictions of 0..300 are differences of terms near 3.2e9 (float64 spacing 5e-7).
    fitted = x * reference["m"][0] + reference["b"]
    np.testing.assert_allclose(model.predict(x, verbose=0), fitted, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------- badly scaled data
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_large_offset_sample(dtype):
    """A sample centred at 1e6 with spread 0.01: float32 spacing there is 0.06, wider than that."""
    samples = 1e6 + np.random.default_rng(1).normal(0.0, 0.01, 1000)
    model = keras_mle.GaussianMLE(initial_mu=1.4, initial_sigma=1.3, dtype=dtype).adapt(samples)
    fit_steps(model, samples, optimizer=keras.optimizers.SGD(0.5), steps=40, path="arrays")
    mean, std = np.mean(samples), np.std(samples)
    tolerance = {"float64": 1e-11, "float32": 1e-6}[dtype]  # relative to the spread
    assert abs(model.params["mu"] - mean) < tolerance * std
    assert model.params["sigma"] == pytest.approx(std, rel=tolerance)
    result = keras_mle.inference(model, samples)
    assert result.converged
    assert result.stderr["mu"] == pytest.approx(std / np.sqrt(1000), rel=max(tolerance, 1e-9))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_collinear_features_in_the_hundreds(dtype):
    """Condition number ~1e4 even after standardisation: whitening makes it one SGD step."""
    rng = np.random.default_rng(2)
    x1 = 300.0 + 50.0 * rng.uniform(size=200)
    x2 = x1 + 0.01 * rng.normal(size=200)
    x = np.column_stack([x1, x2])
    y = 5.0 + 0.5 * x1 - 0.25 * x2 + rng.normal(0.0, 0.1, 200)
    model = keras_mle.LinearRegression(dtype=dtype).adapt(x, y)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    model.fit(x, y, epochs=2, batch_size=200, shuffle=False, verbose=0)
    reference = keras_mle.closed_form.ols(x, y)
    # float32: the working-space slopes carry ~6e-8 relative rounding, amplified by the
    # collinearity (the two slopes are ~1e4 times less determined than their sum).
    rtol = {"float64": 1e-9, "float32": 1e-2}[dtype]
    np.testing.assert_allclose(model.params["m"], reference["m"], rtol=rtol)
    assert model.params["b"] == pytest.approx(reference["b"], rel=rtol)
    prediction = model.predict(x, verbose=0)
    fitted = x @ reference["m"] + reference["b"]
    np.testing.assert_allclose(prediction, fitted, rtol={"float64": 1e-12, "float32": 1e-6}[dtype])


def test_adapted_model_reports_user_units():
    x, y = keras_mle.data.noisy_line(n=100, seed=4)
    x = 100.0 * x.astype(np.float64) + 500.0
    model = keras_mle.LinearRegression(dtype="float64").adapt(x, y)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    history = model.fit(x, y, epochs=2, batch_size=100, shuffle=False, verbose=0)
    reference = keras_mle.closed_form.ols(x, y)
    mse = reference["rss"] / 100
    assert history.history["loss"][-1] == pytest.approx(mse, rel=1e-12)
    assert history.history["m"][-1] == pytest.approx(reference["m"][0], rel=1e-12)
    assert history.history["b"][-1] == pytest.approx(reference["b"], rel=1e-12)
    assert model.evaluate(x, y, verbose=0) == pytest.approx(mse, rel=1e-12)
    np.testing.assert_allclose(model(x[:5]), x[:5] * reference["m"][0] + reference["b"], rtol=1e-13)


def test_gaussian_regression_loss_in_user_units():
    x, y = keras_mle.data.noisy_line(n=100, seed=5)
    x, y = x.astype(np.float64), 1e4 * y.astype(np.float64)
    model = keras_mle.GaussianRegression(dtype="float64").adapt(x, y)
    reference = keras_mle.closed_form.ols(x, y)
    fit_steps(model, x, y, optimizer=keras.optimizers.SGD(0.2), steps=100, path="arrays")
    nll = keras_mle.losses.gaussian_nll(
        y, x * reference["m"][0] + reference["b"], reference["sigma"]
    )
    assert model.params["sigma"] == pytest.approx(reference["sigma"], rel=1e-12)
    assert model.evaluate(x, y, verbose=0) == pytest.approx(float(np.mean(nll)), rel=1e-12)
    sigma = model.predict_distribution(x[:2], verbose=0)["sigma"]
    np.testing.assert_allclose(sigma, reference["sigma"], rtol=1e-12)


# ---------------------------------------------------------------------------- adapt itself
def test_adapt_is_saved_with_the_model(tmp_path):
    x = np.random.default_rng(3).normal(500.0, 30.0, (60, 2))
    y = x @ [1.5, -0.5] + 3.0 + np.random.default_rng(4).normal(0.0, 1.0, 60)
    model = keras_mle.LinearRegression(dtype="float64").adapt(x, y)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    model.fit(x, y, epochs=2, batch_size=60, verbose=0)
    path = tmp_path / "adapted.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.adaptation.get_config() == model.adaptation.get_config()
    for name, value in model.params.items():
        np.testing.assert_array_equal(loaded.params[name], value)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    reference = keras_mle.closed_form.ols(x, y)
    np.testing.assert_allclose(loaded.params["m"], reference["m"], rtol=1e-12)
    assert loaded.dtype == "float64"


def test_adapt_reset_reads_initial_values_in_adapted_units():
    samples = 1e6 + np.arange(10.0)
    model = keras_mle.GaussianMLE(initial_mu=0.0, initial_sigma=1.0, dtype="float64").adapt(samples)
    assert model.params["mu"] == pytest.approx(np.mean(samples), rel=1e-15)
    assert model.params["sigma"] == pytest.approx(np.std(samples), rel=1e-15)
    kept = keras_mle.GaussianMLE(initial_mu=3.0, initial_sigma=2.0, dtype="float64")
    kept.adapt(samples, reset=False)
    assert kept.params["mu"] == pytest.approx(3.0, rel=1e-12)
    assert kept.params["sigma"] == pytest.approx(2.0, rel=1e-12)


def test_adapt_rejects_what_it_cannot_whiten():
    x = np.column_stack([np.arange(10.0), np.ones(10)])
    with pytest.raises(ValueError, match="constant or linear combinations"):
        keras_mle.LinearRegression().adapt(x, np.arange(10.0))
    collinear = np.column_stack([np.arange(10.0), 2.0 * np.arange(10.0) + 1.0])
    with pytest.raises(ValueError, match="column"):
        keras_mle.LinearRegression().adapt(collinear, np.arange(10.0))
    with pytest.raises(ValueError, match="constant"):
        keras_mle.GaussianMLE().adapt(np.full(5, 3.0))
    with pytest.raises(ValueError, match="NaN"):
        keras_mle.GaussianMLE().adapt(np.array([1.0, np.nan, 2.0]))

    class NoRoles(keras_mle.MaximumLikelihoodModel):
        takes_targets = False

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.add_parameter("rate", initializer=1.0, positive=True)
            self.built = True

    with pytest.raises(NotImplementedError, match="parameter_roles"):
        NoRoles().adapt(np.arange(5.0))
