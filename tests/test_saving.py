"""`.keras` save in this process, load in a fresh one with `safe_mode=True`, and train on.

One subprocess loads every saved model (a TensorFlow import costs seconds), reports what it
found and trains each a few more epochs; this process trains its own copies on without a reload.
Equal parameters then show that weights, optimizer slots, iteration count, learning rate and
compile config all survived.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import load_example

import keras_mle
from keras_mle import data

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "poisson_regression.py"
# Training on after a reload runs the same float32 ops from the same state: equal bits in
# practice; 1e-6 leaves room for a reordered reduction.
CONTINUE_ATOL = 1e-6
EPOCHS_BEFORE, EPOCHS_AFTER = 5, 5
QUIET = {"shuffle": False, "verbose": 0}

CHILD = textwrap.dedent(
    """
    import importlib.util, json, os, sys
    import numpy as np
    import keras
    import keras_mle  # registers the package's classes

    spec = importlib.util.spec_from_file_location("poisson_regression", sys.argv[2])
    example = importlib.util.module_from_spec(spec)
    sys.modules["poisson_regression"] = example
    spec.loader.exec_module(example)

    folder, report = sys.argv[1], {}
    for name in json.loads(sys.argv[3]):
        model = keras.models.load_model(os.path.join(folder, name + ".keras"), safe_mode=True)
        arrays = np.load(os.path.join(folder, name + ".npz"))
        args = [arrays["x"]] + ([arrays["y"]] if "y" in arrays else [])
        entry = {
            "class": type(model).__module__ + "." + type(model).__name__,
            "params": {k: np.asarray(v).tolist() for k, v in model.params.items()},
            "iterations": int(model.optimizer.iterations),
            "learning_rate": float(model.optimizer.learning_rate),
            "compile_config": model.get_compile_config(),
            "config": model.get_config(),
        }
        model.fit(*args, batch_size=len(args[0]), epochs=int(sys.argv[4]), shuffle=False,
                  verbose=0)
        entry["params_after"] = {k: np.asarray(v).tolist() for k, v in model.params.items()}
        report[name] = entry
    print("REPORT" + json.dumps(report))
    """
)


def _cases():
    x, y = data.noisy_line(m=1.0, b=2.0, n=100, noise=0.15, seed=0)
    samples = data.gaussian_sample(mu=2.0, sigma=1.0, n=1000, seed=0)
    poisson = load_example("poisson_regression")
    xp, yp = poisson.simulate(n=200, seed=1)
    return {
        # name: (model, data, optimizer); Adam so that its slots must survive too.
        "linear_regression": (
            keras_mle.LinearRegression(m_initializer=keras.initializers.Constant(0.3)),
            (x, y),
            keras.optimizers.Adam(0.05),
        ),
        "gaussian_mle": (
            keras_mle.GaussianMLE(initial_mu=1.4, initial_sigma=1.3),
            (samples,),
            keras.optimizers.Adam(0.05, amsgrad=True),
        ),
        "gaussian_regression": (
            keras_mle.GaussianRegression(initial_sigma=0.5),
            (x, y),
            keras.optimizers.Adam(0.02),
        ),
        # Two features: the vector-parameter case.
        "poisson": (poisson.PoissonRegression(), (xp, yp), keras.optimizers.SGD(0.3)),
    }


@pytest.fixture(scope="module")
def reloaded(tmp_path_factory):
    """Saves each trained model, reloads all in one fresh process; returns what both saw."""
    folder = tmp_path_factory.mktemp("saved")
    cases = _cases()
    local = {}
    for name, (model, arrays, optimizer) in cases.items():
        model.compile(optimizer=optimizer, jit_compile=False)
        model.fit(*arrays, batch_size=len(arrays[0]), epochs=EPOCHS_BEFORE, **QUIET)
        model.save(folder / f"{name}.keras")
        keys = ("x", "y")[: len(arrays)]
        np.savez(folder / f"{name}.npz", **dict(zip(keys, arrays, strict=True)))
        local[name] = {
            "params": model.params,
            "iterations": int(model.optimizer.iterations),
            "compile_config": json.loads(json.dumps(model.get_compile_config())),
            "config": json.loads(json.dumps(model.get_config())),
            "class": f"{type(model).__module__}.{type(model).__name__}",
        }

    # The child starts (and imports TensorFlow) while this process trains its copies on.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    arguments = [str(folder), str(EXAMPLE), json.dumps(list(local)), str(EPOCHS_AFTER)]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=folder,
    )
    try:
        for name, (model, arrays, _) in cases.items():
            model.fit(*arrays, batch_size=len(arrays[0]), epochs=EPOCHS_AFTER, **QUIET)
            local[name]["params_after"] = model.params
        stdout, stderr = child.communicate(timeout=300)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, stderr[-3000:]
    line = next(line for line in stdout.splitlines() if line.startswith("REPORT"))
    return local, json.loads(line[len("REPORT") :])


NAMES = ["linear_regression", "gaussian_mle", "gaussian_regression", "poisson"]


@pytest.mark.parametrize("name", NAMES)
def test_fresh_process_restores_params_and_optimizer(reloaded, name):
    local, remote = reloaded
    mine, theirs = local[name], remote[name]
    assert theirs["class"] == mine["class"]
    assert set(theirs["params"]) == set(mine["params"])
    for k, value in mine["params"].items():
        # The weights are stored as float32 bits: exact.
        np.testing.assert_array_equal(np.asarray(theirs["params"][k], np.float32), value)
    assert theirs["iterations"] == mine["iterations"] == EPOCHS_BEFORE
    expected_lr = mine["compile_config"]["optimizer"]["config"]["learning_rate"]
    assert theirs["learning_rate"] == pytest.approx(expected_lr, rel=1e-7)
    assert theirs["compile_config"] == mine["compile_config"]
    assert theirs["config"] == mine["config"]


@pytest.mark.parametrize("name", NAMES)
def test_training_on_after_reload_equals_training_on(reloaded, name):
    local, remote = reloaded
    mine, theirs = local[name], remote[name]
    for k, value in mine["params_after"].items():
        np.testing.assert_allclose(theirs["params_after"][k], value, atol=CONTINUE_ATOL, rtol=0)
    # And training did move them (the comparison is not vacuous).
    assert any(
        not np.array_equal(mine["params_after"][k], mine["params"][k]) for k in mine["params"]
    )


def test_in_process_round_trip_keeps_predictions(tmp_path):
    x, y = data.noisy_line(n=50, seed=2)
    model = keras_mle.GaussianRegression(initial_sigma=0.4)
    model.compile(optimizer=keras.optimizers.SGD(0.02))
    model.fit(x, y, batch_size=50, epochs=2, verbose=0)
    model.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras", safe_mode=True)
    assert type(restored) is keras_mle.GaussianRegression
    np.testing.assert_array_equal(restored.predict(x, verbose=0), model.predict(x, verbose=0))
    np.testing.assert_array_equal(restored.params["sigma"], model.params["sigma"])


def test_unbuilt_model_saves_and_loads(tmp_path):
    # GaussianMLE holds its variables from construction: no data needed before saving.
    model = keras_mle.GaussianMLE(initial_mu=0.5, initial_sigma=2.0)
    model.save(tmp_path / "g.keras")
    restored = keras.models.load_model(tmp_path / "g.keras")
    np.testing.assert_allclose(restored.params["mu"], 0.5)
    np.testing.assert_allclose(restored.params["sigma"], 2.0, rtol=1e-6)
