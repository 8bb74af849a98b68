"""`tf.distribute.MirroredStrategy` on the two logical CPU devices of conftest.py.

Plain SGD, because it exposes a wrongly scaled loss (Keras all-reduces gradients with SUM: a
per-replica mean would double every step on two replicas) where Adam would hide it.
"""

import keras
import numpy as np
import pytest
from helpers import built

import keras_mle
from keras_mle import data

# Two replicas sum partial sums in another order than one device: float32 rounding, of order
# 1e-7 per step, over a dozen steps: 1e-5 leaves a factor 10 of margin.
DISTRIBUTED_ATOL = 1e-5


@pytest.fixture
def strategy(mirrored_strategy):
    return mirrored_strategy


def test_two_replicas(strategy):
    assert strategy.num_replicas_in_sync == 2


CASES = [
    # (model, kwargs, n, batch_size, learning rate)
    pytest.param(keras_mle.LinearRegression, {}, 100, 100, 0.5, id="linear-full-batch"),
    # Batches of 32, 32, 32 and a last one of 4 rows (2 per replica).
    pytest.param(keras_mle.LinearRegression, {}, 100, 32, 0.5, id="linear-uneven-last"),
    # Batches of 50, 50 and a last one of 1 row: one replica gets no data at all.
    pytest.param(
        keras_mle.GaussianRegression,
        {"initial_sigma": 0.5},
        101,
        50,
        0.02,
        id="regression-one-row-last",
    ),
    pytest.param(
        keras_mle.GaussianMLE,
        {"initial_mu": 1.4, "initial_sigma": 1.3},
        1001,
        250,
        0.5,
        id="mle-one-row-last",
    ),
]


def _arrays(cls, n):
    if cls is keras_mle.GaussianMLE:
        return (data.gaussian_sample(n=n, seed=0),)
    return data.noisy_line(n=n, seed=0)


@pytest.mark.parametrize("cls, kwargs, n, batch_size, lr", CASES)
def test_mirrored_fit_matches_one_device(strategy, cls, kwargs, n, batch_size, lr):
    arrays = _arrays(cls, n)
    x = arrays[0]
    weights = np.random.default_rng(1).uniform(0.5, 2.0, size=n).astype(np.float32)

    single = built(cls(**kwargs), x)
    init = single.get_weights()
    single.compile(optimizer=keras.optimizers.SGD(lr))
    with strategy.scope():
        mirrored = built(cls(**kwargs), x)
        mirrored.set_weights(init)
        mirrored.compile(optimizer=keras.optimizers.SGD(lr))
    assert mirrored.distribute_strategy is strategy

    fit_args = {"batch_size": batch_size, "epochs": 3, "shuffle": False, "verbose": 0}
    expected = single.fit(*arrays, sample_weight=weights, **fit_args)
    history = mirrored.fit(*arrays, sample_weight=weights, **fit_args)

    iterations = keras.ops.convert_to_numpy(mirrored.optimizer.iterations)
    assert iterations == keras.ops.convert_to_numpy(single.optimizer.iterations)
    for k, value in single.params.items():
        np.testing.assert_allclose(mirrored.params[k], value, atol=DISTRIBUTED_ATOL, err_msg=k)
    # The reported loss is the global weighted mean, not a per-replica one.
    np.testing.assert_allclose(history.history["loss"], expected.history["loss"], rtol=1e-5)

    if cls is keras_mle.GaussianRegression:
        # evaluate() too: the weighted mean NLL over replicas, uneven last batch included.
        kwargs = {"sample_weight": weights, "batch_size": batch_size, "verbose": 0}
        evaluation = mirrored.evaluate(*arrays, **kwargs)
        np.testing.assert_allclose(evaluation, single.evaluate(*arrays, **kwargs), rtol=1e-5)


def test_epoch_dataset_under_strategy_is_refused_clearly(strategy):
    x, y = data.noisy_line(n=20, seed=0)
    with strategy.scope():
        model = built(keras_mle.LinearRegression(), x)
        model.compile(optimizer=keras.optimizers.SGD(0.1))
    before = model.get_weights()
    dataset = data.epoch_dataset(*model.check_data(x, y), batch_size=10)
    with pytest.raises(ValueError, match="single-device fast path"):
        model.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0)
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
