"""The fit statistics, and the closed forms they measure distances to.

Expected numbers are worked out independently: log-likelihoods with `scipy.stats.norm`, gradients
by hand in float64 NumPy, moments with `np.mean` / `np.std`.
"""

import helpers
import keras
import numpy as np
import pytest
from scipy import stats

import keras_mle
from keras_mle import statistics

#: float32 statistics against float64 references (relative).
STATISTIC_RTOL = 1e-5


def test_fit_statistics_of_a_gaussian_sample_match_scipy_and_the_analytic_gradient():
    samples = keras_mle.data.gaussian_sample(mu=2.0, sigma=1.0, n=500, seed=3)
    model = keras_mle.GaussianMLE(initial_mu=1.7, initial_sigma=0.8)
    x = samples.astype(np.float64)
    mle = {"mu": x.mean(), "sigma": x.std()}
    result = statistics.fit_statistics(model, samples, closed_form=mle)

    mu, sigma = 1.7, 0.8
    expected_ll = stats.norm.logpdf(x, mu, sigma).sum()
    # Gradient of the mean NLL w.r.t. the variables (mu, log sigma).
    d_mu = -(x.mean() - mu) / sigma**2
    d_log_sigma = 1.0 - np.mean((x - mu) ** 2) / sigma**2
    assert set(result) == {"log_likelihood", "gradient_norm", "distance_to_closed_form"}
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
    result = statistics.fit_statistics(model, x, y, weights)

    w, x64, y64 = weights.astype(np.float64), x.astype(np.float64), y.astype(np.float64)
    residual = 0.5 * x64 - y64  # b = 0
    mse = np.sum(w * residual**2) / w.sum()
    gradient = 2 * np.array([np.sum(w * residual * x64), np.sum(w * residual)]) / w.sum()
    assert set(result) == {"mse", "gradient_norm"}
    np.testing.assert_allclose(result["mse"], mse, rtol=STATISTIC_RTOL)
    np.testing.assert_allclose(
        result["gradient_norm"], np.linalg.norm(gradient), rtol=STATISTIC_RTOL
    )


def test_the_distance_runs_over_every_component_of_a_partial_reference():
    x, y = helpers.two_feature_data()
    model = keras_mle.GaussianRegression(m_initializer=keras.initializers.Constant(0.25))
    model(x[:2])
    result = statistics.fit_statistics(model, x, y, closed_form={"m": [1.25, 0.5]})
    np.testing.assert_allclose(
        result["distance_to_closed_form"], np.hypot(1.0, 0.25), rtol=STATISTIC_RTOL
    )


def test_the_statistic_follows_the_sample_loss_kind():
    class SquaredErrorSample(keras_mle.GaussianMLE):
        sample_loss_kind = "squared_error"

        def sample_loss(self, params, x, y):
            return (x - params["mu"]) ** 2

    samples = keras_mle.data.gaussian_sample(n=50, seed=6)
    model = SquaredErrorSample(initial_mu=1.0)
    result = statistics.fit_statistics(model, samples)
    expected = np.mean((samples.astype(np.float64) - 1.0) ** 2)
    assert "log_likelihood" not in result
    np.testing.assert_allclose(result["mse"], expected, rtol=STATISTIC_RTOL)


def test_fit_statistics_refuse_a_model_that_is_not_built_or_a_foreign_reference():
    x, y = helpers.two_feature_data()
    with pytest.raises(ValueError, match="not built"):
        statistics.fit_statistics(keras_mle.LinearRegression(), x, y)
    model = keras_mle.LinearRegression()
    model(x[:2])
    with pytest.raises(ValueError, match=r"closed_form\['m'\]"):
        statistics.fit_statistics(model, x, y, closed_form={"m": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match=r"closed_form\['slope'\]"):
        statistics.fit_statistics(model, x, y, closed_form={"slope": 1.0})


def test_checked_data_and_flat_parameters():
    x, y = helpers.two_feature_data()
    model = keras_mle.LinearRegression(m_initializer=keras.initializers.Constant(0.5))
    model(x[:2])
    checked = statistics.checked_data(model, (x, y))
    assert len(checked) == 3 and checked[2] is None
    np.testing.assert_array_equal(checked[1], y)
    with pytest.raises(ValueError, match="data must be x"):
        statistics.checked_data(model, (x, y, None, None))
    with pytest.raises(ValueError, match="y is required"):
        statistics.checked_data(model, x)
    np.testing.assert_array_equal(statistics.flat_parameters(model), [0.5, 0.5, 0.0])
    with pytest.raises(ValueError, match="not built"):
        statistics.flat_parameters(keras_mle.LinearRegression())
