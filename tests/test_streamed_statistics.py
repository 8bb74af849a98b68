"""`adapt` and `inference` on a batched `tf.data.Dataset`, against the same data in memory.

Both sides are float64 from the same rows: the streamed side adds per-batch sums (of the loss,
gradient, Hessian and sandwich meat) and combines per-batch moments, where the in-memory side
takes one sum or one QR. They differ by the order of float64 additions only, so the tolerances
are a few hundred ulps:

- `RTOL = 1e-10` for estimates, standard errors and the log-likelihood (measured: <= 3e-14;
  the sandwich's extra products give the largest differences);
- `ADAPT_RTOL = 1e-12` for the adaptation's arrays (measured: <= 2e-15 for features with an
  offset 300 times their spread and correlation 0.95; the whitening comes from a QR of stacked
  batch factors, as accurate as the QR of the whole centred matrix).

Independent references: NumPy's weighted least squares on the repeated-rows model (`s^2
(X'WX)^-1`, White's sandwich) for `LinearRegression`.
"""

import numpy as np
import pytest
import tensorflow as tf

import keras_mle
from keras_mle.inference import InferenceWarning
from keras_mle.models.adaptation import Adaptation, DataMoments

RTOL = 1e-10
ADAPT_RTOL = 1e-12
BATCH = 37  # 150 rows: four full batches and an uneven last one of 2


def regression_data(n=150, seed=0):
    """Two features (offset ~300 and ~-20, correlated), heteroscedastic `y`, integer weights.

    The weights include a whole batch of zeros (rows 37-73), which the streamed side skips.
    """
    rng = np.random.default_rng(seed)
    common = rng.normal(size=n)
    x = np.column_stack([300.0 + 50.0 * common, -20.0 + 0.5 * (common + 0.3 * rng.normal(size=n))])
    y = 100.0 + 2.0 * (x[:, 0] - 300.0) - 30.0 * (x[:, 1] + 20.0)
    y = y + rng.normal(0.0, 1.0 + np.abs(common) * 3.0)
    w = rng.integers(0, 4, n).astype(np.float64)
    w[BATCH : 2 * BATCH] = 0.0
    return x, y, w


def dataset(*arrays, batch=BATCH):
    return tf.data.Dataset.from_tensor_slices(arrays if len(arrays) > 1 else arrays[0]).batch(batch)


def flat(tree):
    return np.concatenate([np.ravel(np.asarray(v, np.float64)) for v in tree.values()])


def assert_same_result(streamed, in_memory, rtol=RTOL):
    np.testing.assert_allclose(flat(streamed.params), flat(in_memory.params), rtol=rtol)
    np.testing.assert_allclose(flat(streamed.stderr), flat(in_memory.stderr), rtol=rtol)
    # Off-diagonal terms that vanish at the optimum (mu and sigma) are compared to the diagonal.
    scale = np.nanmax(np.abs(np.diag(in_memory.covariance)))
    np.testing.assert_allclose(
        streamed.covariance, in_memory.covariance, rtol=rtol, atol=rtol * scale
    )
    np.testing.assert_allclose(streamed.loglik, in_memory.loglik, rtol=rtol)
    assert streamed.nobs == in_memory.nobs
    assert streamed.df_resid == in_memory.df_resid
    assert streamed.param_names == in_memory.param_names
    assert streamed.converged and in_memory.converged


@pytest.fixture(scope="module")
def data():
    return regression_data()


@pytest.fixture(scope="module")
def linear(data):
    x, y, w = data
    model = keras_mle.LinearRegression(dtype="float64").adapt(x, y)
    keras_mle.refine(model, x, y, w)
    return model


# ---------------------------------------------------------------------------- adapt
def assert_same_adaptation(streamed, in_memory):
    for name in ("y_shift", "y_scale", "x_shift", "x_matrix"):
        a, b = getattr(streamed, name), getattr(in_memory, name)
        if b is None:
            assert a is None
            continue
        scale = np.max(np.abs(b))
        np.testing.assert_allclose(a, b, rtol=0, atol=ADAPT_RTOL * scale, err_msg=name)


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (keras_mle.LinearRegression, {}),
        (keras_mle.GaussianRegression, {}),
        (keras_mle.LinearRegression, {"fixed": {"m": [0.0, None]}}),  # a column held out
        (keras_mle.LinearRegression, {"fixed": {"b": 1.0}}),  # uncentred
    ],
)
def test_adapt_on_a_dataset_is_adapt_on_the_arrays(data, cls, kwargs):
    x, y, w = data
    in_memory = cls(dtype="float64", **kwargs).adapt(x, y).adaptation
    streamed = cls(dtype="float64", **kwargs).adapt(dataset(x, y, w)).adaptation
    assert_same_adaptation(streamed, in_memory)


def test_adapt_a_sample_dataset_with_a_large_offset():
    # Values near 1e6 with spread 3: a sum of raw squares would lose ~12 digits here.
    samples = np.random.default_rng(1).normal(1e6, 3.0, 301)
    in_memory = keras_mle.GaussianMLE(dtype="float64").adapt(samples).adaptation
    model = keras_mle.GaussianMLE(dtype="float64").adapt(dataset(samples, batch=64))
    assert_same_adaptation(model.adaptation, in_memory)
    assert model.built


def test_moments_of_batches_smaller_than_the_feature_count():
    # Batches of 2 rows and 3 features: each batch's factor is (2, 3), rank deficient alone.
    rng = np.random.default_rng(2)
    x = rng.normal(size=(41, 3)) @ np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 2.0]])
    y = rng.normal(size=41)
    moments = DataMoments()
    for start in range(0, 41, 2):
        moments.update(x[start : start + 2], y[start : start + 2])
    assert moments.rows == 41 and moments.count == 41.0
    assert_same_adaptation(Adaptation.from_moments(moments), Adaptation.from_data(x, y))


def test_weighted_moments_are_those_of_repeated_rows():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(30, 2)) + 5.0, rng.normal(size=30)
    w = rng.integers(0, 4, 30)
    weighted = DataMoments()
    for start in range(0, 30, 7):
        part = slice(start, start + 7)
        weighted.update(x[part], y[part], w[part])
    expected = Adaptation.from_data(np.repeat(x, w, axis=0), np.repeat(y, w))
    assert weighted.count == w.sum()
    assert_same_adaptation(Adaptation.from_moments(weighted), expected)


def test_adapt_on_a_dataset_refuses_what_the_arrays_refuse(data):
    x, y, _ = data
    collinear = np.column_stack([x[:, 0], 2.0 * x[:, 0] + 1.0])
    with pytest.raises(ValueError, match=r"column\(s\) \[1\] are constant or linear"):
        keras_mle.LinearRegression(dtype="float64").adapt(dataset(collinear, y))
    with pytest.raises(ValueError, match="samples are constant"):
        keras_mle.GaussianMLE(dtype="float64").adapt(dataset(np.full(50, 3.0)))
    with pytest.raises(ValueError, match="y: with a dataset"):
        keras_mle.LinearRegression(dtype="float64").adapt(dataset(x, y), y)
    with pytest.raises(ValueError, match="batch it first"):
        keras_mle.LinearRegression(dtype="float64").adapt(
            tf.data.Dataset.from_tensor_slices((x, y))
        )


# ---------------------------------------------------------------------------- inference
def numpy_wls(x, y, w):
    """Weighted least squares on repeated rows: params, s^2 (X'WX)^-1 and White's HC0."""
    design = np.column_stack([x, np.ones(len(x))])
    gram = design.T @ (w[:, None] * design)
    beta = np.linalg.solve(gram, design.T @ (w * y))
    e = y - design @ beta
    n, p = w.sum(), design.shape[1]
    bread = np.linalg.inv(gram)
    nonrobust = (w @ e**2) / (n - p) * bread
    hc0 = bread @ (design.T @ ((w * e**2)[:, None] * design)) @ bread
    return beta, nonrobust, hc0


@pytest.mark.parametrize("cov_type", ["nonrobust", "HC0"])
def test_streamed_ols_matches_numpy(data, linear, cov_type):
    x, y, w = data
    result = keras_mle.inference(linear, dataset(x, y, w), cov_type=cov_type)
    beta, nonrobust, hc0 = numpy_wls(x, y, w)
    np.testing.assert_allclose(flat(result.params), beta, rtol=1e-9)
    expected = nonrobust if cov_type == "nonrobust" else hc0
    np.testing.assert_allclose(result.covariance, expected, rtol=1e-9)
    assert result.nobs == w.sum()


@pytest.mark.parametrize("cov_type", ["nonrobust", "HC1", "HC3"])
def test_linear_regression_streamed_equals_in_memory(data, linear, cov_type):
    x, y, w = data
    in_memory = keras_mle.inference(linear, x, y, sample_weight=w, cov_type=cov_type)
    streamed = keras_mle.inference(linear, dataset(x, y, w), cov_type=cov_type)
    assert_same_result(streamed, in_memory)


@pytest.mark.parametrize(
    "convention, cov_type", [("mle", "nonrobust"), ("mle", "HC0"), ("ols", "HC2")]
)
def test_gaussian_regression_streamed_equals_in_memory(data, convention, cov_type):
    x, y, w = data
    model = keras_mle.GaussianRegression(dtype="float64").adapt(x, y)
    exact = keras_mle.closed_form.ols(x, y, w)
    model.set_params({name: exact[name] for name in ("m", "b", "sigma")})
    kwargs = {"convention": convention, "cov_type": cov_type}
    in_memory = keras_mle.inference(model, x, y, sample_weight=w, **kwargs)
    assert_same_result(keras_mle.inference(model, dataset(x, y, w), **kwargs), in_memory)


def test_gaussian_mle_streamed_equals_in_memory():
    rng = np.random.default_rng(4)
    samples, w = rng.normal(5.0, 2.0, 131), rng.integers(1, 4, 131).astype(np.float64)
    model = keras_mle.GaussianMLE(dtype="float64").adapt(samples)
    model.set_params(keras_mle.closed_form.gaussian_mle(samples, w))
    in_memory = keras_mle.inference(model, samples, sample_weight=w)
    streamed = keras_mle.inference(model, dataset(samples, w, batch=40))
    assert_same_result(streamed, in_memory)
    # Without weights in the elements every row counts once (and the weighted optimum is off).
    with pytest.warns(InferenceWarning, match="Not converged"):
        unweighted = keras_mle.inference(model, dataset(samples, batch=40))
    with pytest.warns(InferenceWarning, match="Not converged"):
        reference = keras_mle.inference(model, samples)
    assert unweighted.nobs == reference.nobs == 131.0
    np.testing.assert_allclose(unweighted.loglik, reference.loglik, rtol=RTOL)


def test_fixed_components_streamed_equal_in_memory(data):
    x, y, w = data
    model = keras_mle.LinearRegression(dtype="float64", fixed={"m": [2.0, None]}).adapt(x, y)
    keras_mle.refine(model, x, y, w)
    in_memory = keras_mle.inference(model, x, y, sample_weight=w)
    streamed = keras_mle.inference(model, dataset(x, y, w))
    assert streamed.fixed == in_memory.fixed == ("m_0",)
    np.testing.assert_allclose(flat(streamed.stderr), flat(in_memory.stderr), rtol=RTOL)
    np.testing.assert_allclose(streamed.loglik, in_memory.loglik, rtol=RTOL)


# ---------------------------------------------------------------------------- strategy
def test_under_a_mirrored_strategy(data, linear, mirrored_strategy):
    x, y, w = data
    with mirrored_strategy.scope():
        model = keras_mle.LinearRegression(dtype="float64")
    model.adapt(dataset(x, y, w))
    assert model.distribute_strategy is mirrored_strategy
    assert_same_adaptation(
        model.adaptation, keras_mle.LinearRegression(dtype="float64").adapt(x, y).adaptation
    )
    model.set_params(linear.params)
    in_memory = keras_mle.inference(linear, x, y, sample_weight=w, cov_type="HC1")
    streamed = keras_mle.inference(model, dataset(x, y, w), cov_type="HC1")
    assert_same_result(streamed, in_memory)  # each row read once: nobs is not doubled


def test_a_distributed_dataset_is_refused(data, linear, mirrored_strategy):
    x, y, _ = data
    distributed = mirrored_strategy.experimental_distribute_dataset(dataset(x, y))
    with pytest.raises(TypeError, match="pass the tf.data.Dataset itself"):
        keras_mle.inference(linear, distributed)


# ---------------------------------------------------------------------------- clear errors
def test_streamed_inference_argument_errors(data, linear):
    x, y, w = data
    stream = dataset(x, y)
    with pytest.raises(ValueError, match="y: with a dataset"):
        keras_mle.inference(linear, stream, y)
    with pytest.raises(ValueError, match="sample_weight: with a dataset"):
        keras_mle.inference(linear, stream, sample_weight=w)
    with pytest.raises(ValueError, match="cov_type='cluster' needs a group label per row"):
        keras_mle.inference(linear, stream, cov_type="cluster", groups=np.arange(len(x)) % 3)
    with pytest.raises(TypeError, match="from_generator"):
        keras_mle.inference(linear, (row for row in x))
    with pytest.raises(ValueError, match="batch it first"):
        keras_mle.inference(linear, tf.data.Dataset.from_tensor_slices((x, y)))
    with pytest.raises(ValueError, match="the dataset is empty"):
        keras_mle.inference(linear, dataset(x, y).take(0))
    with pytest.raises(ValueError, match="y is required"):
        keras_mle.inference(linear, dataset(x))
    bad = y.copy()
    bad[80] = np.nan  # in the third batch (rows 74-110)
    with pytest.raises(ValueError, match=r"batch 2: .*NaN"):
        keras_mle.inference(linear, dataset(x, bad))
    with pytest.raises(ValueError, match="no row with a positive weight"):
        keras_mle.inference(linear, dataset(x, y, np.zeros(len(x))))


def test_a_streamed_result_refuses_what_needs_the_rows(data, linear):
    x, y, w = data
    result = keras_mle.inference(linear, dataset(x, y, w))
    assert result.data is None  # no rows kept
    result.conf_int()  # Wald intervals need only the covariance
    with pytest.raises(ValueError, match="method='profile' re-optimises"):
        result.conf_int(method="profile")
    for name in ("resid", "fittedvalues", "rsquared"):
        with pytest.raises(ValueError, match="computed from a dataset"):
            getattr(result, name)
    with pytest.raises(ValueError, match="computed from a dataset"):
        result.get_prediction(x[:2])


def test_likelihood_ratio_test_refuses_a_dataset_read_two_ways():
    x, y = keras_mle.data.noisy_line(n=40, seed=0)
    regression = keras_mle.GaussianRegression()
    regression(x[:2])
    sample = keras_mle.GaussianMLE()
    sample(y[:2])
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)
    with pytest.raises(ValueError, match="^x: a dataset serves both models"):
        keras_mle.likelihood_ratio_test(regression, sample, dataset)


def test_a_stream_of_constant_batches_is_not_a_constant_sample():
    # Sorted data: each batch of 4 is constant, the whole sample is not (its MLE exists).
    samples = np.repeat([1.0, 2.0, 4.0], 4)
    model = keras_mle.GaussianMLE(dtype="float64")
    model.adapt(tf.data.Dataset.from_tensor_slices(samples).batch(4))
    model.set_params({"mu": samples.mean(), "sigma": samples.std()})
    streamed = keras_mle.inference(model, tf.data.Dataset.from_tensor_slices(samples).batch(4))
    in_memory = keras_mle.inference(model, samples)
    np.testing.assert_allclose(streamed.bse["mu"], in_memory.bse["mu"], rtol=1e-12)
