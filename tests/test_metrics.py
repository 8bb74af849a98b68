"""Calibration metrics against scipy and numerical integration; the calibration callback."""

import keras
import numpy as np
import pytest
import scipy.integrate
import scipy.stats
from helpers import read_events

from keras_mle import calibration, metrics
from keras_mle.models.gaussian_network import GaussianNetwork

# Float32 metric variables accumulating values of order 1 over 50 samples.
RTOL_F32 = 1e-5


@pytest.fixture
def predictions():
    rng = np.random.default_rng(0)
    y = rng.normal(1.0, 2.0, size=50)
    mu = rng.normal(1.0, 1.0, size=50)
    sigma = rng.uniform(0.3, 3.0, size=50)
    return y, mu, sigma


def test_crps_closed_form_matches_numerical_integration(predictions):
    y, mu, sigma = predictions
    closed = metrics.gaussian_crps(y, mu, sigma)
    for i in range(0, 50, 7):
        cdf = scipy.stats.norm(mu[i], sigma[i]).cdf
        # CRPS = integral of (F(t) - 1[t >= y])^2, split at y where the step is.
        below = scipy.integrate.quad(lambda t, cdf=cdf: cdf(t) ** 2, -np.inf, y[i])[0]
        above = scipy.integrate.quad(lambda t, cdf=cdf: (1 - cdf(t)) ** 2, y[i], np.inf)[0]
        # quad's default tolerance is 1.5e-8 relative.
        np.testing.assert_allclose(closed[i], below + above, rtol=1e-7)


def test_crps_of_a_point_forecast_is_the_absolute_error():
    np.testing.assert_allclose(metrics.gaussian_crps(2.5, 1.0, 1e-9), 1.5, rtol=1e-8)


def test_pit_is_the_normal_cdf(predictions):
    y, mu, sigma = predictions
    np.testing.assert_allclose(
        metrics.pit(y, mu, sigma), scipy.stats.norm.cdf(y, mu, sigma), rtol=1e-12
    )


@pytest.mark.parametrize("scale", ["sigma", "softplus"])
def test_metrics_against_scipy(predictions, scale):
    y, mu, sigma = predictions
    w = np.random.default_rng(1).uniform(0.5, 2.0, size=50)
    # The softplus layout holds raw = softplus^-1(sigma - floor) = log(expm1(sigma - floor)).
    column = sigma if scale == "sigma" else np.log(np.expm1(sigma - 1e-6))
    y_pred = np.stack([mu, column], axis=1)
    z = scipy.stats.norm.ppf(0.95)
    crps = [
        scipy.integrate.quad(
            lambda t, i=i: scipy.stats.norm.cdf(t, mu[i], sigma[i]) ** 2, -50, y[i]
        )[0]
        + scipy.integrate.quad(
            lambda t, i=i: scipy.stats.norm.sf(t, mu[i], sigma[i]) ** 2, y[i], 50
        )[0]
        for i in range(50)
    ]
    expected = {
        metrics.GaussianLogLikelihood: scipy.stats.norm.logpdf(y, mu, sigma),
        metrics.IntervalCoverage: (np.abs(y - mu) <= z * sigma).astype(float),
        metrics.GaussianCRPS: np.asarray(crps),
    }
    for cls, values in expected.items():
        kwargs = {"level": 0.9} if cls is metrics.IntervalCoverage else {}
        metric = cls(scale=scale, **kwargs)
        metric.update_state(y[:, None], y_pred, sample_weight=w)
        np.testing.assert_allclose(
            float(metric.result()), np.average(values, weights=w), rtol=RTOL_F32, err_msg=cls
        )
        restored = cls.from_config(metric.get_config())
        assert restored.get_config() == metric.get_config()


def test_metric_names_and_bad_arguments():
    assert metrics.IntervalCoverage(0.95).name == "coverage_95"
    assert metrics.IntervalCoverage(0.995).name == "coverage_99_5"
    with pytest.raises(ValueError, match="level must be in"):
        metrics.IntervalCoverage(1.5)
    with pytest.raises(ValueError, match="scale must be one of"):
        metrics.GaussianCRPS(scale="log")
    with pytest.raises(ValueError, match="last axis of size 2"):
        metrics.GaussianCRPS().update_state(np.zeros(3), np.ones((3, 1)))
    with pytest.raises(ValueError, match="must be a standard deviation > 0"):
        metrics.GaussianCRPS().update_state(np.zeros(2), np.array([[0.0, 1.0], [0.0, -1.0]]))


def test_metrics_in_a_plain_keras_model():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 1)).astype(np.float32)
    y = (x[:, 0] + 0.5 * rng.normal(size=64)).astype(np.float32)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(2)])
    model.compile(
        loss=keras.losses.MeanSquaredError(),  # (any loss: the metrics are what is checked)
        metrics=[
            metrics.IntervalCoverage(scale="softplus"),
            metrics.GaussianCRPS(scale="softplus"),
        ],
    )
    result = model.evaluate(x, y[:, None], verbose=0, return_dict=True)
    raw = model.predict(x, verbose=0).astype(np.float64)
    mu, sigma = raw[:, 0], np.logaddexp(0.0, raw[:, 1]) + 1e-6
    z = (y - mu) / sigma
    crps = sigma * (
        z * (2 * scipy.stats.norm.cdf(z) - 1) + 2 * scipy.stats.norm.pdf(z) - 1 / np.sqrt(np.pi)
    )
    np.testing.assert_allclose(result["crps"], crps.mean(), rtol=RTOL_F32)
    np.testing.assert_allclose(
        result["coverage_95"], np.mean(np.abs(z) <= scipy.stats.norm.ppf(0.975)), rtol=RTOL_F32
    )


def test_calibration_callback_writes_pictures_and_scalars(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.uniform(size=(200, 1)).astype(np.float32)
    y = (x[:, 0] + (0.1 + 0.5 * x[:, 0]) * rng.normal(size=200)).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = GaussianNetwork(keras.Sequential([keras.layers.Dense(8, activation="relu")]))
    model.compile(optimizer="adam")
    callback = calibration.CalibrationTensorBoard(tmp_path, (x, y), every=2)
    model.fit(x, y, epochs=3, verbose=0, callbacks=[callback])
    events = read_events(tmp_path / "calibration")
    # Epochs 0 and 2 (every 2; the last is 2).
    for tag in (calibration.PIT_TAG, calibration.BAND_TAG):
        steps, images, _ = events[tag]
        assert list(steps) == [0, 2]
        assert images[-1].shape == (320, 480, 4)
    steps, coverage, _ = events[calibration.COVERAGE_TAG]
    out = model.predict_distribution(x)
    inside = np.abs(y - out["mean"]) <= scipy.stats.norm.ppf(0.975) * out["sigma"]
    np.testing.assert_allclose(coverage[-1], inside.mean(), rtol=1e-6)


def test_calibration_callback_refuses_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="data must be a pair"):
        calibration.CalibrationTensorBoard(tmp_path, np.zeros(3))
    with pytest.raises(ValueError, match="every must be"):
        calibration.CalibrationTensorBoard(tmp_path, (np.zeros(3), np.zeros(3)), every=0)
