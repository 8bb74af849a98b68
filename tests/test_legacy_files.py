"""Files written by the previous release (keras_mle 0.1.0) load and resume with today's code.

`tests/data/make_legacy_files.py`, run under that release, wrote the `.keras` files, a
`BackupAndRestore` folder of a shuffled fit stopped after epoch 2 of 4 (its lock file
included, in that release's format), and `expected.json`: what that release computed.
"""

import json
import pathlib
import shutil

import keras
import numpy as np
import pytest

import keras_mle
from keras_mle import callbacks

DATA = pathlib.Path(__file__).parent / "data"
EXPECTED = json.loads((DATA / "expected.json").read_text())
# The same float32 computation on the same weights: equal up to the order of a few sums.
RTOL = 1e-6


def line_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    y = 1.5 * x[:, 0] - 0.5 * x[:, 1] + 2.0 + 0.3 * rng.normal(size=200)
    return x.astype(np.float32), y.astype(np.float32)


@pytest.mark.parametrize(
    "name, file",
    [
        ("linear", "linear_regression.keras"),
        ("network", "gaussian_network.keras"),
        ("student", "student_t_regression.keras"),
    ],
)
def test_a_model_saved_by_the_previous_release_predicts_as_it_did(name, file):
    model = keras.saving.load_model(DATA / file)
    expected = EXPECTED[name]
    inputs = np.asarray(EXPECTED["inputs"], np.float32)
    np.testing.assert_allclose(model.predict(inputs, verbose=0), expected["predict"], rtol=RTOL)
    assert list(model.param_names) == expected["param_names"]
    for key, value in expected["params"].items():
        np.testing.assert_allclose(model.params[key], value, rtol=RTOL, err_msg=key)
    if name == "network":
        sigma = model.predict_distribution(inputs)["sigma"]
        np.testing.assert_allclose(sigma, expected["sigma"], rtol=RTOL)


def test_a_loaded_model_trains_on():
    x, y = line_data()
    model = keras.saving.load_model(DATA / "linear_regression.keras")
    before = int(model.optimizer.iterations)
    model.fit(x, y, batch_size=len(x), epochs=2, shuffle=False, verbose=0)
    assert int(model.optimizer.iterations) == before + 2


def test_a_backup_of_the_previous_release_resumes_to_its_uninterrupted_result(tmp_path):
    folder = tmp_path / "backup"
    shutil.copytree(DATA / "backup", folder)  # its stale lock file in the old format too
    x, y = line_data()
    keras.utils.set_random_seed(99)  # the order must come from the backup's seed
    model = keras_mle.LinearRegression(m_initializer="zeros")
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    history = model.fit(
        x, y, batch_size=32, epochs=4, shuffle=True, verbose=0,
        callbacks=[callbacks.BackupAndRestore(folder)],
    )  # fmt: skip
    assert history.epoch == [2, 3]
    expected = EXPECTED["resume"]
    assert int(model.optimizer.iterations) == expected["iterations"]
    for key, value in expected["params"].items():
        np.testing.assert_array_equal(model.params[key], np.asarray(value, np.float32))
