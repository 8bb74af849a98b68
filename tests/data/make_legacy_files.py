"""Writes the files in this folder with keras_mle 0.1.0 as released (run it with that release).

`python tests/data/make_legacy_files.py tests/data` under the previous release's code writes:

- `linear_regression.keras`: an adapted `LinearRegression` (two features, feature names), fitted;
- `gaussian_network.keras`: a `GaussianNetwork` over a small Dense backbone, fitted;
- `student_t_regression.keras`: a `StudentTRegression`, fitted;
- `backup/`: the `BackupAndRestore` folder of a shuffled `LinearRegression` fit stopped after
  epoch 2 of 4;
- `expected.json`: what that release computed: each model's predictions on `inputs` and its
  parameters, and the parameters and iteration count of the same shuffled fit run through
  all 4 epochs.

`tests/test_legacy_files.py` loads them with today's code and compares.
"""

import json
import os
import sys

import keras
import numpy as np

import keras_mle

EPOCHS, STOP = 4, 2


def line_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    y = 1.5 * x[:, 0] - 0.5 * x[:, 1] + 2.0 + 0.3 * rng.normal(size=200)
    return x.astype(np.float32), y.astype(np.float32)


class StopAfter(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == STOP:
            raise KeyboardInterrupt


def shuffled_fit(backup=None, callbacks=()):
    x, y = line_data()
    keras.utils.set_random_seed(3)
    model = keras_mle.LinearRegression(m_initializer="zeros")
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    extra = [] if backup is None else [keras_mle.callbacks.BackupAndRestore(backup)]
    model.fit(
        x, y, batch_size=32, epochs=EPOCHS, shuffle=True, verbose=0,
        callbacks=[*extra, *callbacks],
    )  # fmt: skip
    return model


def main(folder):
    x, y = line_data()
    inputs = x[:5]
    expected = {"inputs": inputs.tolist()}

    keras.utils.set_random_seed(0)
    linear = keras_mle.LinearRegression(feature_names=["income", "age"])
    linear.adapt(x, y)
    linear.compile(optimizer=keras.optimizers.SGD(0.5))
    linear.fit(x, y, batch_size=len(x), epochs=3, shuffle=False, verbose=0)
    linear.save(os.path.join(folder, "linear_regression.keras"))

    keras.utils.set_random_seed(0)
    backbone = keras.Sequential([keras.layers.Dense(8, activation="tanh")])
    network = keras_mle.GaussianNetwork(backbone)
    network.compile(optimizer=keras.optimizers.Adam(0.01))
    network.fit(x, y, batch_size=50, epochs=5, verbose=0)
    network.save(os.path.join(folder, "gaussian_network.keras"))

    keras.utils.set_random_seed(0)
    student = keras_mle.StudentTRegression()
    student.adapt(x, y)
    student.compile(optimizer=keras.optimizers.Adam(0.05))
    student.fit(x, y, batch_size=len(x), epochs=20, shuffle=False, verbose=0)
    student.save(os.path.join(folder, "student_t_regression.keras"))

    for name, model in (("linear", linear), ("network", network), ("student", student)):
        expected[name] = {
            "predict": np.asarray(model.predict(inputs, verbose=0), np.float64).tolist(),
            "params": {k: np.asarray(v).tolist() for k, v in model.params.items()},
            "param_names": list(model.param_names),
        }
    expected["network"]["sigma"] = np.asarray(
        network.predict_distribution(inputs)["sigma"], np.float64
    ).tolist()

    whole = shuffled_fit()
    expected["resume"] = {
        "params": {k: np.asarray(v).tolist() for k, v in whole.params.items()},
        "iterations": int(whole.optimizer.iterations.numpy()),
    }
    try:
        shuffled_fit(os.path.join(folder, "backup"), callbacks=[StopAfter()])
    except KeyboardInterrupt:
        pass
    with open(os.path.join(folder, "expected.json"), "w") as file:
        json.dump(expected, file, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
