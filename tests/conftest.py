"""Shared test setup: quiet TensorFlow, two logical CPU devices, and the opt-in slow marker."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPU devices stand in for two GPUs in the tf.distribute tests; this must run
# before any op executes, so it lives here rather than in a fixture.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)


@pytest.fixture(scope="session")
def mirrored_strategy():
    """One MirroredStrategy over the two logical CPUs for the whole session.

    Each MirroredStrategy numbers its collective ops from the same start, so a second strategy
    in one process can collide with the first ("Shape mismatch in the collective instance"):
    every test shares this one.
    """
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@pytest.fixture(scope="module")
def line():
    """The first article's data: y = x + 2 plus N(0, 0.15^2) noise, 100 points."""
    from keras_mle import data

    return data.noisy_line(m=1.0, b=2.0, n=100, noise=0.15, seed=0)


@pytest.fixture(scope="module")
def samples():
    """The second article's data: 1000 draws from N(2, 1)."""
    from keras_mle import data

    return data.gaussian_sample(mu=2.0, sigma=1.0, n=1000, seed=0)


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow") or "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
