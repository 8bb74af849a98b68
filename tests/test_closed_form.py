"""Closed-form estimates against NumPy, statsmodels and scipy."""

import helpers
import numpy as np
import pytest
import scipy.stats
import statsmodels.api as sm

from keras_mle import closed_form, data

# Two float64 least-squares solvers (QR of the centred design vs. statsmodels' pinv) on a
# well-conditioned design agree to a few hundred ulps.
RTOL = 1e-10


@pytest.fixture
def plane():
    """Three features: `y = x @ [0.5, -2, 3] + 1.5` plus N(0, 0.3^2) noise, 200 rows, float32."""
    return helpers.plane(200, seed=11, slopes=(0.5, -2.0, 3.0), intercept=1.5)


def test_ols_matches_lstsq(line):
    x, y = line
    design = np.column_stack([x, np.ones_like(x)]).astype(np.float64)
    (m, b), rss, *_ = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)
    fit = closed_form.ols(x, y)
    assert fit["m"].shape == (1,)
    np.testing.assert_allclose(fit["m"], [m], rtol=RTOL)
    np.testing.assert_allclose(fit["b"], b, rtol=RTOL)
    np.testing.assert_allclose(fit["rss"], rss[0], rtol=RTOL)
    np.testing.assert_allclose(fit["sigma"], np.sqrt(rss[0] / len(x)), rtol=RTOL)


@pytest.mark.parametrize("dataset", ["line", "plane"])
def test_ols_matches_statsmodels(dataset, request):
    x, y = request.getfixturevalue(dataset)
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    result = sm.OLS(y64, sm.add_constant(x64)).fit()
    fit = closed_form.ols(x, y)
    np.testing.assert_allclose(fit["b"], result.params[0], rtol=RTOL)
    np.testing.assert_allclose(fit["m"], result.params[1:], rtol=RTOL)
    np.testing.assert_allclose(fit["rss"], result.ssr, rtol=RTOL)
    # statsmodels' scale is RSS / (n - k - 1); the MLE divides by n.
    np.testing.assert_allclose(fit["sigma_unbiased"], np.sqrt(result.scale), rtol=RTOL)
    np.testing.assert_allclose(fit["sigma"], np.sqrt(result.ssr / result.nobs), rtol=RTOL)


@pytest.mark.parametrize("dataset", ["line", "plane"])
def test_weighted_ols_matches_statsmodels_wls(dataset, request):
    x, y = request.getfixturevalue(dataset)
    w = np.random.default_rng(2).uniform(0.1, 3.0, size=len(x))
    result = sm.WLS(y.astype(np.float64), sm.add_constant(x.astype(np.float64)), weights=w).fit()
    fit = closed_form.ols(x, y, sample_weight=w)
    np.testing.assert_allclose(fit["b"], result.params[0], rtol=RTOL)
    np.testing.assert_allclose(fit["m"], result.params[1:], rtol=RTOL)
    # WLS' ssr is the weighted sum of squares; the MLE sigma divides it by the total weight.
    np.testing.assert_allclose(fit["rss"], result.ssr, rtol=RTOL)
    np.testing.assert_allclose(fit["sigma"], np.sqrt(result.ssr / w.sum()), rtol=RTOL)


def test_integer_weights_equal_repeated_rows(plane):
    x, y = plane
    w = np.random.default_rng(3).integers(0, 4, size=len(x))
    w[0] = 1
    weighted = closed_form.ols(x, y, sample_weight=w)
    repeated = closed_form.ols(np.repeat(x, w, axis=0), np.repeat(y, w))
    for key in ("m", "b", "sigma", "rss"):
        np.testing.assert_allclose(weighted[key], repeated[key], rtol=RTOL)


def test_ols_is_exact_on_a_noise_free_line():
    x = np.linspace(0.0, 1.0, 11)
    fit = closed_form.ols(x, 3.0 * x - 1.0)
    np.testing.assert_allclose(fit["m"], [3.0], rtol=1e-14)
    np.testing.assert_allclose(fit["b"], -1.0, rtol=1e-14)
    assert fit["sigma"] < 1e-14


def test_ols_accepts_column_targets(line):
    x, y = line
    np.testing.assert_array_equal(closed_form.ols(x, y)["m"], closed_form.ols(x, y[:, None])["m"])


def test_gaussian_mle_matches_numpy_and_scipy():
    samples = data.gaussian_sample(mu=2.0, sigma=1.0, n=1000, seed=0)
    fit = closed_form.gaussian_mle(samples)
    x = samples.astype(np.float64)
    # Sums of 1000 float64 values in different orders: rounding of order 1e-13 relative.
    np.testing.assert_allclose(fit["mu"], np.mean(x), rtol=1e-12)
    np.testing.assert_allclose(fit["sigma"], np.std(x), rtol=1e-12)
    loc, scale = scipy.stats.norm.fit(x)
    np.testing.assert_allclose([fit["mu"], fit["sigma"]], [loc, scale], rtol=1e-12)
    assert fit["mu"].dtype == fit["sigma"].dtype == np.float64


def test_weighted_gaussian_mle_matches_numpy_average():
    samples = data.gaussian_sample(n=300, seed=4).astype(np.float64)
    w = np.random.default_rng(4).integers(1, 5, size=300)
    fit = closed_form.gaussian_mle(samples, sample_weight=w)
    mean = np.average(samples, weights=w)
    np.testing.assert_allclose(fit["mu"], mean, rtol=1e-12)
    np.testing.assert_allclose(
        fit["sigma"], np.sqrt(np.average((samples - mean) ** 2, weights=w)), rtol=1e-12
    )
    repeated = np.repeat(samples, w)
    np.testing.assert_allclose(fit["sigma"], np.std(repeated), rtol=1e-12)
