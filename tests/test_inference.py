"""keras_mle.inference against statsmodels, scipy and closed forms.

Models are trained the documented way (`adapt`, then SGD through `fit()`), so the numbers compared
are those a user gets. Tolerances:

- float64, against exact references (statsmodels OLS, closed forms, scipy): `RTOL = 1e-9`. The
  fits reach the optimum to ~1e-15 and inference is float64 linear algebra, so a looser tolerance
  would hide real bugs: a float32 constant in a float64 path shows up at ~1e-7.
- float64, against `GenericLikelihoodModel` standard errors: 1e-5, since statsmodels takes that
  Hessian by finite differences (we differ by ~1e-7 at most).
- float32 models: `RTOL32 = 1e-5`. The variables hold float32 values (relative rounding ~6e-8 in
  the working space); the estimates inherit that, amplified for an intercept extrapolated far from
  the data (see test_nist.py for such a case), while standard errors and the log-likelihood, flat
  at the optimum, keep ~1e-9 since inference itself runs in float64.
"""

import dataclasses
import json
import math
import warnings

import keras
import numpy as np
import pytest
import statsmodels.api as sm
import tensorflow as tf
from scipy import stats
from statsmodels.base.model import GenericLikelihoodModel

import keras_mle
from keras_mle import distributions, parameters
from keras_mle.inference import InferenceWarning

RTOL = 1e-9
RTOL_NUMERICAL_HESSIAN = 1e-5
RTOL32 = 1e-5


def fit_adapted(model, x, y=None, *, steps, learning_rate):
    """adapt, then `steps` full-batch SGD steps in one `fit()` call (the package's fast path)."""
    model.adapt(x, y)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), jit_compile=False)
    checked = model.check_data(x, y)
    dataset = keras_mle.data.epoch_dataset(*checked, batch_size=len(x), repeats=steps)
    model.fit(dataset, epochs=1, steps_per_epoch=1, shuffle=False, verbose=0)
    return model


def assert_close(actual, expected, rtol=RTOL, atol=0.0):
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol)


class _GaussianRegressionLikelihood(GenericLikelihoodModel):
    """`y ~ N(X beta, sigma^2)` for statsmodels: parameters `[beta..., sigma]`."""

    def loglike(self, params):
        beta, sigma = params[:-1], params[-1]
        return stats.norm.logpdf(self.endog, self.exog @ beta, sigma).sum()


def statsmodels_mle(y, exog, start):
    model = _GaussianRegressionLikelihood(y, exog, extra_params_names=["sigma"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # maxiter=0: we start it at the closed-form optimum
        return model.fit(start_params=start, method="nm", maxiter=0, disp=0)


@pytest.fixture(scope="module")
def line():
    x, y = keras_mle.data.noisy_line(m=1.0, b=2.0, n=200, noise=0.15, seed=1)
    return x.astype(np.float64), y.astype(np.float64)


@pytest.fixture(scope="module")
def design():
    """Two correlated, badly scaled features (a column in the hundreds)."""
    rng = np.random.default_rng(7)
    x1 = rng.uniform(0, 1, 120)
    x2 = 400.0 + 100.0 * x1**2 + rng.normal(0, 2.0, 120)
    x = np.column_stack([x1, x2])
    y = 1.0 + 2.0 * x1 - 0.003 * x2 + rng.normal(0, 0.2, 120)
    return x, y


@pytest.fixture(scope="module")
def linear(line):
    x, y = line
    model = keras_mle.LinearRegression(dtype="float64", m_initializer="zeros")
    return fit_adapted(model, x, y, steps=2, learning_rate=0.5)


@pytest.fixture(scope="module")
def gaussian_regression(line):
    x, y = line
    model = keras_mle.GaussianRegression(dtype="float64", m_initializer="zeros")
    return fit_adapted(model, x, y, steps=100, learning_rate=0.2)


@pytest.fixture(scope="module")
def gaussian_mle(line):
    _, y = line
    model = keras_mle.GaussianMLE(initial_mu=1.4, initial_sigma=1.3, dtype="float64")
    return fit_adapted(model, y, steps=60, learning_rate=0.5)


# ---------------------------------------------------------------------------- OLS conventions
def check_against_ols(result, ols, k):
    """`result` (x with k features) against a statsmodels OLS fit with the constant first."""
    assert result.convention == "ols" and result.distribution == "t"
    assert_close(result.params["b"], ols.params[0])
    assert_close(result.params["m"], ols.params[1 : k + 1])
    assert_close(result.stderr["b"], ols.bse[0])
    assert_close(result.stderr["m"], ols.bse[1 : k + 1])
    assert_close(result.tvalues["m"], ols.tvalues[1 : k + 1])
    assert_close(result.pvalues["b"], ols.pvalues[0], rtol=1e-7)
    intervals = ols.conf_int(0.05)
    assert_close(result.conf_int(0.95)["b"], intervals[0])
    assert_close(result.conf_int(0.95)["m"], intervals[1 : k + 1])
    assert_close(result.conf_int(0.9)["m"], ols.conf_int(0.1)[1 : k + 1])
    for name in ("llf", "aic", "bic"):
        assert_close(getattr(result, {"llf": "loglik"}.get(name, name)), getattr(ols, name))
    assert result.nobs == ols.nobs and result.df_resid == ols.df_resid
    assert_close(result.sigma, np.sqrt(ols.scale))
    # covariance is ordered like param_names: m components, then b.
    order = [*range(1, k + 1), 0]
    assert_close(result.covariance, ols.cov_params()[np.ix_(order, order)])


def test_linear_regression_matches_statsmodels_ols(linear, line):
    x, y = line
    result = keras_mle.inference(linear, x, y)
    check_against_ols(result, sm.OLS(y, sm.add_constant(x)).fit(), k=1)
    assert result.converged and result.hessian_positive_definite and not result.warnings


def test_two_badly_scaled_features_match_statsmodels_ols(design):
    x, y = design
    model = keras_mle.LinearRegression(dtype="float64")
    fit_adapted(model, x, y, steps=2, learning_rate=0.5)
    result = keras_mle.inference(model, x, y)
    assert result.param_names == ["m_0", "m_1", "b"]
    check_against_ols(result, sm.OLS(y, sm.add_constant(x)).fit(), k=2)


def test_gaussian_regression_ols_variant_matches_statsmodels(gaussian_regression, line):
    x, y = line
    result = keras_mle.inference(gaussian_regression, x, y, convention="ols")
    ols = sm.OLS(y, sm.add_constant(x)).fit()
    assert_close(result.params["m"], ols.params[1:])
    assert_close(result.stderr["b"], ols.bse[0])
    assert_close([result.loglik, result.aic, result.bic], [ols.llf, ols.aic, ols.bic])
    assert_close(result.params["sigma"], np.sqrt(ols.scale))
    assert np.isnan(result.stderr["sigma"])  # OLS gives s no standard error
    assert result.param_names == ["m", "b", "sigma"] and result.covariance.shape == (3, 3)


# ---------------------------------------------------------------------------- MLE conventions
def test_gaussian_regression_matches_generic_likelihood_model(gaussian_regression, line):
    x, y = line
    closed = keras_mle.closed_form.ols(x, y)
    start = np.r_[closed["b"], closed["m"], closed["sigma"]]
    reference = statsmodels_mle(y, sm.add_constant(x), start)
    result = keras_mle.inference(gaussian_regression, x, y)
    assert result.convention == "mle" and result.distribution == "normal"
    got = np.r_[result.params["b"], result.params["m"], result.params["sigma"]]
    assert_close(got, reference.params)
    stderr = np.r_[result.stderr["b"], result.stderr["m"], result.stderr["sigma"]]
    assert_close(stderr, reference.bse, rtol=RTOL_NUMERICAL_HESSIAN)
    assert_close(
        [result.loglik, result.aic, result.bic], [reference.llf, reference.aic, reference.bic]
    )
    assert result.df_resid == reference.df_resid
    z = np.r_[result.tvalues["b"], result.tvalues["m"], result.tvalues["sigma"]]
    assert_close(z, reference.tvalues, rtol=RTOL_NUMERICAL_HESSIAN)


def test_gaussian_regression_closed_form_stderr(gaussian_regression, line):
    """At the MLE the observed information is X'X / sigma^2 and 2 n / sigma^2."""
    x, y = line
    result = keras_mle.inference(gaussian_regression, x, y)
    closed = keras_mle.closed_form.ols(x, y)
    design = np.column_stack([x, np.ones_like(x)])
    covariance = closed["sigma"] ** 2 * np.linalg.inv(design.T @ design)
    assert_close(result.covariance[:2, :2], covariance)
    assert_close(result.stderr["sigma"], closed["sigma"] / np.sqrt(2 * len(x)))
    assert_close(result.covariance[:2, 2], 0.0, atol=1e-12)


def test_mle_stderr_is_the_inverse_observed_information(gaussian_regression, line):
    """The same numbers from the model's information matrix, inverted here by hand."""
    x, y = line
    result = keras_mle.inference(gaussian_regression, x, y)
    information = gaussian_regression.observed_information(x, y)
    assert information.shape == (3, 3)
    covariance = np.linalg.inv(information)
    assert_close(result.covariance, covariance, atol=1e-15)  # cov(m or b, sigma) ~ 1e-20
    stderr = np.sqrt(np.diag(covariance))
    assert_close(np.r_[result.stderr["m"], result.stderr["b"], result.stderr["sigma"]], stderr)


def test_gaussian_mle_matches_scipy_and_closed_forms(gaussian_mle, line):
    _, samples = line
    n = len(samples)
    mu, sigma = stats.norm.fit(samples)
    result = keras_mle.inference(gaussian_mle, samples)
    assert_close([result.params["mu"], result.params["sigma"]], [mu, sigma])
    assert_close(result.stderr["mu"], sigma / np.sqrt(n))
    assert_close(result.stderr["sigma"], sigma / np.sqrt(2 * n))
    loglik = stats.norm.logpdf(samples, mu, sigma).sum()
    assert_close(result.loglik, loglik)
    assert_close(result.aic, -2 * loglik + 4)
    assert_close(result.bic, -2 * loglik + 2 * np.log(n))
    assert result.df_resid == n - 2 and result.sigma == pytest.approx(sigma, rel=RTOL)
    assert_close(result.pvalues["mu"], 2 * stats.norm.sf(mu / (sigma / np.sqrt(n))))
    assert_close(result.conf_int(0.99)["mu"], stats.norm.interval(0.99, mu, sigma / np.sqrt(n)))


def test_gaussian_mle_matches_generic_likelihood_model(gaussian_mle, line):
    _, samples = line
    mu, sigma = stats.norm.fit(samples)
    reference = statsmodels_mle(samples, np.ones((len(samples), 1)), np.r_[mu, sigma])
    result = keras_mle.inference(gaussian_mle, samples)
    assert_close([result.params["mu"], result.params["sigma"]], reference.params)
    assert_close(
        [result.stderr["mu"], result.stderr["sigma"]], reference.bse, rtol=RTOL_NUMERICAL_HESSIAN
    )
    assert_close(
        [result.loglik, result.aic, result.bic], [reference.llf, reference.aic, reference.bic]
    )


@pytest.mark.parametrize("model_class", ["LinearRegression", "GaussianMLE"])
def test_float32_models(model_class, line):
    x, y = line
    if model_class == "LinearRegression":
        model = fit_adapted(keras_mle.LinearRegression(), x, y, steps=2, learning_rate=0.5)
        result = keras_mle.inference(model, x, y)
        reference = sm.OLS(y, sm.add_constant(x)).fit()
        params = [result.params["b"], result.params["m"][0]]
        stderr = [result.stderr["b"], result.stderr["m"][0]]
    else:
        model = fit_adapted(
            keras_mle.GaussianMLE(initial_mu=1.4, initial_sigma=1.3), y, steps=60, learning_rate=0.5
        )
        result = keras_mle.inference(model, y)
        mu, sigma = stats.norm.fit(y)
        reference = statsmodels_mle(y, np.ones((len(y), 1)), np.r_[mu, sigma])
        params = [result.params["mu"], result.params["sigma"]]
        stderr = [result.stderr["mu"], result.stderr["sigma"]]
    assert model.dtype == "float32"
    assert_close(params, reference.params, rtol=RTOL32)
    assert_close(stderr, reference.bse, rtol=RTOL32)
    assert_close(
        [result.loglik, result.aic, result.bic], [reference.llf, reference.aic, reference.bic]
    )
    assert result.converged


def test_adapted_and_unadapted_models_give_the_same_answer(linear, line):
    x, y = line
    plain = keras_mle.LinearRegression(dtype="float64")
    plain(x[:2])
    plain.set_weights([linear.params["m"], linear.params["b"]])
    adapted, unadapted = (keras_mle.inference(m, x, y) for m in (linear, plain))
    assert_close(unadapted.covariance, adapted.covariance)
    assert_close(unadapted.loglik, adapted.loglik)


def test_sample_weights_are_frequency_weights(gaussian_regression, line):
    x, y = line
    counts = np.arange(len(x)) % 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InferenceWarning)  # fitted without the weights
        weighted = keras_mle.inference(gaussian_regression, x, y, sample_weight=counts)
        repeated = keras_mle.inference(
            gaussian_regression, np.repeat(x, counts), np.repeat(y, counts)
        )
    assert weighted.nobs == counts.sum()
    assert_close(weighted.covariance, repeated.covariance)
    assert_close(weighted.loglik, repeated.loglik)


# ---------------------------------------------------------------------------- likelihood ratio
def test_likelihood_ratio_test_slope_against_statsmodels():
    x, y = keras_mle.data.noisy_line(m=0.5, b=2.0, n=80, noise=0.3, seed=3)
    x, y = x.astype(np.float64), y.astype(np.float64)
    full = fit_adapted(
        keras_mle.GaussianRegression(dtype="float64"), x, y, steps=150, learning_rate=0.2
    )
    restricted = fit_adapted(keras_mle.GaussianMLE(dtype="float64"), y, steps=5, learning_rate=0.5)
    test = keras_mle.likelihood_ratio_test(full, restricted, x, y)
    ols_full = sm.OLS(y, sm.add_constant(x)).fit()
    ols_restricted = sm.OLS(y, np.ones_like(y)).fit()
    statistic, pvalue, df = ols_full.compare_lr_test(ols_restricted)
    assert test.df == df == 1
    assert_close(test.statistic, statistic)
    assert_close(test.pvalue, pvalue)
    assert 0.001 < test.pvalue < 0.5  # an informative p-value, not 0 or 1
    closed = [keras_mle.closed_form.ols(x, y)["rss"], np.sum((y - y.mean()) ** 2)]
    assert_close(test.statistic, len(y) * np.log(closed[1] / closed[0]))
    assert "chi2(1)" in str(test)


def test_likelihood_ratio_test_between_squared_error_models(design):
    x, y = design
    full = fit_adapted(
        keras_mle.LinearRegression(dtype="float64"), x, y, steps=2, learning_rate=0.5
    )
    one = fit_adapted(
        keras_mle.LinearRegression(dtype="float64"), x[:, 1], y, steps=2, learning_rate=0.5
    )
    test = keras_mle.likelihood_ratio_test(full, one, x, y, x_restricted=x[:, 1])
    reference = (
        sm.OLS(y, sm.add_constant(x))
        .fit()
        .compare_lr_test(sm.OLS(y, sm.add_constant(x[:, 1])).fit())
    )
    assert_close([test.statistic, test.pvalue], reference[:2], rtol=1e-7)


def test_likelihood_ratio_test_rejects_bad_df(gaussian_regression, gaussian_mle, line):
    x, y = line
    with pytest.raises(ValueError, match="not nested"):
        keras_mle.likelihood_ratio_test(gaussian_mle, gaussian_regression, x, y)
    with pytest.raises(ValueError, match="df must be"):
        keras_mle.likelihood_ratio_test(gaussian_regression, gaussian_mle, x, y, df=0)


# ---------------------------------------------------------------------------- not silently wrong
def test_unconverged_model_warns_and_flags(line):
    x, y = line
    model = keras_mle.LinearRegression(dtype="float64")
    model(x[:2])  # built, never trained
    with pytest.warns(InferenceWarning, match="Not converged"):
        result = keras_mle.inference(model, x, y)
    assert not result.converged and result.hessian_positive_definite
    assert result.distance_to_optimum > 1.0
    assert "NO" in result.summary() and "Not converged" in result.summary()
    assert result.to_dict()["converged"] is False


def test_barely_trained_model_is_flagged_but_a_converged_one_is_not(line):
    x, y = line
    model = keras_mle.GaussianRegression(dtype="float64")
    fit_adapted(model, x, y, steps=5, learning_rate=0.2)
    with pytest.warns(InferenceWarning):
        assert not keras_mle.inference(model, x, y).converged
    checked = model.check_data(x, y)
    more = keras_mle.data.epoch_dataset(*checked, batch_size=len(x), repeats=100)
    model.fit(more, epochs=1, steps_per_epoch=1, shuffle=False, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InferenceWarning)
        assert keras_mle.inference(model, x, y).converged


def test_hessian_not_positive_definite_gives_nan_stderr(line):
    x, y = line
    # sigma far above the residual SD: d2 NLL / d sigma2 = -n / sigma^2 + 3 RSS / sigma^4 < 0.
    model = keras_mle.GaussianRegression(initial_sigma=100.0, dtype="float64")
    model(x[:2])
    with pytest.warns(InferenceWarning, match="not positive definite"):
        result = keras_mle.inference(model, x, y)
    assert not result.hessian_positive_definite and not result.converged
    assert all(np.all(np.isnan(v)) for v in result.stderr.values())
    assert "nan" in result.summary()


def test_non_finite_parameters_are_a_clear_error(line):
    x, y = line
    model = keras_mle.GaussianRegression(dtype="float64")
    model(x[:2])
    model.weights[0].assign([np.nan])  # m
    for convention in ("mle", "ols"):
        with pytest.raises(ValueError, match=r"GaussianRegression.*non-finite parameter"):
            keras_mle.inference(model, x, y, convention=convention)
    linear = keras_mle.LinearRegression(dtype="float64")
    linear(x[:2])
    linear.weights[1].assign(np.inf)  # b
    with pytest.raises(ValueError, match=r"LinearRegression.*non-finite parameter"):
        keras_mle.inference(linear, x, y)


def test_ols_convention_needs_a_least_squares_model(gaussian_mle, line):
    _, samples = line
    with pytest.raises(ValueError, match=r"least_squares_model\(\) returns None"):
        keras_mle.inference(gaussian_mle, samples, convention="ols")


# ---------------------------------------------------------------------------- the result object
def test_summary_and_to_dict(gaussian_regression, line):
    x, y = line
    result = keras_mle.inference(gaussian_regression, x, y)
    text = result.summary()
    for piece in ("GaussianRegression", "Log-likelihood", "AIC", "BIC", "P>|z|", "[0.025"):
        assert piece in text
    for name in result.param_names:
        assert f"\n{name} " in text
    assert str(result) == text
    data = json.loads(json.dumps(result.to_dict()))
    assert data["params"]["m"] == pytest.approx(result.params["m"].tolist())
    assert data["conf_int"]["level"] == 0.95 and len(data["covariance"]) == 3
    assert result.conf_int()["m"].shape == (1, 2) and result.conf_int()["b"].shape == (2,)


def test_the_result_derives_its_numbers_from_the_covariance_and_keeps_its_data(
    gaussian_regression, line
):
    x, y = line
    result = keras_mle.inference(gaussian_regression, x, y)
    # stderr, tvalues and intervals from params and covariance alone (statsmodels' bse).
    estimates, stderr = parameters.flatten(result.params), np.sqrt(np.diag(result.covariance))
    assert_close(parameters.flatten(result.stderr), stderr)
    assert result.bse is result.stderr
    assert_close(parameters.flatten(result.tvalues), estimates / stderr)
    q = stats.norm.ppf(0.975)
    intervals = result.conf_int()
    assert_close(
        parameters.flatten({k: v[..., 0] for k, v in intervals.items()}), estimates - q * stderr
    )
    # What needs the rows reads public attributes: the model, its likelihood model, the data.
    assert result.model is gaussian_regression and result.likelihood_model is gaussian_regression
    data_x, data_y, weights = result.data
    assert data_x.dtype == np.float64 and data_y.dtype == np.float64
    assert_close(np.reshape(data_x, -1), x)
    assert_close(data_y, y)
    assert_close(weights, np.ones(len(x)))
    ols = keras_mle.inference(gaussian_regression, x, y, convention="ols")
    assert isinstance(ols.likelihood_model, keras_mle.LinearRegression)
    assert ols.likelihood_model.param_names == ["m", "b"]
    # Relabelled (as the command line names rows after columns): profile intervals unchanged.
    relabelled = dataclasses.replace(result, param_names=["slope", "intercept", "noise"])
    profile = result.conf_int(method="profile")
    for name, bounds in relabelled.conf_int(method="profile").items():
        assert_close(bounds, profile[name], rtol=0.0)


def test_bad_arguments(linear, line):
    x, y = line
    with pytest.raises(ValueError, match="convention"):
        keras_mle.inference(linear, x, y, convention="bayes")
    with pytest.raises(ValueError, match="squared error"):
        keras_mle.inference(linear, x, y, convention="mle")
    with pytest.raises(ValueError, match="not built"):
        keras_mle.inference(keras_mle.LinearRegression(), x, y)
    with pytest.raises(ValueError, match="tol"):
        keras_mle.inference(linear, x, y, tol=0)
    with pytest.raises(TypeError, match="keras_mle model"):
        keras_mle.inference(keras.Sequential(), x, y)
    with pytest.raises(ValueError, match="different lengths"):
        keras_mle.inference(linear, x, y[:-1])
    with pytest.raises(ValueError, match="NaN"):
        keras_mle.inference(linear, np.r_[x[:-1], np.nan], y)


# ---------------------------------------------------------------------------- distributions
# Independent references: table values (to 17 digits, from a 40-digit mpmath computation) and the
# closed forms of t(1) (Cauchy), t(2), chi2(1), chi2(2) and the normal (through math.erfc).
@pytest.mark.parametrize(
    ("q", "df", "quantile"),
    [
        (0.975, 10, 2.2281388519862747),
        (0.975, 30, 2.0422724563012383),
        (0.995, 5, 4.032142983555228),
        (0.95, 1, np.tan(np.pi * 0.45)),
        (0.975, 2, 0.95 / np.sqrt(2 * 0.975 * 0.025)),
        (0.975, np.inf, 1.9599639845400542),
    ],
)
def test_t_quantiles_match_tables(q, df, quantile):
    assert distributions.t_ppf(q, df) == pytest.approx(quantile, rel=1e-12)
    assert distributions.t_sf(quantile, df) == pytest.approx(1.0 - q, rel=1e-11)


def test_t_sf_matches_closed_forms_for_one_and_two_degrees_of_freedom():
    t = np.array([-3.0, -0.5, 0.0, 0.1, 1.0, 2.5, 10.0])
    cauchy = 0.5 - np.arctan(t) / np.pi
    assert_close(distributions.t_sf(t, 1), cauchy, rtol=1e-13)
    assert_close(distributions.t_sf(t, 2), 0.5 - t / (2.0 * np.sqrt(t**2 + 2.0)), rtol=1e-13)
    assert distributions.t_ppf(0.5, 7) == 0.0


def test_chi2_sf_matches_tables_and_closed_forms():
    assert distributions.chi2_sf(3.841458820694126, 1) == pytest.approx(0.05, rel=1e-12)
    assert distributions.chi2_sf(6.634896601021215, 1) == pytest.approx(0.01, rel=1e-12)
    assert distributions.chi2_sf(18.307038053275147, 10) == pytest.approx(0.05, rel=1e-12)
    for x in (0.01, 1.0, 5.0, 50.0):
        assert distributions.chi2_sf(x, 2) == pytest.approx(math.exp(-x / 2.0), rel=1e-13)
        expected = math.erfc(math.sqrt(x / 2.0))
        assert distributions.chi2_sf(x, 1) == pytest.approx(expected, rel=1e-13)


def test_normal_matches_erfc_and_tables():
    z = np.array([-3.0, 0.0, 1.0, 2.5, 10.0])
    expected = [0.5 * math.erfc(v / math.sqrt(2.0)) for v in z]
    assert_close(distributions.normal_sf(z), expected, rtol=1e-13)
    assert distributions.normal_ppf(0.975) == pytest.approx(1.9599639845400542, rel=1e-14)
    assert distributions.normal_ppf(0.995) == pytest.approx(2.5758293035489008, rel=1e-14)


def test_distributions_scalars_arrays_and_bad_arguments():
    assert type(distributions.normal_sf(1.0)) is np.float64
    assert distributions.t_sf(np.zeros((2, 3)), 4).shape == (2, 3)
    assert np.isnan(distributions.t_sf(np.nan, 4))  # no standard error: a NaN p-value
    for q in (0.0, 1.0, 1.5, np.nan):
        with pytest.raises(ValueError, match="q must be"):
            distributions.normal_ppf(q)
    for df in (0, -1.0, np.nan):
        with pytest.raises(ValueError, match="df must be"):
            distributions.t_ppf(0.9, df)
        with pytest.raises(ValueError, match="df must be"):
            distributions.chi2_sf(1.0, df)


# ---------------------------------------------------------------------------- a user's model
class PoissonModel(keras_mle.MaximumLikelihoodModel):
    """A user subclass (no `adapt`): inference needs nothing beyond `sample_loss`."""

    def build(self, input_shape):
        self.add_parameter("m", shape=(1,))
        self.add_parameter("b")

    def mean(self, params, x):
        return tf.exp(tf.cast(x, params["m"].dtype) * params["m"][0] + params["b"])

    def sample_loss(self, params, x, y):
        log_rate = tf.cast(x, params["m"].dtype) * params["m"][0] + params["b"]
        return tf.exp(log_rate) - y * log_rate + tf.math.lgamma(y + 1.0)


def test_user_subclass_matches_statsmodels_poisson_glm():
    rng = np.random.default_rng(5)
    x = rng.uniform(-1.0, 1.0, 300)
    y = rng.poisson(np.exp(0.5 * x + 1.0)).astype(np.float64)
    model = PoissonModel(dtype="float64")
    model.compile(optimizer=keras.optimizers.SGD(0.2), jit_compile=False)
    dataset = keras_mle.data.epoch_dataset(*model.check_data(x, y), batch_size=300, repeats=400)
    model.fit(dataset, epochs=1, steps_per_epoch=1, shuffle=False, verbose=0)
    glm = sm.GLM(y, sm.add_constant(x), family=sm.families.Poisson())
    reference = glm.fit(method="newton", tol=1e-14, disp=0)  # bse at the final estimate
    result = keras_mle.inference(model, x, y)
    assert result.converged and result.sigma is None
    assert_close([result.params["b"], result.params["m"][0]], reference.params, rtol=1e-8)
    assert_close([result.stderr["b"], result.stderr["m"][0]], reference.bse, rtol=1e-8)
    assert_close(result.loglik, reference.llf)
    assert_close(result.aic, reference.aic)


class Float32ConstantPoisson(PoissonModel):
    """`PoissonModel` with a float32 constant: fine in float32 training, not in float64."""

    def sample_loss(self, params, x, y):
        log_rate = tf.cast(x, params["m"].dtype) * params["m"][0] + params["b"]
        return tf.exp(log_rate) - y * log_rate + tf.math.lgamma(y + tf.constant(1.0))


def test_float32_constant_in_sample_loss_is_a_clear_error():
    x = np.linspace(-1.0, 1.0, 20)
    y = np.arange(20.0) % 4
    model = Float32ConstantPoisson()
    model.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=False)
    model.fit(x, y, epochs=1, batch_size=20, verbose=0)  # float32 training works
    with pytest.raises(ValueError, match=r"Float32ConstantPoisson\.sample_loss.*float64"):
        keras_mle.inference(model, x, y)


def test_non_finite_hessian_warns_with_nan_stderr():
    x = np.linspace(-1.0, 1.0, 20)
    y = np.arange(20.0) % 4
    model = PoissonModel(dtype="float64")
    model(x[:2])
    model.set_params({"b": 800.0})  # exp(800) overflows: an infinite NLL, a NaN Hessian
    with pytest.warns(InferenceWarning, match="NaN or Inf entries"):
        result = keras_mle.inference(model, x, y)
    assert not result.hessian_positive_definite and not result.converged
    assert np.isnan(result.stderr["b"]) and result.loglik == -np.inf
    assert "nan" in result.summary()


def test_user_model_without_least_squares_model_refuses_ols():
    x = np.linspace(-1.0, 1.0, 20)
    model = PoissonModel(dtype="float64")
    model(x[:2])
    with pytest.raises(ValueError, match="PoissonModel.least_squares_model"):
        keras_mle.inference(model, x, np.arange(20.0) % 4, convention="ols")
