"""Fixed parameters: held at their values by every optimizer, `adapt`, `refine` and the profile.

A model with a component fixed is the model with that term moved to an offset: statsmodels OLS
of `y - x_0 * m_0` on the remaining columns gives the reference parameters, standard errors,
log-likelihood, AIC and BIC, and its likelihood-ratio test against the full fit (`df = 1`).
"""

import warnings

import keras
import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats

import keras_mle
from keras_mle.models.adaptation import Adaptation

# Float64 models at the optimum (Newton refinement, or one exact SGD step after `adapt`):
# statsmodels agrees to ~1e-12 relative; 1e-8 leaves room for the conditioning of the data.
RTOL = 1e-8
M0 = 0.7  # the fixed slope of x_0 (its true value is 0.8)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    n = 60
    x = np.column_stack([rng.normal(3.0, 2.0, n), rng.normal(-1.0, 0.5, n)])
    y = 2.0 + 0.8 * x[:, 0] - 1.5 * x[:, 1] + rng.normal(0.0, 0.4, n)
    return x, y


def refined(model, x, y=None):
    model(x[:2])
    report = keras_mle.refine(model, x, y)
    assert report.converged
    return model


def adapted_sgd(model, x, y, epochs=2):
    """`adapt`, then full-batch SGD(0.5): exact for least squares in the adapted space."""
    model.adapt(x, y)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    model.fit(x, y, epochs=epochs, batch_size=len(x), verbose=0, shuffle=False)
    return model


def check_against(result, ols, fixed_value):
    """`result` (m_0 fixed; m_1, b free) against OLS on `[x_1, const]` with the offset."""
    assert result.fixed == ("m_0",)
    assert result.params["m"][0] == fixed_value
    np.testing.assert_allclose(result.params["m"][1], ols.params[0], rtol=RTOL)
    np.testing.assert_allclose(result.params["b"], ols.params[1], rtol=RTOL)
    assert np.isnan(result.stderr["m"][0])
    np.testing.assert_allclose(result.stderr["m"][1], ols.bse[0], rtol=RTOL)
    np.testing.assert_allclose(result.stderr["b"], ols.bse[1], rtol=RTOL)
    for ours, theirs in ((result.loglik, ols.llf), (result.aic, ols.aic), (result.bic, ols.bic)):
        np.testing.assert_allclose(ours, theirs, rtol=RTOL)
    assert result.df_resid == ols.df_resid and result.df_model == ols.df_model
    assert result.converged and not result.warnings


def test_fixed_slope_matches_ols_with_an_offset(data):
    x, y = data
    ols = sm.OLS(y - M0 * x[:, 0], np.column_stack([x[:, 1], np.ones(len(x))])).fit()
    model = refined(keras_mle.LinearRegression(dtype="float64", fixed={"m": [M0, None]}), x, y)
    check_against(keras_mle.inference(model, x, y), ols, M0)
    assert "(fixed)" in keras_mle.inference(model, x, y).summary()
    # adapt whitens only the free column: one SGD(0.5) step lands on the optimum.
    sgd = adapted_sgd(keras_mle.LinearRegression(dtype="float64", fixed={"m": [M0, None]}), x, y)
    check_against(keras_mle.inference(sgd, x, y), ols, M0)
    np.testing.assert_allclose(sgd.closed_form(x, y)["m"], [M0, ols.params[0]], rtol=RTOL)
    # A robust covariance covers the free coefficients only, as statsmodels' HC1 on that design.
    hc1 = keras_mle.inference(model, x, y, cov_type="HC1")
    robust = sm.OLS(ols.model.endog, ols.model.exog).fit(cov_type="HC1")
    np.testing.assert_allclose(hc1.stderr["m"][1], robust.bse[0], rtol=RTOL)
    np.testing.assert_allclose(hc1.stderr["b"], robust.bse[1], rtol=RTOL)


def test_fixed_intercept_matches_ols_without_a_constant(data):
    x, y = data
    ols = sm.OLS(y - 1.0, x).fit()
    for model in (
        refined(keras_mle.LinearRegression(dtype="float64", fixed={"b": 1.0}), x, y),
        # adapt leaves x uncentred when the intercept is fixed: again exact in one step.
        adapted_sgd(keras_mle.LinearRegression(dtype="float64", fixed={"b": 1.0}), x, y),
    ):
        result = keras_mle.inference(model, x, y)
        assert result.fixed == ("b",) and result.params["b"] == 1.0
        np.testing.assert_allclose(result.params["m"], ols.params, rtol=RTOL)
        np.testing.assert_allclose(result.stderr["m"], ols.bse, rtol=RTOL)
        np.testing.assert_allclose(result.loglik, ols.llf, rtol=RTOL)
        assert result.df_resid == ols.df_resid == len(x) - 2


def test_profile_interval_holds_the_fixed_slope(data):
    x, y = data
    model = refined(keras_mle.LinearRegression(dtype="float64", fixed={"m": [M0, None]}), x, y)
    interval = keras_mle.inference(model, x, y).conf_int(method="profile")
    assert np.all(np.isnan(interval["m"][0]))
    # Closed form for least squares: n log(RSS(t) / RSS) = chi2(1).ppf(0.95), with
    # RSS(t) = RSS + (t - t_hat)^2 / [(X'X)^-1]_tt over the free design [x_1, 1].
    design = np.column_stack([x[:, 1], np.ones(len(x))])
    ols = sm.OLS(y - M0 * x[:, 0], design).fit()
    rss, n = ols.ssr, len(x)
    half = np.sqrt(
        rss * np.expm1(stats.chi2.ppf(0.95, 1) / n) * np.linalg.inv(design.T @ design)[0, 0]
    )
    # The profile's root is found to |r - r*| <= 1e-10, ~1e-10 relative in the bounds.
    np.testing.assert_allclose(interval["m"][1], ols.params[0] + np.array([-half, half]), rtol=1e-8)


def test_likelihood_ratio_test_of_a_fixed_slope(data):
    x, y = data
    full = refined(keras_mle.LinearRegression(dtype="float64"), x, y)
    restricted = refined(
        keras_mle.LinearRegression(dtype="float64", fixed={"m": [0.0, None]}), x, y
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "not converged" at the constrained optimum
        test = keras_mle.likelihood_ratio_test(full, restricted, x, y)
    big = sm.OLS(y, sm.add_constant(x)).fit()
    small = sm.OLS(y, sm.add_constant(x[:, 1])).fit()
    statistic, pvalue, df = big.compare_lr_test(small)
    assert test.df == df == 1 and not test.warnings
    np.testing.assert_allclose(test.statistic, statistic, rtol=RTOL)
    np.testing.assert_allclose(test.pvalue, pvalue, rtol=1e-6)  # a tail probability ~1e-30


def test_gaussian_mle_with_a_fixed_mean(data):
    samples = data[1] - 2.0
    expected = np.sqrt(np.mean(samples**2))
    model = keras_mle.GaussianMLE(dtype="float64", fixed={"mu": 0.0})
    model.adapt(samples)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    model.fit(samples, epochs=10, batch_size=len(samples), verbose=0)
    keras_mle.refine(model, samples)
    assert model.params["mu"] == 0.0
    np.testing.assert_allclose(model.params["sigma"], expected, rtol=1e-12)
    np.testing.assert_allclose(model.closed_form(samples)["sigma"], expected, rtol=1e-12)
    result = keras_mle.inference(model, samples)
    # Observed information of sigma with mu known: 2 n / sigma^2.
    np.testing.assert_allclose(
        result.stderr["sigma"], expected / np.sqrt(2 * len(samples)), rtol=RTOL
    )
    assert result.df_resid == len(samples) - 1 and result.fixed == ("mu",)
    np.testing.assert_allclose(result.aic, -2 * result.loglik + 2, rtol=1e-15)


def test_gaussian_regression_with_a_known_sigma(data):
    x, y = data
    model = refined(keras_mle.GaussianRegression(dtype="float64", fixed={"sigma": 1.0}), x, y)
    result = keras_mle.inference(model, x, y)
    design = np.column_stack([x, np.ones(len(x))])
    ols = sm.OLS(y, design).fit()
    # With sigma known, the covariance of the coefficients is sigma^2 (X'X)^-1, sigma = 1.
    bse = np.sqrt(np.diag(np.linalg.inv(design.T @ design)))
    np.testing.assert_allclose(result.params["m"], ols.params[:2], rtol=RTOL)
    np.testing.assert_allclose(result.stderr["m"], bse[:2], rtol=RTOL)
    np.testing.assert_allclose(result.stderr["b"], bse[2], rtol=RTOL)
    assert result.fixed == ("sigma",) and np.isnan(result.stderr["sigma"])
    loglik = stats.norm.logpdf(y, design @ ols.params, 1.0).sum()
    np.testing.assert_allclose(result.loglik, loglik, rtol=1e-12)
    with pytest.raises(ValueError, match="convention='ols'.*'sigma' fixed"):
        keras_mle.inference(model, x, y, convention="ols")


def test_adam_with_weight_decay_does_not_move_fixed_components(data):
    x, y = data
    model = keras_mle.GaussianRegression(fixed={"m": [M0, None], "sigma": 0.5})
    model.compile(optimizer=keras.optimizers.AdamW(0.1, weight_decay=0.5))
    model(x[:2])
    before = model.params["m"][1]
    model.fit(x, y, epochs=5, batch_size=16, verbose=0)
    assert model.params["m"][0] == np.float32(M0) and model.params["sigma"] == np.float32(0.5)
    assert model.params["m"][1] != before  # the free slope did train
    # sigma is wholly fixed: not even seen by the optimizer.
    assert all("sigma" not in v.path for v in model.trainable_variables)


def test_fixed_is_validated():
    cases = [
        ({"slope": 1.0}, "unknown parameter 'slope'"),
        ({"sigma": 0.0}, "must be > 0"),
        ({"sigma": -1.0}, "must be > 0"),
        ({"b": float("nan")}, "must be finite"),
        ({"b": True}, "must be a number"),
        ({"m": [None, None]}, "fixes no component"),
        ([0.0], "must be a dict"),
    ]
    for fixed, message in cases:
        with pytest.raises(ValueError, match=rf"fixed.*{message}"):
            keras_mle.GaussianRegression(fixed=fixed)
    model = keras_mle.LinearRegression(fixed={"m": [0.0, None, 1.0]})
    with pytest.raises(ValueError, match=r"fixed\['m'\] has 3 component\(s\), but 'm' has 2"):
        model.fit(np.ones((4, 2)), np.arange(4.0), epochs=1, verbose=0)


def test_set_params_refuses_to_move_a_fixed_component(data):
    x, _ = data
    model = keras_mle.LinearRegression(dtype="float64", fixed={"m": [M0, None]})
    model(x[:2])
    model.set_params({"m": [M0, 2.0]})
    np.testing.assert_array_equal(model.params["m"], [M0, 2.0])
    with pytest.raises(ValueError, match=r"params: \['m_0'\] are fixed"):
        model.set_params({"m": [0.0, 2.0]})


def test_an_adaptation_that_mixes_fixed_slopes_is_refused(data):
    x, y = data
    mixing = Adaptation.from_data(x, y).get_config()  # whitens both columns together
    model = keras_mle.LinearRegression(fixed={"m": [M0, None]}, adaptation=mixing)
    with pytest.raises(ValueError, match="fixed: this adaptation whitens fixed slope columns"):
        model(x[:2])
    centred = keras_mle.LinearRegression(fixed={"b": 1.0}, adaptation=mixing)
    with pytest.raises(ValueError, match="fixed: this adaptation centres x"):
        centred(x[:2])
