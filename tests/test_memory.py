"""Memory is bounded by the data, never by `batch_size`: a batch larger than the data is the
full batch, on every path (a padded batch of 10^9 rows would need 4 GB per array)."""

import resource

import keras
import numpy as np
import pytest

import keras_mle
from keras_mle import data

HUGE = 10**9


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("path", ["fit", "loops-eager", "loops-function", "loops-xla"])
def test_a_batch_larger_than_the_data_is_the_full_batch(path):
    x, y = data.noisy_line(n=30, seed=0)
    results = []
    before = peak_mb()
    for batch_size in (30, HUGE):
        model = keras_mle.LinearRegression(m_initializer="zeros")
        if path == "fit":
            model.compile(optimizer=keras.optimizers.SGD(0.3))
            model.fit(x, y, batch_size=batch_size, epochs=3, shuffle=False, verbose=0)
            model.evaluate(x, y, batch_size=batch_size, verbose=0)
            model.predict(x, batch_size=batch_size, verbose=0)
        else:
            keras_mle.loops.train(
                model, x, y, batch_size=batch_size, epochs=3, mode=path.removeprefix("loops-"),
                optimizer=keras.optimizers.SGD(0.3), verbose=0,
            )  # fmt: skip
        results.append(model.params)
    # The same full-batch steps, bit for bit.
    for name in results[0]:
        np.testing.assert_array_equal(results[1][name], results[0][name], err_msg=name)
    # A padded batch would have taken gigabytes; 200 MB covers tracing and compilation.
    assert peak_mb() - before < 200


def test_epoch_dataset_with_a_huge_batch_size():
    x, y = data.noisy_line(n=30, seed=0)
    batches = data.stack_batches(x, y, batch_size=HUGE)
    assert batches.x.shape == (1, 30) and batches.last_x is None
