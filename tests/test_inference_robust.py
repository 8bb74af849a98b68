"""Robust covariances, Wald tests and the statsmodels-named extras of `keras_mle.inference`.

Every model is set to its exact optimum with `set_params` (statsmodels' estimates, or the OLS
closed form), so the numbers compared are those of the same parameters. Tolerances:

- `RTOL = 1e-8` against statsmodels: both sides are float64 linear algebra on analytic
  derivatives (statsmodels' OLS residuals and hat matrix, Logit's score and Hessian; for
  `GenericLikelihoodModel` the test gives it the analytic Gaussian score and Hessian), so they
  agree to ~1e-12; a wrong small-sample factor or a float32 step would show at >= 1e-7.
- Frequency weights against statsmodels OLS on the rows repeated `w_i` times: the same numbers,
  `RTOL`.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import tensorflow as tf
from statsmodels.base.model import GenericLikelihoodModel

import keras_mle
from keras_mle.inference import InferenceWarning

RTOL = 1e-8


def assert_close(actual, expected, rtol=RTOL, atol=0.0):
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol)


class Logistic(keras_mle.MaximumLikelihoodModel):
    """Bernoulli regression `P(y = 1) = sigmoid(x @ m + b)`, written with the base class."""

    parameter_roles = {"m": "slope", "b": "intercept"}

    def build(self, input_shape):
        features = 1 if len(input_shape) == 1 else input_shape[-1]
        self.add_parameter("m", shape=(features,))
        self.add_parameter("b")

    def linear_predictor(self, params, x):
        x = tf.cast(x, params["m"].dtype)
        if x.shape.rank == 1:
            return x * params["m"][0] + params["b"]
        return tf.linalg.matvec(x, params["m"]) + params["b"]

    def mean(self, params, x):
        return tf.sigmoid(self.linear_predictor(params, x))

    def sample_loss(self, params, x, y):
        eta = self.linear_predictor(params, x)
        return tf.math.softplus(eta) - y * eta


class GaussianLikelihood(GenericLikelihoodModel):
    """`y ~ N(X beta, sigma^2)` with its analytic score and Hessian (statsmodels' sandwich)."""

    def loglikeobs(self, params):
        beta, sigma = params[:-1], params[-1]
        e = self.endog - self.exog @ beta
        return -0.5 * np.log(2 * np.pi) - np.log(sigma) - 0.5 * (e / sigma) ** 2

    def nloglikeobs(self, params):
        return -self.loglikeobs(params)

    def score_obs(self, params):
        beta, sigma = params[:-1], params[-1]
        e = self.endog - self.exog @ beta
        return np.column_stack([self.exog * (e / sigma**2)[:, None], -1 / sigma + e**2 / sigma**3])

    def hessian(self, params):
        beta, sigma = params[:-1], params[-1]
        e = self.endog - self.exog @ beta
        n, k = self.exog.shape
        h = np.zeros((k + 1, k + 1))
        h[:k, :k] = -self.exog.T @ self.exog / sigma**2
        h[:k, k] = h[k, :k] = -2 * self.exog.T @ e / sigma**3
        h[k, k] = n / sigma**2 - 3 * e @ e / sigma**4
        return h


@pytest.fixture(scope="module")
def data():
    """Two features, heteroscedastic noise, 60 rows in 8 clusters of unequal size."""
    rng = np.random.default_rng(11)
    x = np.column_stack([rng.uniform(0, 3, 60), rng.normal(50.0, 10.0, 60)])
    y = 1.0 + 0.8 * x[:, 0] - 0.02 * x[:, 1] + rng.normal(0, 0.3 + 0.4 * x[:, 0])
    groups = rng.integers(0, 8, 60)
    return x, y, groups


def linear_at_optimum(x, y, sample_weight=None, cls=keras_mle.LinearRegression):
    model = cls(dtype="float64")
    model(x[:2])
    closed = keras_mle.closed_form.ols(x, y, sample_weight)
    model.set_params({k: v for k, v in closed.items() if k in model.parameter_names})
    return model


def coefficient_block(result, k):
    """`result.covariance` over `m_0..m_{k-1}, b` reordered as statsmodels' `[b, m...]`."""
    order = [k, *range(k)]
    return result.covariance[np.ix_(order, order)]


# ---------------------------------------------------------------------------- OLS
@pytest.mark.parametrize("cov_type", ["nonrobust", "HC0", "HC1", "HC2", "HC3"])
def test_ols_heteroscedasticity_robust_matches_statsmodels(data, cov_type):
    x, y, _ = data
    model = linear_at_optimum(x, y)
    result = keras_mle.inference(model, x, y, cov_type=cov_type)
    reference = sm.OLS(y, sm.add_constant(x)).fit()
    if cov_type != "nonrobust":
        reference = reference.get_robustcov_results(cov_type)
    assert_close(coefficient_block(result, 2), reference.cov_params())
    assert_close(result.bse["m"], reference.bse[1:])
    assert_close(result.pvalues["b"], reference.pvalues[0])
    assert_close(result.conf_int()["m"], reference.conf_int()[1:])
    assert result.cov_type == cov_type and result.df_inference == reference.df_resid


def test_ols_cluster_matches_statsmodels(data):
    x, y, groups = data
    result = keras_mle.inference(linear_at_optimum(x, y), x, y, cov_type="cluster", groups=groups)
    reference = sm.OLS(y, sm.add_constant(x)).fit().get_robustcov_results("cluster", groups=groups)
    assert_close(coefficient_block(result, 2), reference.cov_params())
    assert result.n_groups == 8 and result.df_inference == reference.df_resid_inference == 7
    assert_close(result.pvalues["m"], reference.pvalues[1:])  # t(G - 1), as statsmodels
    assert_close(result.conf_int(0.9)["m"], reference.conf_int(0.1)[1:])
    assert "cluster-robust over 8 groups" in result.summary()


def test_string_cluster_labels_give_the_same_covariance(data):
    x, y, groups = data
    model = linear_at_optimum(x, y)
    codes = keras_mle.inference(model, x, y, cov_type="cluster", groups=groups)
    labels = keras_mle.inference(
        model, x, y, cov_type="cluster", groups=np.array([f"g{g}" for g in groups])
    )
    assert_close(labels.covariance, codes.covariance, rtol=1e-14)


@pytest.mark.parametrize("cov_type", ["HC0", "HC1", "HC2", "HC3", "cluster"])
def test_frequency_weights_match_repeated_rows(data, cov_type):
    x, y, groups = data
    counts = np.arange(60) % 3  # 0, 1 or 2 copies of each row
    kwargs = {"groups": groups} if cov_type == "cluster" else {}
    model = linear_at_optimum(x, y, counts)
    result = keras_mle.inference(model, x, y, sample_weight=counts, cov_type=cov_type, **kwargs)
    repeated = sm.OLS(np.repeat(y, counts), sm.add_constant(np.repeat(x, counts, axis=0))).fit()
    if cov_type == "cluster":
        kwargs["groups"] = np.repeat(groups, counts)
    reference = repeated.get_robustcov_results(cov_type, **kwargs)
    assert result.nobs == counts.sum()
    assert_close(coefficient_block(result, 2), reference.cov_params())


def test_gaussian_regression_ols_convention_reports_the_coefficient_block(data):
    x, y, _ = data
    model = linear_at_optimum(x, y, cls=keras_mle.GaussianRegression)
    result = keras_mle.inference(model, x, y, convention="ols", cov_type="HC3")
    reference = sm.OLS(y, sm.add_constant(x)).fit().get_robustcov_results("HC3")
    assert_close(coefficient_block(result, 2), reference.cov_params())
    assert result.param_names == ["m_0", "m_1", "b", "sigma"]
    assert np.isnan(result.bse["sigma"]) and np.all(np.isnan(result.covariance[3]))
    assert "sigma has none" in result.summary()


# ---------------------------------------------------------------------------- MLE
@pytest.mark.parametrize("cov_type", ["HC0", "cluster"])
def test_gaussian_regression_mle_sandwich_matches_generic_likelihood_model(data, cov_type):
    x, y, groups = data
    model = linear_at_optimum(x, y, cls=keras_mle.GaussianRegression)
    kwargs = {"groups": groups} if cov_type == "cluster" else {}
    result = keras_mle.inference(model, x, y, cov_type=cov_type, **kwargs)
    closed = keras_mle.closed_form.ols(x, y)
    start = np.r_[closed["b"], closed["m"], closed["sigma"]]
    generic = GaussianLikelihood(y, sm.add_constant(x), extra_params_names=["sigma"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # maxiter=0: started at the optimum
        reference = generic.fit(
            start_params=start, method="nm", maxiter=0, disp=0, cov_type=cov_type, cov_kwds=kwargs
        )
    order = [2, 0, 1, 3]  # [b, m_0, m_1, sigma]
    assert_close(result.covariance[np.ix_(order, order)], reference.cov_params())
    assert result.distribution == "normal"
    # The mean block of the MLE sandwich is White's OLS HC0 (the 1/sigma^2 factors cancel).
    if cov_type == "HC0":
        ols = sm.OLS(y, sm.add_constant(x)).fit().get_robustcov_results("HC0")
        assert_close(coefficient_block(result, 2), ols.cov_params())


def test_hc1_scales_hc0_by_n_over_n_minus_k(data):
    """statsmodels' GenericLikelihoodModel ignores the HC1 factor; the sandwich does not."""
    x, y, _ = data
    model = linear_at_optimum(x, y, cls=keras_mle.GaussianRegression)
    hc0, hc1 = (keras_mle.inference(model, x, y, cov_type=c).covariance for c in ("HC0", "HC1"))
    assert_close(hc1, hc0 * 60 / (60 - 4), rtol=1e-13)


@pytest.fixture(scope="module")
def logistic_data():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(150, 2))
    y = (rng.uniform(size=150) < 1 / (1 + np.exp(-(0.3 + x @ [1.0, -0.7])))).astype(np.float64)
    return x, y, rng.integers(0, 10, 150)


def logistic_at(params, x):
    model = Logistic(dtype="float64")
    model(x[:2])
    model.set_params({"b": params[0], "m": params[1:]})
    return model


@pytest.mark.parametrize("cov_type", ["nonrobust", "HC0", "cluster"])
def test_logistic_subclass_matches_statsmodels_logit(logistic_data, cov_type):
    x, y, groups = logistic_data
    kwargs = {"groups": groups} if cov_type == "cluster" else {}
    reference = sm.Logit(y, sm.add_constant(x)).fit(
        method="newton",
        tol=1e-14,
        disp=0,
        cov_type=cov_type,
        **({"cov_kwds": kwargs} if kwargs else {}),
    )
    model = logistic_at(reference.params, x)
    result = keras_mle.inference(model, x, y, cov_type=cov_type, **kwargs)
    assert_close(coefficient_block(result, 2), reference.cov_params())
    assert_close(result.llf, reference.llf, rtol=1e-12)
    assert_close([result.pvalues["b"], *result.pvalues["m"]], reference.pvalues)
    assert result.df_model == reference.df_model == 2 and result.df_resid == reference.df_resid
    restrictions = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])  # statsmodels order [b, m0, m1]
    ours = keras_mle.inference(model, x, y, cov_type=cov_type, **kwargs).wald_test(
        restrictions[:, [1, 2, 0]], q=[0.9, 0.2]
    )
    theirs = reference.wald_test((restrictions, [0.9, 0.2]), scalar=True)
    assert ours.distribution == "chi2" and ours.df == 2 and ours.df_denom is None
    assert_close([ours.statistic, ours.pvalue], [theirs.statistic, theirs.pvalue])


def test_hc2_hc3_need_a_leverage(data, logistic_data):
    x, y, _ = data
    gaussian = linear_at_optimum(x, y, cls=keras_mle.GaussianRegression)
    with pytest.raises(ValueError, match=r"HC2.*leverages.*convention='ols'"):
        keras_mle.inference(gaussian, x, y, cov_type="HC2")
    xl, yl, _ = logistic_data
    logistic = logistic_at(np.zeros(3), xl)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InferenceWarning)
        with pytest.raises(ValueError, match=r"HC3.*Logistic") as error:
            keras_mle.inference(logistic, xl, yl, cov_type="HC3")
    assert "convention='ols'" not in str(error.value)


def test_bad_covariance_arguments(data):
    x, y, groups = data
    model = linear_at_optimum(x, y)
    for kwargs, match in [
        ({"cov_type": "HC4"}, "cov_type must be one of"),
        ({"cov_type": "cluster"}, "groups is required"),
        ({"cov_type": "HC0", "groups": groups}, "groups is only used"),
        ({"cov_type": "cluster", "groups": groups[:-1]}, r"groups must have one label per row"),
        ({"cov_type": "cluster", "groups": np.zeros(60)}, "at least 2 groups"),
        ({"cov_type": "cluster", "groups": np.r_[groups[:-1], np.nan]}, "groups contains NaN"),
    ]:
        with pytest.raises(ValueError, match=match):
            keras_mle.inference(model, x, y, **kwargs)


# ---------------------------------------------------------------------------- Wald tests
@pytest.mark.parametrize("cov_type", ["nonrobust", "HC1", "cluster"])
def test_wald_test_f_matches_statsmodels(data, cov_type):
    x, y, groups = data
    kwargs = {"groups": groups} if cov_type == "cluster" else {}
    result = keras_mle.inference(linear_at_optimum(x, y), x, y, cov_type=cov_type, **kwargs)
    reference = sm.OLS(y, sm.add_constant(x)).fit()
    if cov_type != "nonrobust":
        reference = reference.get_robustcov_results(cov_type, **kwargs)
    restrictions = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # statsmodels order [b, m0, m1]
    ours = result.wald_test(restrictions[:, [1, 2, 0]], q=[0.5, 0.0])
    theirs = reference.wald_test((restrictions, [0.5, 0.0]), scalar=True)
    assert ours.distribution == "F" and ours.df == 2 and ours.df_denom == theirs.df_denom
    assert_close([ours.statistic, ours.pvalue], [theirs.statistic, theirs.pvalue])
    one = result.wald_test([1.0, 0.0, 0.0])  # m_0 = 0: F = t^2
    assert_close(one.statistic, result.tvalues["m"][0] ** 2, rtol=1e-12)
    assert "F(1" in str(one)


def test_wald_test_bad_arguments(data):
    x, y, _ = data
    model = linear_at_optimum(x, y, cls=keras_mle.GaussianRegression)
    result = keras_mle.inference(model, x, y, convention="ols")
    with pytest.raises(ValueError, match=r"R must have shape \(r, 4\)"):
        result.wald_test(np.eye(3))
    with pytest.raises(ValueError, match="without a standard error.*sigma"):
        result.wald_test([0.0, 0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="linearly dependent"):
        result.wald_test([[1.0, 0, 0, 0], [2.0, 0, 0, 0]])
    with pytest.raises(ValueError, match="q must be"):
        result.wald_test([1.0, 0, 0, 0], q=[1.0, 2.0])
    with pytest.raises(ValueError, match="NaN or Inf"):
        result.wald_test([np.nan, 0, 0, 0])


# ---------------------------------------------------------------------------- statsmodels names
def test_statsmodels_names_and_predictions_match_ols(data):
    x, y, _ = data
    result = keras_mle.inference(linear_at_optimum(x, y), x, y)
    reference = sm.OLS(y, sm.add_constant(x)).fit()
    assert_close(
        [result.llf, result.aic, result.bic], [reference.llf, reference.aic, reference.bic]
    )
    assert_close(coefficient_block(result, 2), reference.cov_params())
    assert result.cov_params() is not result.covariance
    assert result.nobs == reference.nobs and result.df_model == reference.df_model == 2
    assert result.bse is result.stderr
    assert_close(result.resid, reference.resid, atol=1e-12)
    assert_close(result.fittedvalues, reference.fittedvalues)
    assert_close(
        [result.rsquared, result.rsquared_adj], [reference.rsquared, reference.rsquared_adj]
    )
    x_new = np.array([[0.5, 40.0], [2.5, 70.0], [1.0, 50.0]])
    ours = result.get_prediction(x_new)
    theirs = reference.get_prediction(sm.add_constant(x_new, has_constant="add"))
    assert_close(ours.predicted_mean, theirs.predicted_mean)
    for alpha in (0.05, 0.2):
        for obs in (False, True):
            assert_close(ours.conf_int(alpha, obs=obs), theirs.conf_int(obs=obs, alpha=alpha))
    frame = ours.summary_frame()
    assert_close(frame.to_numpy(), theirs.summary_frame().to_numpy())
    table = result.to_frame()
    assert isinstance(table, pd.DataFrame) and list(table.index) == ["m_0", "m_1", "b"]
    assert_close(table["coef"], np.r_[reference.params[1:], reference.params[0]])
    assert_close(table["P>|t|"], np.r_[reference.pvalues[1:], reference.pvalues[0]])


def test_prediction_with_robust_covariance_matches_statsmodels(data):
    x, y, _ = data
    model = linear_at_optimum(x, y, cls=keras_mle.GaussianRegression)
    result = keras_mle.inference(model, x, y, convention="ols", cov_type="HC1")
    reference = sm.OLS(y, sm.add_constant(x)).fit().get_robustcov_results("HC1")
    x_new = x[:4] + 0.25
    theirs = reference.get_prediction(sm.add_constant(x_new, has_constant="add"))
    assert_close(result.get_prediction(x_new).summary_frame().to_numpy(), theirs.summary_frame())


def test_mle_prediction_uses_the_mle_sigma_and_normal_quantiles(data):
    x, y, _ = data
    model = linear_at_optimum(x, y, cls=keras_mle.GaussianRegression)
    result = keras_mle.inference(model, x, y)
    closed = keras_mle.closed_form.ols(x, y)
    design = sm.add_constant(x)
    x_new = np.array([[1.0, 45.0]])
    prediction = result.get_prediction(x_new)
    d = np.r_[1.0, x_new[0]]
    se_mean = closed["sigma"] * np.sqrt(d @ np.linalg.inv(design.T @ design) @ d)
    assert_close(prediction.se_mean, [se_mean])
    assert_close(prediction.se_obs, [np.hypot(se_mean, closed["sigma"])])
    assert_close(
        prediction.conf_int(obs=True)[0, 1] - prediction.predicted_mean[0],
        1.959963984540054 * prediction.se_obs[0],
    )
    assert_close(result.rsquared, sm.OLS(y, design).fit().rsquared)


def test_linear_extras_are_refused_for_other_models(logistic_data):
    x, y, _ = logistic_data
    reference = sm.Logit(y, sm.add_constant(x)).fit(method="newton", tol=1e-14, disp=0)
    result = keras_mle.inference(logistic_at(reference.params, x), x, y)
    for name in ("resid", "fittedvalues", "rsquared"):
        with pytest.raises(ValueError, match="not a Gaussian linear model"):
            getattr(result, name)
    with pytest.raises(ValueError, match="not a Gaussian linear model"):
        result.get_prediction(x[:2])


def test_prediction_bad_input(data):
    x, y, _ = data
    result = keras_mle.inference(linear_at_optimum(x, y), x, y)
    with pytest.raises(ValueError, match="x_new: .*feature"):
        result.get_prediction(np.ones((2, 3)))
    with pytest.raises(ValueError, match="x_new: .*NaN"):
        result.get_prediction(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="alpha must be"):
        result.get_prediction(x[:2]).conf_int(alpha=1.5)
