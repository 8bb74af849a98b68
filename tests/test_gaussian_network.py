"""GaussianNetwork: its likelihood and steps against NumPy, its fit against the truth, saving."""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

import keras_mle
from keras_mle import metrics
from keras_mle.models.gaussian_network import GaussianNetwork

# Float32 forward and backward passes of a small network against float64 NumPy: a few 1e-7
# relative per operation, on values of order 1.
ATOL_F32 = 1e-5
# Two replicas sum their float32 gradients in another order than one device.
DISTRIBUTED_ATOL = 1e-5


def _tiny(seed=0, features=2):
    """A GaussianNetwork on a Dense(3, tanh) backbone, built, with seeded weights."""
    keras.utils.set_random_seed(seed)
    model = GaussianNetwork(keras.Sequential([keras.layers.Dense(3, activation="tanh")]))
    model.build((None, features))
    return model


def _data(n=64, seed=0, features=2):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    y = (x[:, 0] - 0.5 * x[:, 1] + (0.2 + 0.3 * np.abs(x[:, 0])) * rng.normal(size=n)).astype(
        np.float32
    )
    return x, y


def _weights(model):
    w1, b1 = model.backbone.layers[0].get_weights()
    wm, bm = model.mean_head.get_weights()
    ws, bs = model.scale_head.get_weights()
    return [a.astype(np.float64) for a in (w1, b1, wm, bm, ws, bs)]


def _numpy_nll(weights, x, y, w):
    """The weighted mean Gaussian NLL of the network, in float64 NumPy (softplus + 1e-6)."""
    w1, b1, wm, bm, ws, bs = weights
    h = np.tanh(x @ w1 + b1)
    mu = h @ wm[:, 0] + bm[0]
    sigma = np.logaddexp(0.0, h @ ws[:, 0] + bs[0]) + 1e-6
    losses = 0.5 * np.log(2 * np.pi) + np.log(sigma) + 0.5 * ((y - mu) / sigma) ** 2
    return np.sum(w * losses) / np.sum(w), mu, sigma


def _numpy_gradient(weights, x, y, w, eps=1e-6):
    """Central finite differences of `_numpy_nll` (float64: error about eps^2 + 1e-16 / eps)."""
    gradient = []
    for i, array in enumerate(weights):
        grad = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            plus = [a.copy() for a in weights]
            minus = [a.copy() for a in weights]
            plus[i][index] += eps
            minus[i][index] -= eps
            diff = _numpy_nll(plus, x, y, w)[0] - _numpy_nll(minus, x, y, w)[0]
            grad[index] = diff / (2 * eps)
        gradient.append(grad)
    return gradient


def test_distribution_and_loss_match_numpy():
    model = _tiny()
    x, y = _data()
    expected_loss, mu, sigma = _numpy_nll(_weights(model), x, y, np.ones(len(y)))
    out = model.predict_distribution(x)
    np.testing.assert_allclose(out["mean"], mu, atol=ATOL_F32)
    np.testing.assert_allclose(out["sigma"], sigma, atol=ATOL_F32)
    np.testing.assert_allclose(model.predict(x, verbose=0), mu, atol=ATOL_F32)
    model.compile(optimizer="sgd")
    np.testing.assert_allclose(model.evaluate(x, y, verbose=0), expected_loss, rtol=1e-5)
    # The float64 per-sample losses of the statistics hooks: scipy's on the network's outputs,
    # whose float32 rounding the squared z-score of a poorly fitted point magnifies.
    per_sample = model.per_sample_loss(x, y)
    expected = -scipy.stats.norm.logpdf(y, mu, sigma)
    np.testing.assert_allclose(per_sample, expected, rtol=1e-5, atol=ATOL_F32)


def test_weighted_sgd_step_matches_finite_differences():
    model = _tiny(seed=1)
    x, y = _data(seed=1)
    w = np.random.default_rng(2).uniform(0.5, 2.0, size=len(y)).astype(np.float32)
    before = _weights(model)
    gradient = _numpy_gradient(before, x.astype(np.float64), y.astype(np.float64), w)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.fit(x, y, sample_weight=w, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    for old, grad, new in zip(before, gradient, _weights(model), strict=True):
        np.testing.assert_allclose(new, old - 0.1 * grad, atol=ATOL_F32)


def test_custom_loop_matches_fit():
    # (The "function" mode takes the same steps; eager keeps this test fast.)
    x, y = _data(seed=3)
    fitted, looped = _tiny(seed=4), _tiny(seed=4)
    fitted.compile(optimizer=keras.optimizers.SGD(0.01))
    history = fitted.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    assert "stop_reason" not in history.history
    keras_mle.loops.train(
        looped,
        x,
        y,
        epochs=2,
        batch_size=16,
        optimizer=keras.optimizers.SGD(0.01),
        verbose=0,
        mode="eager",
    )
    for a, b in zip(_weights(fitted), _weights(looped), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_mirrored_fit_matches_one_device(mirrored_strategy):
    x, y = _data(n=101, seed=5)
    w = np.random.default_rng(6).uniform(0.5, 2.0, size=len(y)).astype(np.float32)
    single = _tiny(seed=7)
    single.compile(optimizer=keras.optimizers.SGD(0.05))
    with mirrored_strategy.scope():
        mirrored = _tiny(seed=8)
        mirrored.set_weights(single.get_weights())
        mirrored.compile(optimizer=keras.optimizers.SGD(0.05))
    # Batches of 50, 50 and 1 row: one replica gets no data in the last step.
    args = {"sample_weight": w, "batch_size": 50, "epochs": 2, "shuffle": False, "verbose": 0}
    expected = single.fit(x, y, **args)
    history = mirrored.fit(x, y, **args)
    for a, b in zip(_weights(single), _weights(mirrored), strict=True):
        np.testing.assert_allclose(b, a, atol=DISTRIBUTED_ATOL)
    np.testing.assert_allclose(history.history["loss"], expected.history["loss"], rtol=1e-5)


def test_separate_networks_and_image_batches_from_a_dataset():
    keras.utils.set_random_seed(0)
    model = GaussianNetwork(
        mean=keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(4, activation="relu")]),
        scale=keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(2)]),
    )
    rng = np.random.default_rng(0)
    images = rng.normal(size=(48, 4, 4, 1)).astype(np.float32)
    y = (images.mean(axis=(1, 2, 3)) + 0.1 * rng.normal(size=48)).astype(np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((images, y)).batch(16)
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    history = model.fit(dataset, epochs=3, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    out = model.predict_distribution(dataset)
    assert out["mean"].shape == out["sigma"].shape == (48,)
    # The mean is the mean network's alone: its head on its features.
    features = model.mean_network(images)
    np.testing.assert_allclose(out["mean"], model.mean_head(features)[:, 0], atol=ATOL_F32)


def test_backbone_must_output_features():
    model = GaussianNetwork(keras.Sequential([keras.layers.Dense(3)]))
    with pytest.raises(ValueError, match=r"backbone must map a batch to \(batch, features\)"):
        model.build((None, 4, 4, 1))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({}, ValueError, "backbone is required"),
        ({"backbone": "dense"}, TypeError, "backbone must be a Keras layer"),
        ({"mean": keras.layers.Dense(2)}, ValueError, "backbone is required"),
        (
            {"backbone": keras.layers.Dense(2), "scale": keras.layers.Dense(2)},
            ValueError,
            "not both",
        ),
        ({"backbone": keras.layers.Dense(2), "scale_floor": 0.0}, ValueError, "floor must be"),
        ({"backbone": keras.layers.Dense(2), "fixed": {"a": 1.0}}, ValueError, "fixed:"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        GaussianNetwork(**kwargs)


def test_bad_prediction_arguments_and_statistics_hooks():
    model = _tiny()
    x, y = _data()
    with pytest.raises(ValueError, match="level must be in"):
        model.prediction_interval(x, level=95)
    with pytest.raises(ValueError, match="n must be"):
        model.sample(x, 0)
    with pytest.raises(ValueError, match="x must have"):
        model.predict_distribution(np.zeros(()))
    with pytest.raises(ValueError, match="x contains 1 NaN"):
        model.predict_distribution(np.where(np.arange(128).reshape(64, 2) == 3, np.nan, x))
    with pytest.raises(NotImplementedError, match="needs the named parameters"):
        keras_mle.inference(model, x, y)
    with pytest.raises(NotImplementedError, match="adapt"):
        model.adapt(x, y)


def test_interval_and_sample_follow_the_distribution():
    model = _tiny()
    x, _ = _data()
    out = model.predict_distribution(x)
    low, high = model.prediction_interval(x, level=0.9)
    z = scipy.stats.norm.ppf(0.95)
    # Float32 sums near 0 lose relative precision: an absolute 1e-6 on values of order 1.
    np.testing.assert_allclose(low, out["mean"] - z * out["sigma"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(high, out["mean"] + z * out["sigma"], rtol=1e-6, atol=1e-6)
    draws = model.sample(x, 4000, seed=0)
    assert draws.shape == (4000, 64)
    np.testing.assert_array_equal(draws, model.sample(x, 4000, seed=0))
    # Standardised draws are N(0, 1): 256,000 of them, so their mean is within 5 standard
    # errors (5 / 506) of 0 and their standard deviation within 1% of 1.
    z_draws = (draws - out["mean"]) / out["sigma"]
    assert abs(z_draws.mean()) < 5 / np.sqrt(z_draws.size)
    assert abs(z_draws.std() - 1.0) < 0.01


def test_compiled_metrics_see_mean_and_sigma():
    model = _tiny(seed=2)
    x, y = _data(seed=2)
    w = np.random.default_rng(3).uniform(0.5, 2.0, size=len(y))
    model.compile(
        optimizer="sgd",
        metrics=["mae", metrics.IntervalCoverage(0.8)],
        weighted_metrics=[metrics.GaussianCRPS(), metrics.GaussianLogLikelihood()],
    )
    result = model.evaluate(x, y, sample_weight=w, verbose=0, return_dict=True)
    out = model.predict_distribution(x)
    mu, sigma = out["mean"].astype(np.float64), out["sigma"].astype(np.float64)
    z = (y - mu) / sigma
    crps = sigma * (
        z * (2 * scipy.stats.norm.cdf(z) - 1) + 2 * scipy.stats.norm.pdf(z) - 1 / np.sqrt(np.pi)
    )
    expected = {
        "mae": np.mean(np.abs(y - mu)),
        "coverage_80": np.mean(np.abs(z) <= scipy.stats.norm.ppf(0.9)),
        "crps": np.average(crps, weights=w),
        "log_likelihood": np.average(scipy.stats.norm.logpdf(y, mu, sigma), weights=w),
    }
    for name, value in expected.items():
        np.testing.assert_allclose(result[name], value, rtol=1e-5, err_msg=name)
    assert result["log_likelihood"] == pytest.approx(-result["loss"], rel=1e-6)


def _heteroscedastic(n, seed):
    """`y = sin(2 pi x) + (0.1 + 0.5 x) e`, `x` uniform on [0, 1], `e` standard normal."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, 1)).astype(np.float32)
    noise = (0.1 + 0.5 * x[:, 0]) * rng.normal(size=n)
    return x, (np.sin(2 * np.pi * x[:, 0]) + noise).astype(np.float32)


def _fit_heteroscedastic(n, epochs, batch_size, learning_rate, width, seed=0):
    x, y = _heteroscedastic(n, seed)
    keras.utils.set_random_seed(seed)
    backbone = keras.Sequential(
        [keras.layers.Dense(width, activation="relu"), keras.layers.Dense(width, activation="relu")]
    )
    model = GaussianNetwork(backbone)
    steps = epochs * -(-n // batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps, alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(schedule))
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
    grid = np.linspace(0.05, 0.95, 19)[:, None]
    relative_error = model.predict_distribution(grid)["sigma"] / (0.1 + 0.5 * grid[:, 0]) - 1
    x_new, y_new = _heteroscedastic(10_000, seed + 100)
    low, high = model.prediction_interval(x_new, level=0.95)
    coverage = np.mean((y_new >= low) & (y_new <= high))
    return np.max(np.abs(relative_error)), coverage


def test_recovers_sigma_of_x_small():
    # 3000 points: sigma(x) is estimated from about 150 points per 0.05 of x, each with a
    # relative standard error near 1 / sqrt(2 * 150) = 6%; 20% leaves room for the network's
    # smoothing at the edges. Coverage of 10,000 new points has a binomial standard error of
    # 0.2%, so [0.93, 0.97] is 10 of them, the rest for the fit.
    error, coverage = _fit_heteroscedastic(3000, 40, 128, 0.01, 32)
    assert error < 0.2
    assert 0.93 <= coverage <= 0.97


@pytest.mark.slow
def test_recovers_sigma_of_x_within_ten_percent():
    # 20,000 points: about 1000 per 0.05 of x, a 2% standard error per grid point.
    error, coverage = _fit_heteroscedastic(20_000, 40, 256, 0.005, 64)
    assert error < 0.1
    assert 0.93 <= coverage <= 0.97


def test_saved_model_loads_in_a_fresh_process_in_safe_mode(tmp_path):
    x, y = _data()
    grid = np.linspace(-2, 2, 10, dtype=np.float32).reshape(5, 2)
    expected = {}
    for kind in ("backbone", "separate"):
        keras.utils.set_random_seed(0)
        if kind == "backbone":
            model = GaussianNetwork(keras.Sequential([keras.layers.Dense(4, activation="relu")]))
        else:
            model = GaussianNetwork(
                mean=keras.Sequential([keras.layers.Dense(4, activation="relu")]),
                scale=keras.Sequential([keras.layers.Dense(3, activation="tanh")]),
                scale_floor=1e-3,
            )
        model.compile(optimizer="adam", metrics=["mae", metrics.IntervalCoverage(0.9)])
        model.fit(x, y, epochs=1, verbose=0)
        model.save(tmp_path / f"{kind}.keras")
        out = model.predict_distribution(grid)
        expected[kind] = {k: v.tolist() for k, v in out.items()}
    np.save(tmp_path / "grid.npy", grid)
    script = textwrap.dedent(
        f"""
        import json, sys
        import numpy as np, keras
        import keras_mle.models.gaussian_network  # registers the class, as `import keras_mle`
        grid = np.load({str(tmp_path / "grid.npy")!r})
        result = {{}}
        for kind in ("backbone", "separate"):
            model = keras.models.load_model({str(tmp_path)!r} + f"/{{kind}}.keras")
            out = model.predict_distribution(grid)
            result[kind] = {{
                "mean": out["mean"].tolist(), "sigma": out["sigma"].tolist(),
                "class": type(model).__name__, "floor": model.scale_floor,
                "metrics": sorted(model.evaluate(grid, grid[:, 0], verbose=0, return_dict=True)),
            }}
        print(json.dumps(result))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    loaded = json.loads(completed.stdout.strip().splitlines()[-1])
    for kind in ("backbone", "separate"):
        assert loaded[kind]["class"] == "GaussianNetwork"
        np.testing.assert_allclose(loaded[kind]["mean"], expected[kind]["mean"], rtol=1e-6)
        np.testing.assert_allclose(loaded[kind]["sigma"], expected[kind]["sigma"], rtol=1e-6)
        assert loaded[kind]["metrics"] == ["coverage_90", "loss", "mae"]
    assert loaded["separate"]["floor"] == 1e-3


def test_mixed_precision_reaches_the_float32_fit():
    # Under mixed_float16 the network computes in float16, the step scales the loss and the
    # optimizer unscales the gradients: the fit ends where the float32 one does, to the
    # precision of float16 activations (about 1e-3 relative; 1e-2 leaves room for the drift of
    # 30 Adam epochs).
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(2000, 1)).astype("float32")
    y = (np.sin(2 * np.pi * x[:, 0]) + (0.1 + 0.5 * x[:, 0]) * rng.normal(size=2000)).astype(
        "float32"
    )
    losses = {}
    try:
        for policy in ("float32", "mixed_float16"):
            keras.config.set_dtype_policy(policy)
            keras.utils.set_random_seed(0)
            backbone = keras.Sequential([keras.layers.Dense(32, activation="relu")])
            net = GaussianNetwork(backbone)
            net.compile(optimizer=keras.optimizers.Adam(0.01))
            history = net.fit(x, y, epochs=30, batch_size=200, verbose=0)
            losses[policy] = history.history["loss"][-1]
            if policy == "mixed_float16":
                assert isinstance(net.optimizer, keras.optimizers.LossScaleOptimizer)
    finally:
        keras.config.set_dtype_policy("float32")
    assert losses["mixed_float16"] == pytest.approx(losses["float32"], rel=1e-2)


def test_one_feature_as_a_vector_is_a_column():
    # As for the linear models, x of shape (N,) is one feature: the networks get (N, 1).
    x, y = keras_mle.data.noisy_line(n=64, seed=0)
    net = GaussianNetwork(keras.Sequential([keras.layers.Dense(4, activation="relu")]))
    net.compile(optimizer=keras.optimizers.Adam(0.01))
    net.fit(x, y, epochs=1, verbose=0)
    column = net.predict_distribution(x[:, None])
    vector = net.predict_distribution(x)
    np.testing.assert_array_equal(vector["mean"], column["mean"])
    np.testing.assert_array_equal(vector["sigma"], column["sigma"])
