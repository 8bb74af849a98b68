"""The example scripts run as a user runs them, and say what they claim."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run_example(name, *args, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg")
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow  # a fresh process that imports TensorFlow: 12-25 s
def test_inference_summary_example(tmp_path):
    out = _run_example("inference_summary.py", cwd=tmp_path)
    assert out.count("keras_mle inference:") >= 2
    line = next(line for line in out.splitlines() if line.startswith("sample at 1e6"))
    samples = 1e6 + np.random.default_rng(1).normal(0.0, 0.01, 1000)
    mu = float(line.split("mu = ")[1].split()[0])
    # float64 adapt of a sample at 1e6 with spread 0.01: the mean to 1e-9 absolute (12 digits).
    assert mu == pytest.approx(np.mean(samples), abs=1e-9)
    assert "converged=False" in out


@pytest.mark.slow
def test_tensorboard_workflow_example(tmp_path):
    out = _run_example("tensorboard_workflow.py", "--out", tmp_path / "wf", cwd=tmp_path)
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line[:1] in "mbs"}
    for name in ("m", "b", "sigma"):
        reloaded, resumed, closed = map(float, rows[name])
        # Printed to 6 decimals; both paths trained to convergence on the same data.
        assert reloaded == pytest.approx(closed, abs=2e-5)
        assert resumed == pytest.approx(closed, abs=2e-5)


@pytest.mark.slow
def test_heteroscedastic_linear_example(tmp_path):
    out = _run_example("heteroscedastic_linear.py", cwd=tmp_path)
    assert "Likelihood ratio test" in out


@pytest.mark.slow
def test_heteroscedastic_network_example(tmp_path):
    out = _run_example("heteroscedastic_network.py", "--out", tmp_path / "net", cwd=tmp_path)
    assert "coverage" in out.lower()
    assert any(p.suffix == ".png" for p in (tmp_path / "net").rglob("*"))
