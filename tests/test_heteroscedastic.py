"""HeteroscedasticRegression against scipy.optimize, a numerical Hessian and scipy.stats.

The model, `y ~ N(x . m + b, exp(x . g + c)^2)`, has no closed form, so its reference is a
float64 `scipy.optimize.minimize` of the same NLL written in NumPy. Tolerances:

- `RTOL_OPTIMUM = 1e-6`: the scipy fit stops at a gradient norm of ~1e-9 (the parameters are then
  within ~1e-9 standard errors of the optimum), and ours (Newton, `refine`) within 1e-10 standard
  errors; 1e-6 relative leaves room for either without hiding a wrong likelihood, which moves the
  estimates by a good fraction of a standard error (~1e-2 relative here).
- `RTOL_HESSIAN = 1e-4`: the reference Hessian is a second-order finite difference of the NLL
  (`statsmodels.tools.numdiff.approx_hess3`, accurate to ~1e-7 relative on these scales); our
  standard errors come from the exact (automatic) Hessian.
- `RTOL_ADAPT = 1e-9`: `adapt` is an exact float64 affine map; the float64 round trip through it
  costs a few hundred ulps.
"""

import math
import warnings

import keras
import numpy as np
import pytest
from scipy import optimize, stats
from statsmodels.tools.numdiff import approx_hess3

import keras_mle
from keras_mle.inference import InferenceWarning
from keras_mle.models.gaussian_regression import GaussianRegression
from keras_mle.models.heteroscedastic_regression import (
    ExtendedAdaptation,
    HeteroscedasticRegression,
)

RTOL_OPTIMUM = 1e-6
RTOL_HESSIAN = 1e-4
RTOL_ADAPT = 1e-9

TRUE = {"m": np.array([2.0, -1.0]), "b": 0.5, "g": np.array([0.4, -0.3]), "c": -0.8}


def synthetic(n=600, seed=3):
    """Two features on unequal scales; the noise SD `exp(x . g + c)` spans ~0.1 to ~2."""
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.uniform(0.0, 4.0, n), rng.normal(1.0, 1.5, n)])
    sigma = np.exp(x @ TRUE["g"] + TRUE["c"])
    y = x @ TRUE["m"] + TRUE["b"] + sigma * rng.normal(size=n)
    return x, y


def incomes(n=1000, seed=0):
    """Incomes in dollars (lognormal, median 40,000) and spending whose noise grows with them."""
    rng = np.random.default_rng(seed)
    income = rng.lognormal(math.log(40_000.0), 0.6, n)
    log_sigma = math.log(300.0) + math.log(20.0) * (income - 5_000.0) / 150_000.0
    spending = 2_000.0 + 0.6 * income + np.exp(log_sigma) * rng.normal(size=n)
    return income[:, None], spending


def nll(theta, x, y):
    """The total NLL over `theta = [m..., b, g..., c]`, in NumPy float64."""
    k = x.shape[1]
    m, b, g, c = theta[:k], theta[k], theta[k + 1 : 2 * k + 1], theta[2 * k + 1]
    return -np.sum(stats.norm.logpdf(y, x @ m + b, np.exp(x @ g + c)))


def nll_gradient(theta, x, y):
    k = x.shape[1]
    m, b, g, c = theta[:k], theta[k], theta[k + 1 : 2 * k + 1], theta[2 * k + 1]
    r = y - x @ m - b
    inverse_variance = np.exp(-2.0 * (x @ g + c))
    d_mean = -r * inverse_variance
    d_log_sigma = 1.0 - r**2 * inverse_variance
    return np.concatenate([x.T @ d_mean, [d_mean.sum()], x.T @ d_log_sigma, [d_log_sigma.sum()]])


def scipy_fit(x, y):
    """The float64 MLE by BFGS with the analytic gradient, from the OLS fit."""
    design = np.column_stack([x, np.ones(len(x))])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    rss = np.sum((y - design @ beta) ** 2)
    start = np.concatenate([beta, np.zeros(x.shape[1]), [0.5 * math.log(rss / len(y))]])
    result = optimize.minimize(
        nll, start, args=(x, y), jac=nll_gradient, method="BFGS", options={"gtol": 1e-9}
    )
    assert np.linalg.norm(nll_gradient(result.x, x, y)) < 1e-6
    return result.x


def flat(params):
    return np.concatenate([np.ravel(params[name]) for name in ("m", "b", "g", "c")])


def fitted(x, y, **kwargs):
    """A float64 model at its optimum: the constant-variance start, then Newton (`refine`)."""
    model = HeteroscedasticRegression(dtype="float64", **kwargs)
    model.start_from_ols(x, y)
    report = model.refine(x, y)
    assert report.converged
    return model


def fit_recipe(x, y, *, seed, steps=300, learning_rate=0.05):
    """The documented recipe: adapt, full-batch Adam(0.05) for 300 steps, then refine."""
    keras.utils.set_random_seed(seed)
    model = HeteroscedasticRegression().adapt(x, y)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), jit_compile=False)
    batches = keras_mle.data.epoch_dataset(
        *model.check_data(x, y), batch_size=len(x), repeats=steps
    )
    model.fit(batches, epochs=1, steps_per_epoch=1, shuffle=False, verbose=0)
    # A float32 model stores its working parameters to ~6e-8: refine stalls at ~1e-5 standard
    # errors from the optimum, far inside inference's own tolerance (1e-3).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InferenceWarning)
        model.refine(x, y, tol=1e-4)
    return model


@pytest.fixture(scope="module")
def data():
    return synthetic()


@pytest.fixture(scope="module")
def reference(data):
    return scipy_fit(*data)


@pytest.fixture(scope="module")
def model(data):
    return fitted(*data)


def test_fit_matches_scipy_minimize(model, reference):
    np.testing.assert_allclose(flat(model.params), reference, rtol=RTOL_OPTIMUM)


def test_truth_within_three_standard_errors(model, data):
    result = keras_mle.inference(model, *data)
    assert result.converged
    for name in ("m", "b", "g", "c"):
        z = (result.params[name] - TRUE[name]) / result.stderr[name]
        assert np.all(np.abs(z) < 3.0), (name, z)


def test_standard_errors_match_numerical_hessian(model, data, reference):
    result = keras_mle.inference(model, *data)
    hessian = approx_hess3(reference, nll, args=data)
    expected = np.sqrt(np.diag(np.linalg.inv(hessian)))
    np.testing.assert_allclose(flat(result.stderr), expected, rtol=RTOL_HESSIAN)
    assert result.loglik == pytest.approx(-nll(reference, *data), rel=1e-12)


def test_inference_after_adapt_equals_inference_without(model, data):
    x, y = data
    adapted = HeteroscedasticRegression(dtype="float64").adapt(x, y)
    adapted.set_params(model.params)
    plain, through = keras_mle.inference(model, x, y), keras_mle.inference(adapted, x, y)
    np.testing.assert_allclose(flat(through.params), flat(plain.params), rtol=RTOL_ADAPT)
    np.testing.assert_allclose(flat(through.stderr), flat(plain.stderr), rtol=RTOL_ADAPT)
    np.testing.assert_allclose(through.covariance, plain.covariance, rtol=1e-8, atol=1e-15)
    assert through.loglik == pytest.approx(plain.loglik, rel=1e-12)
    # The reported per-sample loss is the user-unit NLL (the working NLL plus log(y_scale)).
    np.testing.assert_allclose(
        adapted.per_sample_loss(x, y), model.per_sample_loss(x, y), rtol=1e-10
    )


def test_adaptation_round_trip_and_log_scale_map(data):
    x, y = data
    adaptation = ExtendedAdaptation.from_data(x, y)
    roles = HeteroscedasticRegression.parameter_roles
    user = {name: np.asarray(value, np.float64) for name, value in TRUE.items()}
    working = adaptation.to_working(user, roles)
    back = adaptation.to_user(working, roles)
    for name in user:
        np.testing.assert_allclose(back[name].numpy(), user[name], rtol=1e-12)
    # log sigma(x) in user units is log(y_scale) + the working log-scale of z(x).
    z, _ = adaptation.transform(x, dtype="float64")
    working_log_sigma = z.numpy() @ working["g"].numpy() + working["c"].numpy()
    np.testing.assert_allclose(
        working_log_sigma + math.log(adaptation.y_scale), x @ TRUE["g"] + TRUE["c"], rtol=1e-12
    )


def test_likelihood_ratio_test_of_constant_variance(model, data):
    x, y = data
    constant = GaussianRegression(dtype="float64")
    constant(x[:2])
    constant.set_params(constant.closed_form(x, y))
    test = keras_mle.likelihood_ratio_test(model, constant, x, y)
    design = np.column_stack([x, np.ones(len(x))])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    residuals = y - design @ beta
    loglik_constant = np.sum(stats.norm.logpdf(residuals, 0.0, np.sqrt(np.mean(residuals**2))))
    statistic = 2.0 * (-nll(flat(model.params), x, y) - loglik_constant)
    assert test.df == 2  # one log-scale slope per feature
    assert test.statistic == pytest.approx(statistic, rel=1e-10)
    assert test.pvalue == pytest.approx(stats.chi2.sf(statistic, 2), rel=1e-8)
    assert test.pvalue < 1e-10  # the noise does grow with x_0


def test_fixed_zero_log_scale_slopes_is_the_constant_variance_model(data):
    x, y = data
    restricted = fitted(x, y, fixed={"g": 0.0})
    gaussian = GaussianRegression().closed_form(x, y)
    np.testing.assert_allclose(restricted.params["m"], gaussian["m"], rtol=1e-9)
    assert float(np.exp(restricted.params["c"])) == pytest.approx(gaussian["sigma"], rel=1e-9)
    assert keras_mle.inference(restricted, x, y).fixed == ("g_0", "g_1")


def test_predict_distribution(model, data):
    x, _ = data
    params = model.params
    result = model.predict_distribution(x[:5], verbose=0)
    np.testing.assert_allclose(result["mean"], x[:5] @ params["m"] + params["b"], rtol=1e-12)
    np.testing.assert_allclose(result["sigma"], np.exp(x[:5] @ params["g"] + params["c"]))


def test_closed_form_is_none(data):
    assert HeteroscedasticRegression().closed_form(*data) is None


def test_recipe_converges_on_incomes_from_the_default_start():
    x, y = incomes(seed=0)
    model = fit_recipe(x, y, seed=0)
    result = keras_mle.inference(model, x, y)
    assert result.converged
    # float32 working parameters: ~1e-5 standard errors from the float64 optimum.
    reference = flat(fitted(x / 1e4, y / 1e4).params)  # the same fit in units of $10,000
    expected = reference * np.array([1.0, 1e4, 1e-4, 1.0]) + np.array([0, 0, 0, math.log(1e4)])
    np.testing.assert_allclose(flat(model.params), expected, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 6))
def test_recipe_converges_over_seeds(seed):
    x, y = incomes(seed=seed)
    assert keras_mle.inference(fit_recipe(x, y, seed=seed), x, y).converged


def test_saved_model_keeps_adaptation_and_parameters(tmp_path, data):
    x, y = data
    model = HeteroscedasticRegression(dtype="float64", initial_sigma=2.0).adapt(x, y)
    model.set_params({name: np.asarray(v) for name, v in TRUE.items()})
    path = tmp_path / "hetero.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.adaptation, ExtendedAdaptation)
    assert loaded.initial_sigma == 2.0
    np.testing.assert_allclose(flat(loaded.params), flat(model.params), rtol=1e-12)
    np.testing.assert_allclose(loaded.per_sample_loss(x, y), model.per_sample_loss(x, y))


def test_bad_input_is_refused_by_name(data):
    x, y = data
    with pytest.raises(ValueError, match="initial_sigma"):
        HeteroscedasticRegression(initial_sigma=0.0)
    with pytest.raises(ValueError, match="fixed"):
        HeteroscedasticRegression(fixed={"g": [0.0, 0.0, 0.0]}).start_from_ols(x, y)
    model = HeteroscedasticRegression(dtype="float64")
    model(x[:2])
    with pytest.raises(ValueError, match="feature"):
        model.predict_distribution(x[:, :1], verbose=0)
    with pytest.raises(ValueError, match="y"):
        model.start_from_ols(x, y[:-1])
