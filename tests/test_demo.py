"""The demo end to end, as `make demo` runs it: a real `keras-mle demo` subprocess."""

import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_mle
from keras_mle import closed_form, demo


def _run_demo(out, *flags):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg")
    result = subprocess.run(
        [sys.executable, "-m", "keras_mle.cli", "demo", "--out", str(out), *flags],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout


@pytest.fixture(scope="module")
def quick_demo_run(tmp_path_factory):
    """`keras-mle demo --quick`: every output of `make demo`, a tenth of the epochs."""
    return _run_demo(tmp_path_factory.mktemp("quick_demo"), "--quick")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The full `make demo` run (about a minute, most of it the eager loop)."""
    return _run_demo(tmp_path_factory.mktemp("demo"))


def _table_rows(stdout, title_start):
    block = stdout.split(title_start, 1)[1].split("\n\n", 1)[0]
    rows = {}
    for line in block.splitlines():
        cells = line.split()
        if len(cells) >= 4 and re.fullmatch(r"[a-z_]+", cells[0]):
            rows[cells[0]] = cells[1:]
    return rows


NETWORK_TITLE = "Noise growing with x"
SIGMA_ERROR = re.compile(r"largest relative error of sigma\(x\) on 19 x .*\s0\.0%\s+([\d.]+)%")
COVERAGE = re.compile(r"95% interval coverage on 10,000 held-out points\s+95\.0%\s+([\d.]+)%")


def _network_results(stdout):
    """The network experiment's largest sigma(x) error and 95% coverage, in percent."""
    block = stdout.split(NETWORK_TITLE, 1)[1].split("\nWrote plots", 1)[0]
    return float(SIGMA_ERROR.search(block)[1]), float(COVERAGE.search(block)[1]), block


def test_demo_writes_plots_logs_and_models(quick_demo_run):
    out, _ = quick_demo_run
    names = ("line_fit", "line_loss", "gaussian_fit", "gaussian_loss", "mse_vs_loglik")
    for name in (*names, "gaussian_network"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 1000
    for experiment in ("line", "gaussian", "gaussian_regression"):
        runs = os.listdir(out / "tensorboard" / experiment)
        assert "fit" in runs and "xla" in runs
    assert {"train", "calibration"} <= set(
        os.listdir(out / "tensorboard" / "gaussian_network" / "fit")
    )
    results = (out / "results.txt").read_text()
    assert results.startswith("Line y = m x + b")
    assert NETWORK_TITLE in results
    # Every mode makes the same full-batch steps from the same start: the saved models agree
    # (XLA to about 1 ulp; 1e-6 relative is a few float32 ulps).
    params = [
        keras.models.load_model(out / "models" / f"gaussian_{mode}.keras").params
        for mode in demo.MODES
    ]
    for other in params[1:]:
        for name in ("mu", "sigma"):
            np.testing.assert_allclose(other[name], params[0][name], rtol=1e-6)


def test_demo_network_prints_sigma_error_and_coverage(quick_demo_run):
    out, stdout = quick_demo_run
    sigma_error, coverage, block = _network_results(stdout)
    assert 0.0 <= sigma_error and 0.0 <= coverage <= 100.0
    assert "Quick run: a tenth of the data, not trained to convergence" in block
    # The saved model is the one whose sigma(x) the table prints (rounded to 3 decimals).
    model = keras.models.load_model(out / "models" / "gaussian_network_fit.keras")
    assert isinstance(model, keras_mle.GaussianNetwork)
    printed = [float(v) for v in re.search(r"fitted sigma\(x\)(.*)", block)[1].split()]
    fitted = model.predict_distribution(demo.SIGMA_GRID[::3, None])["sigma"]
    np.testing.assert_allclose(fitted, printed, atol=6e-4)


@pytest.mark.slow
def test_full_demo_network_is_calibrated(demo_run):
    _, stdout = demo_run
    sigma_error, coverage, block = _network_results(stdout)
    # 10,000 held-out points: a calibrated 95% interval covers 95% +- 0.2% (one standard error).
    assert 93.0 <= coverage <= 97.0
    assert sigma_error < 10.0
    assert "Quick run" not in block


@pytest.mark.slow
def test_full_demo_converges_to_the_closed_form(demo_run):
    out, _ = demo_run
    model = keras.models.load_model(out / "models" / "gaussian_fit.keras")
    expected = closed_form.gaussian_mle(keras_mle.data.gaussian_sample(n=1000, seed=0))
    # float32 training: 1e-5 relative is a few ulps above float32 resolution of mu ~ 2.
    np.testing.assert_allclose(model.params["mu"], expected["mu"], rtol=1e-5)


@pytest.mark.parametrize(
    "title, reference",
    [
        ("Line y = m x + b", "line"),
        ("Gaussian (mu, sigma)", "gaussian"),
        ("Line y ~ N(", "gaussian_regression"),
    ],
)
@pytest.mark.slow
def test_demo_tables_agree_with_closed_form(demo_run, title, reference):
    _, stdout = demo_run
    rows = _table_rows(stdout, title)
    experiment = next(e for e in demo.experiments() if e.name == reference)
    assert set(experiment.reference) <= set(rows)
    for name, value in experiment.reference.items():
        truth, closed, *estimates = (float(c) for c in rows[name])
        assert closed == pytest.approx(float(value), abs=1e-6)
        assert len(estimates) == len(demo.MODES)
        for estimate in estimates:
            # 5e-5 relative: at least 4 significant digits of the closed-form MLE in every mode,
            # a bar float32 fits run to convergence clear with room (float32 holds ~7 digits).
            assert estimate == pytest.approx(float(value), rel=5e-5)
