"""Loss values and gradients against scipy and the analytic derivatives."""

import keras
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from keras_mle import data, losses

# Float64 computations of the same formula differ only by rounding: a few ulps of values near 1.
RTOL_F64 = 1e-12
# Float32: about 1e-7 relative per operation, and the loss is a sum of a handful of terms.
RTOL_F32 = 1e-6


@pytest.fixture
def normal_data():
    rng = np.random.default_rng(42)
    y = rng.normal(2.0, 1.5, size=50)
    mu = rng.normal(2.0, 0.5, size=50)
    sigma = rng.uniform(0.3, 2.0, size=50)
    return y, mu, sigma


@pytest.mark.parametrize("dtype, rtol", [("float64", RTOL_F64), ("float32", RTOL_F32)])
def test_gaussian_nll_matches_scipy_logpdf(normal_data, dtype, rtol):
    y, mu, sigma = (a.astype(dtype) for a in normal_data)
    nll = losses.gaussian_nll(y, mu, sigma)
    assert nll.dtype == dtype
    assert nll.shape == (50,)
    expected = -scipy.stats.norm.logpdf(y.astype(np.float64), mu, sigma)
    np.testing.assert_allclose(nll.numpy(), expected, rtol=rtol)


def test_gaussian_nll_broadcasts_scalar_parameters():
    y = data.gaussian_sample(n=20, seed=1).astype(np.float64)
    nll = losses.gaussian_nll(y, 2.0, 1.3)
    np.testing.assert_allclose(nll.numpy(), -scipy.stats.norm.logpdf(y, 2.0, 1.3), rtol=RTOL_F64)


def test_gaussian_nll_sum_is_the_articles_ll():
    # The articles' LL: (N/2) log(2 pi s^2) + 1/(2 s^2) sum (y - m)^2, in float64.
    y = data.gaussian_sample(mu=2.0, sigma=1.0, n=1000, seed=0).astype(np.float64)
    m, s = 1.4, 1.3
    n = len(y)
    articles_ll = n / 2 * np.log(2 * np.pi * s**2) + np.sum((y - m) ** 2) / (2 * s**2)
    total = tf.reduce_sum(losses.gaussian_nll(y, m, s)).numpy()
    np.testing.assert_allclose(total, articles_ll, rtol=RTOL_F64)
    # Through the Loss class with reduction="sum" (y_pred columns: mu, sigma).
    y_pred = np.stack([np.full(n, m), np.full(n, s)], axis=1)
    loss = losses.GaussianNLL(reduction="sum", dtype="float64")
    np.testing.assert_allclose(float(loss(y, y_pred)), articles_ll, rtol=RTOL_F64)
    # The default reduction is the mean: -loglik / n.
    mean_loss = losses.GaussianNLL(dtype="float64")
    np.testing.assert_allclose(float(mean_loss(y, y_pred)), articles_ll / n, rtol=RTOL_F64)


def test_gaussian_nll_gradients_are_analytic(normal_data):
    y, mu, sigma = normal_data
    mu = tf.Variable(mu)
    sigma = tf.Variable(sigma)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(losses.gaussian_nll(y, mu, sigma))
    d_mu, d_sigma = tape.gradient(total, [mu, sigma])
    mu, sigma = mu.numpy(), sigma.numpy()
    # d/dmu = -(y - mu) / sigma^2;  d/dsigma = 1/sigma - (y - mu)^2 / sigma^3.
    np.testing.assert_allclose(d_mu.numpy(), -(y - mu) / sigma**2, rtol=RTOL_F64)
    np.testing.assert_allclose(
        d_sigma.numpy(), 1 / sigma - (y - mu) ** 2 / sigma**3, rtol=RTOL_F64, atol=1e-15
    )


def test_mean_squared_error_values_and_gradient(normal_data):
    y, pred, _ = normal_data
    pred = tf.Variable(pred)
    with tf.GradientTape() as tape:
        per_sample = losses.mean_squared_error(y, pred)
        total = tf.reduce_sum(per_sample)
    (grad,) = tape.gradient(total, [pred])
    assert per_sample.shape == (50,)
    np.testing.assert_allclose(per_sample.numpy(), (y - pred.numpy()) ** 2, rtol=RTOL_F64)
    # d/dpred (y - pred)^2 = -2 (y - pred).
    np.testing.assert_allclose(grad.numpy(), -2 * (y - pred.numpy()), rtol=RTOL_F64)


def test_mean_squared_error_averages_trailing_axes():
    rng = np.random.default_rng(0)
    y, pred = rng.normal(size=(2, 10, 3))
    per_sample = losses.mean_squared_error(y, pred).numpy()
    np.testing.assert_allclose(per_sample, np.mean((y - pred) ** 2, axis=1), rtol=RTOL_F64)


def test_mean_squared_error_refuses_to_broadcast():
    with pytest.raises(ValueError, match="y_true and y_pred must have the same shape"):
        losses.mean_squared_error(np.zeros(5), np.zeros((5, 1)))


def test_mean_squared_error_loss_class_is_keras_mse():
    rng = np.random.default_rng(1)
    y, pred = rng.normal(size=(2, 30))
    ours = losses.MeanSquaredError(dtype="float64")(y, pred)
    np.testing.assert_allclose(float(ours), np.mean((y - pred) ** 2), rtol=RTOL_F64)
    theirs = keras.losses.MeanSquaredError(dtype="float64")(y, pred)
    np.testing.assert_allclose(float(ours), float(theirs), rtol=RTOL_F64)


def test_gaussian_nll_refuses_wrong_prediction_width():
    with pytest.raises(ValueError, match="last axis of size 2"):
        losses.GaussianNLL()(np.zeros(4), np.ones((4, 3)))


def _gaussian_head_model():
    """A functional model predicting (mu, sigma), with no Lambda layer, so safe_mode loads it."""
    inputs = keras.Input((1,))
    mu = keras.layers.Dense(1, name="mu")(inputs)
    sigma = keras.layers.Dense(1, activation="softplus", name="sigma")(inputs)
    return keras.Model(inputs, keras.layers.Concatenate()([mu, sigma]))


def _softplus_sigma(outputs):
    return keras.ops.stack([outputs[:, 0], keras.ops.softplus(outputs[:, 1])], axis=1)


@pytest.mark.parametrize("target_shape", ["(N,)", "(N, 1)"])
def test_gaussian_nll_in_an_ordinary_keras_model(target_shape):
    keras.utils.set_random_seed(0)
    x, y = data.noisy_line(n=64, seed=3)
    x = x[:, None]
    targets = y if target_shape == "(N,)" else y[:, None]
    model = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(2), keras.layers.Lambda(_softplus_sigma)]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=losses.GaussianNLL())
    history = model.fit(x, targets, batch_size=64, epochs=5, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]

    # evaluate() is the mean NLL of the model's own predictions, as scipy computes it.
    pred = model.predict(x, verbose=0).astype(np.float64)
    expected = -np.mean(scipy.stats.norm.logpdf(y, pred[:, 0], pred[:, 1]))
    # Float32 forward pass and a float32 mean over 64 terms of size ~1.
    np.testing.assert_allclose(
        model.evaluate(x, targets, batch_size=64, verbose=0), expected, rtol=RTOL_F32
    )


def test_loss_in_sequential_model_with_mean_squared_error():
    keras.utils.set_random_seed(0)
    x, y = data.noisy_line(n=64, seed=3)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=losses.MeanSquaredError())
    model.fit(x[:, None], y[:, None], batch_size=64, epochs=5, verbose=0)
    pred = model.predict(x[:, None], verbose=0)[:, 0].astype(np.float64)
    np.testing.assert_allclose(
        model.evaluate(x[:, None], y[:, None], verbose=0), np.mean((y - pred) ** 2), rtol=RTOL_F32
    )


@pytest.mark.parametrize("cls", [losses.GaussianNLL, losses.MeanSquaredError])
def test_loss_serialization_round_trip(cls):
    loss = cls(reduction="sum", name="custom_name", dtype="float64")
    config = loss.get_config()
    expected = {"name": "custom_name", "reduction": "sum", "dtype": "float64"}
    if cls is losses.GaussianNLL:
        expected.update(scale="sigma", floor=losses.SCALE_FLOOR)
    assert config == expected
    assert cls.from_config(config).get_config() == config

    serialized = keras.losses.serialize(loss)
    assert serialized["registered_name"] == f"keras_mle>{cls.__name__}"
    restored = keras.losses.deserialize(serialized)
    assert type(restored) is cls
    assert restored.get_config() == config

    y_true = np.array([0.5, 2.0, 1.0])
    y_pred = np.array([[1.0, 0.8], [1.5, 1.2], [0.5, 2.0]])
    if cls is losses.MeanSquaredError:
        y_pred = y_pred[:, 0]
    np.testing.assert_allclose(float(restored(y_true, y_pred)), float(loss(y_true, y_pred)))
    # The dtype survives: the restored loss still computes in float64.
    assert restored.dtype == "float64"


def test_loss_survives_model_save_and_load(tmp_path):
    model = _gaussian_head_model()
    model.compile(optimizer="sgd", loss=losses.GaussianNLL(reduction="sum"))
    path = tmp_path / "head.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored.loss, losses.GaussianNLL)
    assert restored.loss.reduction == "sum"


def test_softplus_layout_matches_scipy():
    rng = np.random.default_rng(4)
    y, mu, raw = rng.normal(size=(3, 40))
    sigma = np.logaddexp(0.0, raw) + losses.SCALE_FLOOR
    loss = losses.GaussianNLL(reduction="sum", dtype="float64", scale="softplus")
    expected = -np.sum(scipy.stats.norm.logpdf(y, mu, sigma))
    np.testing.assert_allclose(float(loss(y, np.stack([mu, raw], 1))), expected, rtol=RTOL_F64)
    # A raw value far below 0 gives sigma = the floor, not 0: the loss stays finite.
    tiny = losses.GaussianNLL(dtype="float32", scale="softplus")(np.zeros(1), [[0.0, -1e4]])
    np.testing.assert_allclose(float(tiny), 0.5 * np.log(2 * np.pi) + np.log(1e-6), rtol=RTOL_F32)


@pytest.mark.parametrize("loss", [losses.GaussianNLL(), losses.gaussian_nll])
def test_non_positive_sigma_is_refused(loss):
    with pytest.raises(ValueError, match=r"y_pred\[..., 1\] must be a standard deviation > 0"):
        loss(np.zeros((2, 1)), np.array([[0.0, 1.0], [0.0, 0.0]]))


def test_bad_scale_arguments():
    with pytest.raises(ValueError, match="scale must be one of"):
        losses.GaussianNLL(scale="exp")
    with pytest.raises(ValueError, match="floor must be a finite number > 0"):
        losses.GaussianNLL(scale="softplus", floor=-1.0)


def test_gaussian_nll_function_as_a_keras_loss(tmp_path):
    keras.utils.set_random_seed(0)
    x, y = data.noisy_line(n=64, seed=3)
    model = _gaussian_head_model()
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=losses.gaussian_nll)
    model.fit(x[:, None], y, batch_size=64, epochs=3, verbose=0)
    pred = model.predict(x[:, None], verbose=0).astype(np.float64)
    expected = -np.mean(scipy.stats.norm.logpdf(y, pred[:, 0], pred[:, 1]))
    np.testing.assert_allclose(model.evaluate(x[:, None], y, verbose=0), expected, rtol=RTOL_F32)
    model.save(tmp_path / "function.keras")
    restored = keras.models.load_model(tmp_path / "function.keras")
    np.testing.assert_allclose(restored.evaluate(x[:, None], y, verbose=0), expected, rtol=RTOL_F32)


def test_functional_model_on_raw_outputs_recovers_sigma_of_x():
    # y = 2 x + (0.1 + 0.5 x) e on [0, 1], 4000 points; a Dense(2) head on a small network,
    # its second column read through softplus. The fitted sigma(x) on a grid is compared with
    # the truth: with about 200 points per 0.05 of x each local sigma has a relative standard
    # error near 5%, so 20% is four of them.
    rng = np.random.default_rng(5)
    x = rng.uniform(size=(4000, 1)).astype(np.float32)
    y = (2 * x[:, 0] + (0.1 + 0.5 * x[:, 0]) * rng.normal(size=4000)).astype(np.float32)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((1,))
    hidden = keras.layers.Dense(16, activation="tanh")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(hidden))
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss=losses.GaussianNLL(scale="softplus"))
    model.fit(x, y, batch_size=256, epochs=30, verbose=0)
    grid = np.linspace(0.05, 0.95, 10, dtype=np.float32)[:, None]
    raw = model.predict(grid, verbose=0).astype(np.float64)
    sigma = np.logaddexp(0.0, raw[:, 1]) + losses.SCALE_FLOOR
    np.testing.assert_allclose(sigma, 0.1 + 0.5 * grid[:, 0], rtol=0.2)


def test_gaussian_nll_by_its_registered_name():
    # Keras resolves plain strings only among its own losses; a config names registered ones.
    loss = keras.losses.get(
        {"class_name": "keras_mle>GaussianNLL", "config": {"scale": "softplus"}}
    )
    assert isinstance(loss, losses.GaussianNLL)
    assert loss.get_config()["scale"] == "softplus"
