"""Streamed data get the checks in-memory arrays get.

A `tf.data.Dataset`, a Python generator and a `keras.utils.PyDataset` with a bad batch (NaN or
Inf values, negative weights) stop training with a `ValueError` naming the argument, the epoch
and the batch, and that batch is never applied; bad arguments are refused before any work; and
the float64 paths (`PrecisionWarning`, `adapt`) keep the digits the data carry. Expected numbers
come from NumPy in float64, the closed forms, or statsmodels.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mle
from keras_mle import closed_form

N, BATCH = 100, 20  # 5 batches per epoch
BAD_BATCH = 2  # the third batch (messages count from 1)
BAD_ROW = BAD_BATCH * BATCH + 15  # in the second half of the batch: replica 1 of 2
LR = 0.1


def _line_model(**kwargs):
    return keras_mle.LinearRegression(
        m_initializer=keras.initializers.Constant(0.5),
        b_initializer=keras.initializers.Constant(0.25),
        **kwargs,
    )


def _compiled(model, lr=LR):
    model.compile(optimizer=keras.optimizers.SGD(lr))
    return model


def _iterations(model):
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


def _weighted_sgd(x, y, w, batches, m=0.5, b=0.25, lr=LR):
    """Minibatch SGD on the weighted mean squared error, float64 NumPy: final `(m, b)`."""
    x, y, w = (np.asarray(a, np.float64) for a in (x, y, w))
    for rows in batches:
        residual = m * x[rows] + b - y[rows]
        weights = w[rows] / w[rows].sum()
        m, b = m - lr * 2 * weights @ (residual * x[rows]), b - lr * 2 * weights @ residual
    return m, b


def _epoch_batches(steps, n=N, batch=BATCH):
    """The row indices of the first `steps` batches of repeated passes over `n` rows."""
    per_epoch = [np.arange(s, s + batch) for s in range(0, n, batch)]
    return [per_epoch[i % len(per_epoch)] for i in range(steps)]


@pytest.fixture(scope="module")
def weighted_line(line):
    x, y = line
    w = np.random.default_rng(3).uniform(0.5, 2.0, size=N).astype(np.float32)
    return x, y, w


CORRUPTIONS = {
    # name: (array index in (x, y, w), bad value, message)
    "x-nan": (0, np.nan, "x has NaN or Inf values"),
    "y-nan": (1, np.nan, "y has NaN or Inf values"),
    "weight-inf": (2, np.inf, "sample_weight has NaN or Inf values"),
    "weight-negative": (2, -1.0, "sample_weight has negative values"),
}


def _corrupt(arrays, corruption):
    index, value, _ = CORRUPTIONS[corruption]
    arrays = [a.copy() for a in arrays]
    arrays[index][BAD_ROW] = value
    return tuple(arrays)


class _Batches(keras.utils.PyDataset):
    """A PyDataset over a list of `(x, y, w)` batches (indexed: epochs re-read them)."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        return self.batches[index]


def _stream(kind, epochs_of_arrays):
    """`(data, fit kwargs)` streaming batches of BATCH rows of each `(x, y, w)` in turn.

    Each element of `epochs_of_arrays` is one epoch's data; the stream has `steps_per_epoch`
    set so that Keras reads the epochs one after another from one iterator.
    """
    batches = [
        tuple(a[s : s + BATCH] for a in arrays)
        for arrays in epochs_of_arrays
        for s in range(0, N, BATCH)
    ]
    if kind == "dataset":
        data = tf.data.Dataset.from_tensor_slices(
            tuple(np.concatenate(a) for a in zip(*epochs_of_arrays, strict=True))
        ).batch(BATCH)
        return data, {"steps_per_epoch": N // BATCH}
    if kind == "generator":

        def generate():
            yield from batches

        return generate(), {"steps_per_epoch": N // BATCH}
    if len(epochs_of_arrays) == 1:
        return _Batches(batches), {}
    # An indexed PyDataset reads the same batches every epoch: put the bad one in epoch 1.
    raise ValueError("a PyDataset serves one epoch")


STREAMS = ["dataset", "generator", "pydataset"]


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
@pytest.mark.parametrize("kind", STREAMS)
def test_a_bad_batch_in_a_stream_is_refused_and_never_applied(kind, corruption, weighted_line):
    clean = weighted_line
    bad = _corrupt(clean, corruption)
    # A dataset and a generator: the bad batch is batch 3 of epoch 2. A PyDataset re-reads the
    # same batches every epoch: batch 3 of epoch 1.
    epoch = 1 if kind == "pydataset" else 2
    data, kwargs = _stream(kind, [clean, bad] if epoch == 2 else [bad])
    model = _compiled(_line_model())
    model(clean[0][:2])

    message = rf"^{CORRUPTIONS[corruption][2]} in epoch {epoch}, batch {BAD_BATCH + 1} of the data"
    with pytest.raises(ValueError, match=message):
        model.fit(data, epochs=3, verbose=0, **kwargs)

    # The parameters are those after the clean batches before it, in float64 NumPy (float32
    # rounding over at most 7 steps of lr 0.1: 1e-6).
    steps = (epoch - 1) * (N // BATCH) + BAD_BATCH
    assert _iterations(model) == steps
    m, b = _weighted_sgd(*clean, _epoch_batches(steps))
    np.testing.assert_allclose(model.params["m"], [m], atol=1e-6)
    np.testing.assert_allclose(model.params["b"], b, atol=1e-6)


def test_a_refused_run_equals_the_run_that_stops_before_the_bad_batch(weighted_line):
    clean = weighted_line
    data, kwargs = _stream("dataset", [clean, _corrupt(clean, "x-nan")])
    refused = _compiled(_line_model())
    with pytest.raises(ValueError, match="^x has NaN"):
        refused.fit(data, epochs=2, verbose=0, **kwargs)
    truncated = _compiled(_line_model())
    truncated.fit(data.take(N // BATCH + BAD_BATCH), epochs=1, verbose=0)
    # The same float32 steps on the same batches.
    for name in ("m", "b"):
        np.testing.assert_allclose(refused.params[name], truncated.params[name], atol=1e-7)


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
@pytest.mark.parametrize("kind", STREAMS)
def test_a_bad_batch_in_evaluation_is_refused(kind, corruption, weighted_line):
    data, _ = _stream(kind, [_corrupt(weighted_line, corruption)])
    model = _compiled(_line_model())
    model(weighted_line[0][:2])
    before = model.get_weights()
    message = rf"^{CORRUPTIONS[corruption][2]} in evaluation, batch {BAD_BATCH + 1} of the data"
    steps = {"steps": N // BATCH} if kind == "generator" else {}
    with pytest.raises(ValueError, match=message):
        model.evaluate(data, verbose=0, **steps)
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


def test_a_clean_stream_evaluates_to_the_weighted_mse(weighted_line):
    x, y, w = weighted_line
    data, _ = _stream("dataset", [weighted_line])
    model = _line_model()
    model.compile(optimizer="sgd")
    model(x[:2])
    expected = np.average((0.5 * np.float64(x) + 0.25 - y) ** 2, weights=w)
    np.testing.assert_allclose(model.evaluate(data, verbose=0), expected, rtol=1e-6)


# --------------------------------------------------------------------------- 10. tf.distribute
def test_mirrored_refuses_a_nan_batch_like_one_device(weighted_line, mirrored_strategy):
    clean = weighted_line
    data, kwargs = _stream("dataset", [clean, _corrupt(clean, "x-nan")])
    single = _compiled(_line_model())
    with mirrored_strategy.scope():
        mirrored = _compiled(_line_model())
    message = rf"^x has NaN or Inf values in epoch 2, batch {BAD_BATCH + 1} of the data"
    for model in (single, mirrored):
        # Row 15 of the batch of 20 goes to the second replica: the check is all-reduced.
        with pytest.raises(ValueError, match=message):
            model.fit(data, epochs=3, verbose=0, **kwargs)
        assert _iterations(model) == N // BATCH + BAD_BATCH
    m, b = _weighted_sgd(*clean, _epoch_batches(N // BATCH + BAD_BATCH))
    # Two replicas sum the weighted losses in another order: float32 rounding over 7 steps.
    for name, value in (("m", [m]), ("b", b)):
        np.testing.assert_allclose(mirrored.params[name], single.params[name], atol=1e-6)
        np.testing.assert_allclose(mirrored.params[name], value, atol=1e-6)


# --------------------------------------------------------------------------- 11. dataset shapes
def test_two_column_targets_in_a_dataset_are_refused(line):
    x, y = line
    data = tf.data.Dataset.from_tensor_slices((x, np.stack([y, y], axis=1))).batch(BATCH)
    model = _compiled(_line_model())
    with pytest.raises(ValueError, match=r"^y must have shape .*\(20, 2\)|^y must have shape"):
        model.fit(data, epochs=1, verbose=0)
    assert not model.built


def test_an_unbatched_dataset_is_refused(line):
    data = tf.data.Dataset.from_tensor_slices(line)
    model = _compiled(_line_model())
    with pytest.raises(ValueError, match=r"^x: .*batch it first"):
        model.fit(data, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"^x: .*batch it first"):
        model.evaluate(data, verbose=0)
    assert not model.built


def _gaussian_sgd(samples, weights, batches, mu, sigma, lr):
    """SGD on the weighted mean Gaussian NLL in `(mu, log sigma)`, float64 NumPy."""
    x, w = np.asarray(samples, np.float64), np.asarray(weights, np.float64)
    log_sigma = np.log(sigma)
    for rows in batches:
        r, v = x[rows] - mu, w[rows] / w[rows].sum()
        s2 = np.exp(2 * log_sigma)
        mu, log_sigma = mu + lr * v @ r / s2, log_sigma - lr * v @ (1 - r**2 / s2)
    return mu, np.exp(log_sigma)


@pytest.fixture(scope="module")
def sample_weights(samples):
    """Weights 3 above the true mean 2, 1 below: the weighted MLE moves up by ~0.4."""
    weights = np.where(samples > 2.0, 3.0, 1.0).astype(np.float32)
    weighted = closed_form.gaussian_mle(samples, weights)
    assert weighted["mu"] - closed_form.gaussian_mle(samples)["mu"] > 0.3
    return weights


def test_a_weighted_sample_dataset_honours_the_weights(samples, sample_weights):
    data = tf.data.Dataset.from_tensor_slices((samples, sample_weights)).batch(100)
    model = keras_mle.GaussianMLE(initial_mu=1.5, initial_sigma=1.2)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    model.fit(data, epochs=1, verbose=0)
    # One epoch: 10 steps, each on its batch's weighted mean NLL (float32 against float64 NumPy).
    batches = [np.arange(s, s + 100) for s in range(0, 1000, 100)]
    mu, sigma = _gaussian_sgd(samples, sample_weights, batches, 1.5, 1.2, 0.5)
    np.testing.assert_allclose(model.params["mu"], mu, atol=1e-6)
    np.testing.assert_allclose(model.params["sigma"], sigma, atol=1e-6)


def test_a_weighted_sample_dataset_converges_to_the_weighted_mle(samples, sample_weights):
    # 60 full-batch steps in one epoch: mu contracts by 1 - lr / sigma^2 ~ 0.5 a step and
    # log(sigma) converges faster still, so the fit is within float32 rounding (1e-6) of the
    # weighted MLE; the unweighted one is 0.4 away.
    data = tf.data.Dataset.from_tensor_slices((samples, sample_weights)).batch(1000).repeat(60)
    model = keras_mle.GaussianMLE(initial_mu=1.5, initial_sigma=1.2)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    model.fit(data, epochs=1, verbose=0)
    expected = closed_form.gaussian_mle(samples, sample_weights)
    np.testing.assert_allclose(model.params["mu"], expected["mu"], rtol=1e-6)
    np.testing.assert_allclose(model.params["sigma"], expected["sigma"], rtol=1e-6)


# --------------------------------------------------------------------------- 12. bad arguments
@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": -1}, "batch_size"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"epochs": 0}, "epochs"),
        ({"steps_per_epoch": 0}, "steps_per_epoch"),
        ({"validation_split": 1.0}, "validation_split"),
        ({"validation_split": -0.1}, "validation_split"),
        ({"class_weight": {0: 1}}, "class_weight"),
    ],
)
def test_bad_fit_arguments_are_refused_before_training(kwargs, name, line):
    x, y = line
    model = _compiled(_line_model())
    model(x[:2])
    before = model.get_weights()
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        model.fit(x, y, verbose=0, **kwargs)
    assert _iterations(model) == 0
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"batch_size": BATCH}, "batch_size"),
        ({"validation_split": 0.2}, "validation_split"),
        ({"sample_weight": np.ones(N, np.float32)}, "sample_weight"),
        ({"y": np.ones(N, np.float32)}, "y"),
    ],
)
def test_array_only_arguments_with_a_stream_are_refused(kwargs, name, line):
    data = tf.data.Dataset.from_tensor_slices(line).batch(BATCH)
    model = _compiled(_line_model())
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        model.fit(data, verbose=0, **kwargs)
    assert not model.built


def _two_feature_model():
    x = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)
    model = keras_mle.LinearRegression()
    model(x[:2])
    return model


def test_predict_refuses_the_wrong_feature_count():
    model = _two_feature_model()
    x3 = np.ones((10, 3), np.float32)
    with pytest.raises(ValueError, match=r"^x has 3 feature\(s\), but the model was built for 2"):
        model.predict(x3, verbose=0)


def test_fit_and_evaluate_refuse_a_dataset_with_the_wrong_feature_count():
    model = _compiled(_two_feature_model())
    data = tf.data.Dataset.from_tensor_slices((np.ones((10, 3), "float32"), np.ones(10, "float32")))
    for call in (model.fit, model.evaluate):
        with pytest.raises(ValueError, match=r"^x has 3 feature\(s\)"):
            call(data.batch(5), verbose=0)


def test_predict_refuses_a_dataset_with_the_wrong_feature_count():
    model = _two_feature_model()
    data = tf.data.Dataset.from_tensor_slices(np.ones((10, 3), np.float32)).batch(5)
    with pytest.raises(ValueError, match=r"^x has 3 feature\(s\)"):
        model.predict(data, verbose=0)


def test_float64_data_a_float32_model_cannot_hold_warn():
    rng = np.random.default_rng(0)
    x = 1e8 + rng.uniform(0.0, 100.0, size=50)  # float32 values near 1e8 are 8 apart
    y = 0.01 * (x - 1e8) + rng.normal(size=50)
    model = _compiled(_line_model(), lr=0.0)
    with pytest.warns(keras_mle.PrecisionWarning, match=r"^x: casting the float64 data"):
        model.fit(x, y, epochs=1, batch_size=50, verbose=0)


@pytest.fixture(scope="module")
def narrow_sample():
    """1000 float64 draws centred at 1e6 with spread 1e-4: in float32 they are all 1e6."""
    sample = 1e6 + 1e-4 * np.random.default_rng(5).normal(size=1000)
    assert np.ptp(sample.astype(np.float32)) == 0
    return sample


# Relative tolerances of the adapted fit: the float64 model converges to float64 rounding of
# the working-space optimum; 1e-9 leaves a margin for the affine map. On a float32 model, mu =
# y_shift + y_scale * mu_t with y_scale ~ 1e-4 relative 1e-10 of the centre: a float32 error of
# 1e-7 in mu_t is 1e-17 of mu (1e-12 is loose); sigma = y_scale * sigma_t carries sigma_t's
# float32 error, a few 1e-7 from sums over 1000 terms (1e-5).
NARROW_RTOL = {"float64": (1e-9, 1e-9), "float32": (1e-12, 1e-5)}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_adapt_keeps_the_digits_of_a_narrow_float64_sample(dtype, narrow_sample):
    model = keras_mle.GaussianMLE(initial_mu=0.5, initial_sigma=2.0, dtype=dtype)
    model.adapt(narrow_sample)  # no "constant" error: the statistics are taken in float64
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    # 40 full-batch steps (one epoch over 40 copies), from (mu_t, sigma_t) = (0.5, 2).
    model.fit(np.tile(narrow_sample, 40), batch_size=1000, epochs=1, shuffle=False, verbose=0)
    expected = closed_form.gaussian_mle(narrow_sample)
    mu_rtol, sigma_rtol = NARROW_RTOL[dtype]
    assert model.params["mu"].dtype == np.float64
    np.testing.assert_allclose(model.params["mu"], expected["mu"], rtol=mu_rtol, atol=0)
    np.testing.assert_allclose(model.params["sigma"], expected["sigma"], rtol=sigma_rtol, atol=0)


# --------------------------------------------------------------------------- 13. adapt, 0/1 y
class LogisticRegression(keras_mle.MaximumLikelihoodModel):
    """`P(y = 1 | x) = sigmoid(w x + b)` for one feature: a user model with parameter roles."""

    parameter_roles = {"w": "slope", "b": "intercept"}  # adapt_targets stays False

    def build(self, input_shape):
        self.add_parameter("w", shape=(1,))
        self.add_parameter("b")

    def mean(self, params, x):
        return tf.sigmoid(tf.cast(x, params["b"].dtype) * params["w"][0] + params["b"])

    def sample_loss(self, params, x, y):
        z = x * params["w"][0] + params["b"]
        return tf.nn.softplus(z) - y * z


def test_adapt_leaves_binary_targets_unscaled_and_fits_statsmodels_logit():
    import statsmodels.api as sm

    rng = np.random.default_rng(11)
    n = 400
    x = 50.0 + 10.0 * rng.normal(size=n)  # badly scaled for plain SGD: adapt whitens it
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-(0.3 * (x - 50.0) + 0.5)))).astype(np.float64)
    reference = sm.Logit(y, sm.add_constant(x)).fit(disp=0, tol=1e-12).params

    model = LogisticRegression()
    model.adapt(x, y)
    assert model.adaptation.y_shift == 0.0 and model.adaptation.y_scale == 1.0
    model.compile(optimizer=keras.optimizers.SGD(4.0))
    # 150 full-batch steps (one epoch over 150 copies). In the whitened coordinates the
    # smallest eigenvalue of the mean logistic Hessian is ~0.03: lr 4 contracts the error by
    # ~0.88 a step, leaving ~3e-7 relative after 150 steps (statsmodels' Newton: ~1e-12).
    model.fit(np.tile(x, 150), np.tile(y, 150), batch_size=n, epochs=1, shuffle=False, verbose=0)
    np.testing.assert_allclose(model.params["b"], reference[0], rtol=1e-4)
    np.testing.assert_allclose(model.params["w"], [reference[1]], rtol=1e-4)


def test_a_dataset_that_repeats_forever_needs_steps_per_epoch():
    x = np.linspace(0.0, 1.0, 8, dtype=np.float32)
    endless = tf.data.Dataset.from_tensor_slices((x, 2 * x)).batch(4).repeat()
    model = keras_mle.LinearRegression()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    with pytest.raises(ValueError, match=r"^x: the dataset repeats forever, so an epoch would"):
        model.fit(endless, epochs=2, verbose=0)
    assert not model.built  # refused before any work
    history = model.fit(endless, epochs=2, steps_per_epoch=2, verbose=0)
    assert len(history.epoch) == 2 and int(model.optimizer.iterations) == 4
