"""Profile-likelihood intervals (`conf_int(method="profile")`) against closed-form profiles.

The references are independent: the closed-form profile log-likelihoods of the Gaussian sample
and of least squares, solved with `scipy.optimize.brentq` (or in closed form). The package finds
its bounds by Newton iterations on the model's float64 derivatives, to ~1e-10 in the signed root
deviance, so the bounds agree to ~1e-10 relative; `RTOL = 1e-7` leaves room for brentq's
tolerance and is far below the Wald-profile differences tested (~1e-2).
"""

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import optimize, stats

import keras_mle

RTOL = 1e-7
CUTOFF = stats.chi2.ppf(0.95, 1)


@pytest.fixture(scope="module")
def small_sample():
    samples = np.array([2.1, 3.9, 1.2, 2.8, 5.5, 2.2, 3.1, 0.7, 2.6, 4.0])
    model = keras_mle.GaussianMLE(dtype="float64")
    model.set_params(keras_mle.closed_form.gaussian_mle(samples))
    return samples, model


def test_gaussian_sigma_profile_interval_is_asymmetric_and_matches_scipy(small_sample):
    samples, model = small_sample
    n, sigma_hat = len(samples), samples.std()
    result = keras_mle.inference(model, samples)

    def deviance(sigma):  # 2 (llf_max - llf_profile(sigma)); mu's profile optimum is the mean
        return 2 * n * (np.log(sigma / sigma_hat) + 0.5 * sigma_hat**2 / sigma**2 - 0.5)

    lower = optimize.brentq(lambda s: deviance(s) - CUTOFF, 0.1 * sigma_hat, sigma_hat, xtol=1e-14)
    upper = optimize.brentq(lambda s: deviance(s) - CUTOFF, sigma_hat, 10 * sigma_hat, xtol=1e-14)
    profile = result.conf_int(method="profile")
    np.testing.assert_allclose(profile["sigma"], [lower, upper], rtol=RTOL)
    wald = result.conf_int(method="wald")["sigma"]
    # n = 10: Wald is symmetric about sigma_hat, the profile reaches much further up.
    assert upper - sigma_hat > 1.5 * (sigma_hat - lower)
    assert upper > wald[1] + 0.2 * sigma_hat and lower > wald[0]

    def mu_deviance(mu):
        return n * np.log(1 + (samples.mean() - mu) ** 2 / sigma_hat**2)

    half = sigma_hat * np.sqrt(np.expm1(CUTOFF / n))  # mu_deviance = CUTOFF in closed form
    np.testing.assert_allclose(profile["mu"], samples.mean() + np.array([-half, half]), rtol=RTOL)
    assert mu_deviance(profile["mu"][1]) == pytest.approx(CUTOFF, rel=RTOL)


def test_least_squares_profile_uses_the_concentrated_gaussian_likelihood():
    x, y = keras_mle.data.noisy_line(m=1.0, b=2.0, n=25, noise=0.3, seed=4)
    x, y = x.astype(np.float64), y.astype(np.float64)
    model = keras_mle.LinearRegression(dtype="float64")
    model(x[:2])
    closed = keras_mle.closed_form.ols(x, y)
    model.set_params({"m": closed["m"], "b": closed["b"]})
    result = keras_mle.inference(model, x, y)
    profile = result.conf_int(0.9, method="profile")
    # n log(RSS(t) / RSS) = q with RSS(t) = RSS + (t - t_hat)^2 / [(X'X)^-1]_jj.
    inverse = np.linalg.inv(sm.add_constant(x).T @ sm.add_constant(x))
    q = stats.chi2.ppf(0.9, 1)
    for name, value, c in (("m", closed["m"][0], inverse[1, 1]), ("b", closed["b"], inverse[0, 0])):
        half = np.sqrt(c * closed["rss"] * np.expm1(q / len(x)))
        np.testing.assert_allclose(np.ravel(profile[name]), [value - half, value + half], rtol=RTOL)


def test_profile_refuses_robust_covariances_and_bad_methods(small_sample):
    samples, model = small_sample
    robust = keras_mle.inference(model, samples, cov_type="HC0")
    with pytest.raises(ValueError, match="method='profile'.*cov_type='HC0'"):
        robust.conf_int(method="profile")
    plain = keras_mle.inference(model, samples)
    with pytest.raises(ValueError, match="method must be"):
        plain.conf_int(method="bootstrap")
    with pytest.raises(ValueError, match="level must be"):
        plain.conf_int(1.0, method="profile")
