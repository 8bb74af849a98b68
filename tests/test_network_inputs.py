"""A GaussianNetwork takes what its networks take: images, and dicts of named inputs.

In memory (`fit(x, y)`'s in-graph epochs), from a `tf.data.Dataset` (Keras' batches) and
through `keras_mle.loops`, the same optimizer steps give the same weights; bad entries of a dict
are refused naming the entry. Also: a `tf.distribute` strategy of one device trains as no
strategy does.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mle
from keras_mle import loops

# The same float32 steps reached by two routes (compiled epoch, Keras' per-batch steps, XLA):
# only the order of float32 reductions may differ, a few ulps per step on weights of order 1.
ATOL = 1e-5

N = 240


def _data(seed=0):
    rng = np.random.default_rng(seed)
    tabular = rng.uniform(size=(N, 2)).astype(np.float32)
    images = rng.normal(size=(N, 6, 6, 1)).astype(np.float32)
    noise = 0.1 + 0.2 * tabular[:, 1]
    y = tabular[:, 0] + 3.0 * images.mean(axis=(1, 2, 3)) + noise * rng.normal(size=N)
    return {"tabular": tabular, "image": images}, y.astype(np.float32)


def _named_backbone():
    """A functional network of two named inputs: a feature vector and a 6x6 image."""
    tabular = keras.Input((2,), name="tabular")
    image = keras.Input((6, 6, 1), name="image")
    features = keras.layers.Concatenate()(
        [
            keras.layers.Dense(4, activation="tanh")(tabular),
            keras.layers.Flatten()(keras.layers.Conv2D(2, 3, activation="tanh")(image)),
        ]
    )
    return keras.Model({"tabular": tabular, "image": image}, features)


def _image_backbone():
    return keras.Sequential(
        [keras.layers.Conv2D(3, 3, activation="tanh"), keras.layers.GlobalAveragePooling2D()]
    )


def _model(backbone, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras_mle.GaussianNetwork(backbone())
    model.compile(optimizer=keras.optimizers.SGD(0.05), metrics=["mae"])
    return model


def _max_difference(a, b):
    return max(
        float(np.max(np.abs(u - v))) for u, v in zip(a.get_weights(), b.get_weights(), strict=True)
    )


@pytest.mark.parametrize("inputs", ["dict", "image"])
def test_in_memory_fit_equals_the_dataset_fit_and_the_loops(inputs):
    x, y = _data()
    backbone = _named_backbone if inputs == "dict" else _image_backbone
    if inputs == "image":
        x = x["image"]
    in_memory = _model(backbone)
    history = in_memory.fit(x, y, batch_size=50, epochs=3, shuffle=False, verbose=0)
    streamed = _model(backbone)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(50)
    streamed.fit(dataset, epochs=3, verbose=0)
    assert _max_difference(in_memory, streamed) < ATOL
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][-1] < history.history["loss"][0]
    for mode in ("eager", "function"):
        looped = _model(backbone)
        loops.train(
            looped,
            x,
            y,
            epochs=3,
            batch_size=50,
            shuffle=False,
            mode=mode,
            optimizer=looped.optimizer,
            verbose=0,
        )
        assert _max_difference(in_memory, looped) < ATOL, mode


def test_named_inputs_predict_evaluate_validate_and_save(tmp_path):
    x, y = _data()
    model = _model(_named_backbone)
    history = model.fit(x, y, batch_size=64, epochs=2, validation_split=0.25, verbose=0)
    assert set(history.history) == {"loss", "mae", "val_loss", "val_mae"}
    # validation_split holds out the last quarter of every input alike.
    held_out = {key: value[180:] for key, value in x.items()}
    loss, mae = model.evaluate(held_out, y[180:], verbose=0)
    np.testing.assert_allclose(
        [loss, mae], [history.history[k][-1] for k in ("val_loss", "val_mae")], rtol=1e-5
    )

    mean = model.predict(x, verbose=0)
    out = model.predict_distribution(x)
    np.testing.assert_allclose(out["mean"], mean, atol=1e-6)
    assert out["sigma"].shape == (N,) and np.all(out["sigma"] > 0)
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(100)
    np.testing.assert_allclose(
        model.predict_distribution(dataset)["sigma"], out["sigma"], atol=1e-6
    )
    low, high = model.prediction_interval(x, level=0.9)
    assert np.all(low < mean) and np.all(mean < high)
    assert model.sample(x, 3, seed=0).shape == (3, N)

    path = tmp_path / "named.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), mean)


def test_shuffled_in_memory_fit_of_named_inputs_repeats_under_a_seed():
    x, y = _data()
    first = _model(_named_backbone, seed=3)
    first.fit(x, y, batch_size=32, epochs=2, verbose=0)
    second = _model(_named_backbone, seed=3)
    second.fit(x, y, batch_size=32, epochs=2, verbose=0)
    assert _max_difference(first, second) == 0.0
    unshuffled = _model(_named_backbone, seed=3)
    unshuffled.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    assert _max_difference(first, unshuffled) > 1e-4  # the rows were shuffled


@pytest.mark.parametrize(
    "case, change, error, message",
    [
        (
            "nan",
            lambda x: {
                **x,
                "image": np.where(np.arange(N)[:, None, None, None] == 5, np.nan, x["image"]),
            },
            ValueError,
            r"x\['image'\] contains 36 NaN or Inf",
        ),
        (
            "lengths",
            lambda x: {**x, "tabular": x["tabular"][:-1]},
            ValueError,
            r"x: the inputs have different numbers of rows: \{'tabular': 239, 'image': 240\}",
        ),
        (
            "text",
            lambda x: {**x, "tabular": np.full((N, 2), "a")},
            TypeError,
            r"x\['tabular'\] must be numeric",
        ),
        (
            "keys",
            lambda x: {1: x["tabular"]},
            ValueError,
            r"x must be a non-empty dict with string keys",
        ),
        ("empty", lambda x: {}, ValueError, r"x must be a non-empty dict with string keys"),
    ],
    ids=["nan", "lengths", "text", "keys", "empty"],
)
def test_bad_named_inputs_are_refused_naming_the_entry(case, change, error, message):
    x, y = _data()
    model = _model(_named_backbone)
    with pytest.raises(error, match=message):
        model.fit(change(x), y, epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == 0


def test_a_model_of_a_feature_matrix_refuses_a_dict():
    x, y = _data()
    with pytest.raises(
        TypeError, match=r"x must be one array of shape \(N,\) or \(N, k\), got a dict"
    ):
        keras_mle.LinearRegression().fit({"tabular": x["tabular"]}, y, verbose=0)


def test_nan_in_a_streamed_named_input_stops_before_that_batch():
    x, y = _data()
    x["image"][130, 0, 0, 0] = np.nan
    model = _model(_named_backbone)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(50)
    with pytest.raises(ValueError, match=r"x has NaN or Inf values in epoch 1, batch 3"):
        model.fit(dataset, epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == 2


def test_a_strategy_of_one_device_trains_as_no_strategy():
    # Plain fit(x, y) under MirroredStrategy(one device) used to fail in the optimizer's
    # merge_call inside the divergence guard's cond; it now takes Keras' batches and the
    # replica-safe guard, and makes the same steps.
    x, y = keras_mle.data.noisy_line(n=100)
    keras.utils.set_random_seed(0)  # the same initial parameters
    plain = keras_mle.LinearRegression()
    plain.compile(optimizer=keras.optimizers.SGD(0.1))
    plain.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    keras.utils.set_random_seed(0)
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        mirrored = keras_mle.LinearRegression()
        mirrored.compile(optimizer=keras.optimizers.SGD(0.1))
    mirrored.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    assert _max_difference(plain, mirrored) < 1e-6
