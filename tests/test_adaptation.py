"""`Adaptation`, the float64 affine map of `adapt`: exact inverses, whitening, and its promise.

The promise (see `keras_mle/models/adaptation.py`): after `adapt`, the squared-error Hessian in
the working coordinates is exactly `2 I`, so one full-batch SGD(0.5) step solves least squares
however badly scaled or correlated the features are. Everything here is float64 arithmetic on
well-conditioned maps, so the tolerances are a few thousand ulps (1e-12 to 1e-10).
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import fit_steps

import keras_mle
from keras_mle import closed_form
from keras_mle.models.adaptation import Adaptation

REGRESSION_ROLES = {"m": "slope", "b": "intercept", "sigma": "scale"}
SAMPLE_ROLES = {"mu": "intercept", "sigma": "scale"}
#: Round trips: two affine maps, each a handful of float64 operations on a matrix of condition
#: number ~30 (the correlated columns below), so errors stay within ~1e-14 relative.
ROUND_TRIP_RTOL = 1e-12
#: Whitening: z = (x - mean) @ sqrt(n) R^-1 from a float64 QR; z.T z / n is I to ~1e-14.
WHITENING_ATOL = 1e-10


def regression(k, n=120, seed=0):
    """Features in the hundreds and tens, of unequal spreads, correlated (~0.95) when `k > 1`.

    `y = 100 + (x - offsets) @ slopes` plus N(0, 5^2): the targets have mean ~100 and spread
    ~50, so that even unscaled (`adapt_targets = False`) they keep float64's precision.
    """
    rng = np.random.default_rng(seed)
    common = rng.normal(size=n)
    offsets = np.array([300.0, -20.0, 5.0])[:k]
    spreads = np.array([50.0, 0.5, 3.0])[:k]
    slopes = np.array([2.0, -300.0, 7.0])[:k]
    columns = [common] + [common + 0.3 * rng.normal(size=n) for _ in range(k - 1)]
    x = offsets + spreads * np.column_stack(columns)
    y = 100.0 + (x - offsets) @ slopes + rng.normal(0.0, 5.0, n)
    return (x[:, 0] if k == 1 else x), y


def gaussian_sample(n=500, seed=2):
    return np.random.default_rng(seed).normal(50.0, 3.0, n)


SHAPES = {"k=1": (1, False), "k=1 column": (1, True), "k=3": (3, False)}


@pytest.fixture(params=list(SHAPES))
def data(request):
    k, column = SHAPES[request.param]
    x, y = regression(k)
    return (x[:, None] if column else x), y, k


def signed(rng, size=None, low=0.5, high=2.0):
    """Random magnitudes in [low, high) with random signs: no component near 0."""
    return rng.uniform(low, high, size) * rng.choice([-1.0, 1.0], size)


def regression_params(rng, k):
    """NumPy float64 values (a Python float would go through float32: see the test below)."""
    sigma = np.float64(rng.uniform(0.1, 5.0))
    return {"m": signed(rng, k), "b": 10.0 * signed(rng), "sigma": sigma}


def assert_params_close(got, expected, rtol):
    assert set(got) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(np.asarray(got[name]), value, rtol=rtol, atol=0, err_msg=name)


class UnscaledTargets(keras_mle.LinearRegression):
    """A least-squares model whose targets `adapt` must leave alone (as for 0/1 targets)."""

    adapt_targets = False


# ---------------------------------------------------------------- round trips
def test_regression_round_trips(data):
    x, y, k = data
    adaptation = Adaptation.from_data(x, y)
    assert adaptation.has_features and adaptation.x_matrix.shape == (k, k)
    rng = np.random.default_rng(1)
    for _ in range(5):
        params = regression_params(rng, k)
        user = adaptation.to_user(params, REGRESSION_ROLES)
        working = adaptation.to_working(params, REGRESSION_ROLES)
        assert all(value.dtype == "float64" for value in {**user, **working}.values())
        assert_params_close(adaptation.to_working(user, REGRESSION_ROLES), params, ROUND_TRIP_RTOL)
        assert_params_close(adaptation.to_user(working, REGRESSION_ROLES), params, ROUND_TRIP_RTOL)


def test_sample_round_trips():
    # (Centred at 50 with spread 3: a working -> user -> working round trip loses about
    # |y_shift| / y_scale ulps to the shift, so a sample at 1e6 with spread 0.01 could not
    # keep 1e-12; test_float64.py fits such samples.)
    samples = gaussian_sample()
    adaptation = Adaptation.from_data(samples)
    assert not adaptation.has_features
    rng = np.random.default_rng(3)
    for _ in range(5):
        working = {"mu": signed(rng), "sigma": np.float64(rng.uniform(0.1, 5.0))}
        user = {"mu": 50.0 + signed(rng), "sigma": np.float64(rng.uniform(1.0, 5.0))}
        there = adaptation.to_user(working, SAMPLE_ROLES)
        back = adaptation.to_working(user, SAMPLE_ROLES)
        assert_params_close(adaptation.to_working(there, SAMPLE_ROLES), working, ROUND_TRIP_RTOL)
        assert_params_close(adaptation.to_user(back, SAMPLE_ROLES), user, ROUND_TRIP_RTOL)


def test_python_floats_are_mapped_in_float64():
    # tf.cast(0.1, tf.float64) converts 0.1 to a float32 tensor first: 0.10000000149.
    adaptation = Adaptation.from_data(gaussian_sample())
    user = adaptation.to_user({"mu": 0.1, "sigma": 0.1}, SAMPLE_ROLES)
    working = adaptation.to_working({"mu": 50.1, "sigma": 0.3}, SAMPLE_ROLES)
    shift, scale = adaptation.y_shift, adaptation.y_scale
    assert float(user["mu"]) == pytest.approx(shift + scale * 0.1, rel=1e-15)
    assert float(user["sigma"]) == pytest.approx(scale * 0.1, rel=1e-15)
    assert float(working["mu"]) == pytest.approx((50.1 - shift) / scale, rel=1e-12)
    assert float(working["sigma"]) == pytest.approx(0.3 / scale, rel=1e-15)


def test_config_round_trips_through_json(data):
    x, y, _ = data
    adaptation = Adaptation.from_data(x, y)
    restored = Adaptation.from_config(json.loads(json.dumps(adaptation.get_config())))
    assert restored.get_config() == adaptation.get_config()
    for a, b in zip(restored.transform(x, y), adaptation.transform(x, y), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


# ---------------------------------------------------------------- whitening
def test_transform_centres_and_whitens(data):
    x, y, k = data
    adaptation = Adaptation.from_data(x, y)
    z, t = adaptation.transform(x, y)
    assert z.dtype == t.dtype == "float64"
    assert z.shape == x.shape  # a 1-D x stays 1-D
    z = z.numpy().reshape(len(x), k)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=WHITENING_ATOL)
    np.testing.assert_allclose(z.T @ z / len(z), np.eye(k), atol=WHITENING_ATOL)
    # The QR's R is given a positive diagonal, so each z_j keeps the direction of x_j.
    assert np.all(np.diag(adaptation.x_matrix) > 0)
    t = t.numpy()
    np.testing.assert_allclose([t.mean(), np.mean(t**2)], [0.0, 1.0], atol=WHITENING_ATOL)


def test_transform_standardises_a_sample():
    samples = gaussian_sample()
    t, none = Adaptation.from_data(samples).transform(samples)
    assert none is None
    t = t.numpy()
    np.testing.assert_allclose([t.mean(), np.mean(t**2)], [0.0, 1.0], atol=WHITENING_ATOL)


# ---------------------------------------------------------------- the Hessian is 2 I
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_squared_error_hessian_is_two_identity_in_working_coordinates(data, dtype):
    # The derivatives are float64 whatever the model's dtype; least squares' Hessian does not
    # depend on the parameters, so the float32 variables change nothing.
    x, y, k = data
    model = keras_mle.LinearRegression(dtype=dtype).adapt(x, y)
    derivatives = model.likelihood_derivatives(x, y)
    n, y_scale = len(x), model.adaptation.y_scale
    assert derivatives.names == (("m",) if k == 1 else tuple(f"m_{i}" for i in range(k))) + ("b",)
    # `hessian`: of the total user-unit loss (y_scale^2 times the working one), in working
    # coordinates; the working loss sum (t - z theta - c)^2 has Hessian 2 n I.
    hessian = derivatives.hessian / (n * y_scale**2)
    np.testing.assert_allclose(hessian, 2 * np.eye(k + 1), atol=1e-10)
    # `information`: the same Hessian in user coordinates, that of sum (y - x m - b)^2.
    x1 = np.column_stack([np.reshape(x, (n, k)), np.ones(n)])
    np.testing.assert_allclose(derivatives.information, 2 * x1.T @ x1, rtol=1e-9)


# ---------------------------------------------------------------- adapt_targets
def test_models_that_do_not_adapt_targets_keep_them_as_given(data):
    x, y, k = data
    model = UnscaledTargets(dtype="float64").adapt(x, y)
    adaptation = model.adaptation
    assert (adaptation.y_shift, adaptation.y_scale) == (0.0, 1.0)
    assert adaptation.get_config() == Adaptation.from_data(x, y, scale_targets=False).get_config()
    # The features are whitened all the same: the same x_shift and x_matrix as a scaled fit.
    scaled = keras_mle.LinearRegression(dtype="float64").adapt(x, y).adaptation
    np.testing.assert_array_equal(adaptation.x_shift, scaled.x_shift)
    np.testing.assert_array_equal(adaptation.x_matrix, scaled.x_matrix)
    _, t = adaptation.transform(x, y)
    np.testing.assert_array_equal(t.numpy(), y)
    # With t = y unscaled, the Hessian of the total loss in working coordinates is 2 n I.
    derivatives = model.likelihood_derivatives(x, y)
    np.testing.assert_allclose(derivatives.hessian / len(x), 2 * np.eye(k + 1), atol=1e-10)


def test_a_sample_model_that_cannot_rescale_refuses_adapt():
    class UnscaledSample(keras_mle.GaussianMLE):
        adapt_targets = False

    with pytest.raises(NotImplementedError, match="does not support adapt"):
        UnscaledSample().adapt(np.arange(10.0))


def test_roles_are_checked():
    x, y = regression(3)
    adaptation = Adaptation.from_data(x, y)
    with pytest.raises(NotImplementedError, match="no.* given for \\['sigma'\\]"):
        adaptation.check_roles({"m": "slope", "b": "intercept"}, ["m", "b", "sigma"])
    with pytest.raises(ValueError, match="must be one of"):
        adaptation.check_roles({"m": "slope", "b": "offset"}, ["m", "b"])
    with pytest.raises(ValueError, match="needs features"):
        Adaptation.from_data(y).check_roles({"m": "slope"}, ["m"])


# ---------------------------------------------------------------- one step solves least squares
@pytest.mark.parametrize("cls", [keras_mle.LinearRegression, UnscaledTargets])
def test_one_sgd_step_after_adapt_is_the_ols_fit(data, cls):
    x, y, _ = data
    model = cls(dtype="float64").adapt(x, y)
    fit_steps(model, x, y, optimizer=keras.optimizers.SGD(0.5), steps=1)
    reference = closed_form.ols(x, y)
    # Float64 OLS by two routes (the model's QR whitening, NumPy's lstsq of the centred design).
    np.testing.assert_allclose(model.params["m"], reference["m"], rtol=1e-10)
    assert model.params["b"] == pytest.approx(reference["b"], rel=1e-10)


def test_adapt_of_a_dataset_refuses_weights_it_would_not_use():
    x = np.linspace(0.0, 1.0, 8, dtype=np.float32)[:, None]
    dataset = tf.data.Dataset.from_tensor_slices((x, 2 * x[:, 0])).batch(4)
    model = keras_mle.LinearRegression()
    with pytest.raises(ValueError, match=r"^sample_weight: adapt\(dataset\) reads the dataset"):
        model.adapt(dataset, sample_weight=np.ones(8))


def test_weighted_adaptation_is_that_of_the_rows_repeated():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(30, 2)), rng.normal(size=30)
    counts = rng.integers(1, 4, size=30)
    weighted = keras_mle.LinearRegression(dtype="float64").adapt(x, y, sample_weight=counts)
    repeated = keras_mle.LinearRegression(dtype="float64").adapt(
        np.repeat(x, counts, axis=0), np.repeat(y, counts)
    )
    # The same statistics from the moments' pairwise updates and from one QR: 1e-12.
    for name in ("x_shift", "x_matrix", "y_shift", "y_scale"):
        np.testing.assert_allclose(
            np.asarray(getattr(weighted.adaptation, name)),
            np.asarray(getattr(repeated.adaptation, name)),
            rtol=1e-12, atol=1e-12, err_msg=name,
        )  # fmt: skip
