"""StudentTRegression against statsmodels' TLinearModel, scipy.stats.t.fit and scipy.optimize.

Tolerances:

- `RTOL_STATSMODELS = 1e-6`: statsmodels' `TLinearModel` (the same standard-t parametrisation:
  `[const, slopes..., df, scale]`) fitted by BFGS with numerical gradients to `gtol=1e-10`;
  both fits are then within ~1e-7 of the optimum relative to the parameters, so 1e-6 checks
  the likelihood without testing either optimizer's last digits. Its standard errors come from a
  numerical Hessian: 1e-4.
- `RTOL_SCIPY_FIT = 1e-4`: `scipy.stats.t.fit` is itself an optimizer (Nelder-Mead, `xtol=1e-4`
  and `ftol=1e-4` by default), so its `(df, loc, scale)` are only that close to the optimum.
- `RTOL_OPTIMUM = 1e-6`: a float64 `scipy.optimize.minimize` of the NLL with a fixed `df`, as
  for statsmodels.
"""

import math
import warnings

import keras
import numpy as np
import pytest
import statsmodels.api as sm
from scipy import optimize, special, stats
from statsmodels.miscmodels.tmodel import TLinearModel

import keras_mle
from keras_mle.inference import InferenceWarning
from keras_mle.models.student_t_regression import StudentTRegression

RTOL_STATSMODELS = 1e-6
RTOL_STATSMODELS_SE = 1e-4
RTOL_SCIPY_FIT = 1e-4
RTOL_OPTIMUM = 1e-6


def t_data(n=300, seed=0, df=4.0):
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.uniform(0.0, 3.0, n), rng.normal(0.0, 1.0, n)])
    y = x @ np.array([2.0, 1.0]) + 0.5 + 0.7 * rng.standard_t(df, n)
    return x, y


def fit_recipe(model, x, y, *, steps=300, learning_rate=0.05, seed=0):
    """The documented recipe: adapt, full-batch Adam(0.05) for `steps` steps, then refine."""
    keras.utils.set_random_seed(seed)
    model.adapt(x, y)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), jit_compile=False)
    batches = keras_mle.data.epoch_dataset(
        *model.check_data(x, y), batch_size=len(x), repeats=steps
    )
    model.fit(batches, epochs=1, steps_per_epoch=1, shuffle=False, verbose=0)
    report = model.refine(x, y)
    assert report.converged, report
    return model


def flat(params, names):
    return np.concatenate([np.ravel(params[name]) for name in names])


@pytest.fixture(scope="module")
def data():
    return t_data()


@pytest.fixture(scope="module")
def model(data):
    return fit_recipe(StudentTRegression(dtype="float64"), *data)


@pytest.fixture(scope="module")
def statsmodels_fit(data):
    x, y = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_model = TLinearModel(y, sm.add_constant(x))
        return t_model.fit(method="bfgs", disp=0, maxiter=5000, gtol=1e-10)


def test_matches_statsmodels_tlinearmodel(model, data, statsmodels_fit):
    # statsmodels: [const, x_0, x_1, df, scale]; here m, b, scale, df.
    ours = flat(model.params, ("b", "m", "df", "scale"))
    np.testing.assert_allclose(ours, statsmodels_fit.params, rtol=RTOL_STATSMODELS)
    result = keras_mle.inference(model, *data)
    assert result.converged
    assert result.loglik == pytest.approx(statsmodels_fit.llf, rel=1e-12)
    stderr = flat(result.stderr, ("b", "m", "df", "scale"))
    np.testing.assert_allclose(stderr, statsmodels_fit.bse, rtol=RTOL_STATSMODELS_SE)


def test_sample_loss_is_scipy_t_logpdf(model, data):
    x, y = data
    p = model.params
    expected = -stats.t.logpdf(y, p["df"], x @ p["m"] + p["b"], p["scale"])
    np.testing.assert_allclose(model.per_sample_loss(x, y), expected, rtol=1e-12)


def test_intercept_only_matches_scipy_t_fit():
    rng = np.random.default_rng(5)
    y = 3.0 + 1.5 * rng.standard_t(3.0, 400)
    x = rng.normal(size=400)  # its slope is fixed at 0: a location-scale t sample
    model = fit_recipe(StudentTRegression(dtype="float64", fixed={"m": 0.0}), x, y)
    df, loc, scale = stats.t.fit(y)
    assert float(model.params["df"]) == pytest.approx(df, rel=RTOL_SCIPY_FIT)
    assert float(model.params["b"]) == pytest.approx(loc, rel=RTOL_SCIPY_FIT)
    assert float(model.params["scale"]) == pytest.approx(scale, rel=RTOL_SCIPY_FIT)
    assert keras_mle.inference(model, x, y).fixed == ("m",)


def test_fixed_df_matches_scipy_minimize(data):
    x, y = data

    def nll(theta):
        loc = x @ theta[:2] + theta[2]
        return -np.sum(stats.t.logpdf(y, 4.0, loc, np.exp(theta[3])))

    start = np.array([1.0, 1.0, 0.0, 0.0])
    reference = optimize.minimize(nll, start, method="BFGS", options={"gtol": 1e-8}).x
    reference[3] = math.exp(reference[3])
    constant = fit_recipe(StudentTRegression(df=4.0, dtype="float64"), x, y)
    assert set(constant.params) == {"m", "b", "scale"}
    np.testing.assert_allclose(
        flat(constant.params, ("m", "b", "scale")), reference, rtol=RTOL_OPTIMUM
    )
    # The same model with df as a fixed parameter: the same fit, df listed as fixed.
    held = StudentTRegression(dtype="float64", fixed={"df": 4.0})
    held(x[:2])
    held.set_params(constant.params)
    result = keras_mle.inference(held, x, y)
    assert result.converged and result.fixed == ("df",)
    assert result.loglik == pytest.approx(keras_mle.inference(constant, x, y).loglik, rel=1e-12)


def test_robust_line_with_gross_outliers():
    rng = np.random.default_rng(11)
    n = 200
    x = rng.uniform(0.0, 10.0, n)
    y = 1.0 + 2.0 * x + 0.5 * rng.normal(size=n)
    outliers = np.argsort(x)[-10:]  # 5% of the rows, at the largest x, 40 units too low
    y[outliers] -= 40.0
    robust = fit_recipe(StudentTRegression(dtype="float64"), x, y)
    slope = float(robust.params["m"][0])
    stderr = float(keras_mle.inference(robust, x, y).stderr["m"][0])
    ols_slope = float(keras_mle.closed_form.ols(x, y)["m"][0])
    assert abs(slope - 2.0) < 3.0 * stderr < 0.1
    assert abs(ols_slope - 2.0) > 0.5  # OLS is pulled down by the outliers


def test_predict_distribution(model, data):
    x, _ = data
    p = model.params
    result = model.predict_distribution(x[:4], verbose=0)
    np.testing.assert_allclose(result["loc"], x[:4] @ p["m"] + p["b"], rtol=1e-12)
    np.testing.assert_allclose(result["scale"], p["scale"])
    np.testing.assert_allclose(result["df"], p["df"])
    variance = stats.t.var(p["df"], scale=p["scale"])
    np.testing.assert_allclose(result["sigma"], np.sqrt(variance), rtol=1e-12)
    assert np.all(
        np.isinf(StudentTRegression(df=2.0).predict_distribution(x[:2], verbose=0)["sigma"])
    )


def test_adapt_keeps_df_and_maps_scale(data):
    x, y = data
    model = StudentTRegression(dtype="float64", initial_df=7.0, initial_scale=0.5).adapt(x, y)
    # The working start is scale 0.5 in units of std(y), and df unchanged.
    assert float(model.params["df"]) == pytest.approx(7.0, rel=1e-12)
    assert float(model.params["scale"]) == pytest.approx(0.5 * np.std(y), rel=1e-12)


def test_loss_constant_matches_lgamma():
    # The normalisation at df = 1, scale = 1 is log(pi): the Cauchy density at 0 is 1 / pi.
    model = StudentTRegression(df=1.0, initial_scale=1.0, dtype="float64", b_initializer="zeros")
    x = np.zeros((1, 1))
    model(x)
    model.set_params({"m": [0.0]})
    assert model.per_sample_loss(x, np.zeros(1))[0] == pytest.approx(math.log(math.pi), rel=1e-14)
    assert special.gammaln(0.5) == pytest.approx(0.5 * math.log(math.pi))


def test_saved_model_keeps_df(tmp_path, data):
    x, y = data
    model = StudentTRegression(df=4.0, dtype="float64").adapt(x, y)
    path = tmp_path / "t.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.df == 4.0 and set(loaded.params) == {"m", "b", "scale"}
    np.testing.assert_allclose(loaded.per_sample_loss(x, y), model.per_sample_loss(x, y))


def test_bad_input_is_refused_by_name():
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="df"):
            StudentTRegression(df=bad)
    with pytest.raises(ValueError, match="initial_scale"):
        StudentTRegression(initial_scale=0.0)
    with pytest.raises(ValueError, match="initial_df"):
        StudentTRegression(initial_df=-2.0)
    with pytest.raises(ValueError, match="fixed"):
        StudentTRegression(df=4.0, fixed={"df": 4.0})
    with pytest.raises(ValueError, match="fixed"):
        StudentTRegression(fixed={"df": 0.0})(np.zeros((2, 1)))


def test_gaussian_data_df_drifts_and_inference_says_so():
    # On Gaussian data the t likelihood keeps rising with df: no finite MLE, and inference
    # must not report confident numbers for it.
    rng = np.random.default_rng(2)
    x = rng.normal(size=200)
    y = 1.0 + x + 0.1 * rng.normal(size=200)
    model = StudentTRegression(dtype="float64")
    model(x[:2])
    model.set_params({"m": [1.0], "b": 1.0, "scale": 0.1, "df": 1e8})
    with pytest.warns(InferenceWarning):
        result = keras_mle.inference(model, x, y)
    assert not result.converged
