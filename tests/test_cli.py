"""`keras-mle fit` and `keras-mle show` on small CSV files written by the tests.

Most commands run in-process through `keras_mle.cli.main`, as the console script calls it; one
runs the console front end (`python -m keras_mle_cli`) in a fresh process, to see that a fit
prints nothing on stderr (no TensorFlow log lines). The errors answered without TensorFlow are in
`tests/test_cli_errors.py`.
"""

import json
import os
import re
import stat
import subprocess
import sys
import threading
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import cli_run as run
from helpers import summary_rows

from keras_mle import checkpoint, closed_form

ROOT = Path(__file__).resolve().parents[1]
ROWS = 60
#: The CLI stops when the whitened gradient norm is under 1e-6 / sqrt(n): on these unit-scale
#: data the estimates are then within about 1e-7 of the float64 closed form.
CLI_TOL = 1e-6


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=ROWS), rng.normal(size=ROWS)
    y = 1.0 + 2.0 * a - 1.0 * b + rng.normal(size=ROWS)
    sample = rng.normal(3.0, 1.0, size=ROWS)
    path = tmp_path / "data.csv"
    lines = ["a,b,y,sample"] + [
        ",".join(repr(float(v)) for v in row) for row in zip(a, b, y, sample, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path, dict(a=a, b=b, y=y, sample=sample)


def printed_parameters(out):
    """`{label: estimate}` from the table `show` prints without data."""
    values = {}
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split() == ["parameter", "estimate"])
    for line in lines[start + 1 :]:
        label, estimate = line.split()
        values[label] = float(estimate)
    return values


def _xy(values):
    return np.stack([values["a"], values["b"]], 1), values["y"]


@pytest.mark.parametrize(
    "model, columns, expected, labels",
    [
        (
            "linear",
            ["--x", "a,b", "--y", "y"],
            lambda c: closed_form.ols(*_xy(c)),
            {"m[a]": ("m", 0), "m[b]": ("m", 1), "b": ("b", None)},
        ),
        (
            "gaussian",
            ["--y", "sample"],
            lambda c: closed_form.gaussian_mle(c["sample"]),
            {"mu": ("mu", None), "sigma": ("sigma", None)},
        ),
        (
            "gaussian-regression",
            ["--x", "a,b", "--y", "y"],
            lambda c: closed_form.ols(*_xy(c)),
            {"m[a]": ("m", 0), "m[b]": ("m", 1), "b": ("b", None), "sigma": ("sigma", None)},
        ),
    ],
)
def test_default_fit_converges_and_show_names_the_columns(
    tmp_path, capsys, data, model, columns, expected, labels
):
    path, values = data
    out_file = tmp_path / "model.keras"
    code, out, err = run(capsys, "fit", model, "--data", path, *columns, "--out", out_file)
    assert (code, err) == (0, "")
    fitted = keras.models.load_model(out_file)
    reference = expected(values)
    for name, value in fitted.params.items():
        np.testing.assert_allclose(value, reference[name], atol=CLI_TOL, err_msg=name)
    steps = int(re.search(r"(\d+) optimizer step\(s\)", out).group(1))
    assert int(fitted.optimizer.iterations) == steps  # full batch: one step per epoch
    assert re.search(r"converged at epoch \d+: gradient norm", out)
    rows = summary_rows(out)
    assert set(rows) == set(labels)
    for label, (name, index) in labels.items():
        estimate = fitted.params[name] if index is None else fitted.params[name][index]
        # The table prints 6 significant digits.
        assert rows[label][0] == pytest.approx(float(estimate), rel=1e-5, abs=1e-12), label
    assert f"saved model: {out_file}" in out

    code, shown, err = run(capsys, "show", out_file)
    assert (code, err) == (0, "")
    assert shown.splitlines()[0] == f"{type(fitted).__name__} ({out_file})"
    printed = printed_parameters(shown)
    assert set(printed) == set(labels)
    for label, (name, index) in labels.items():
        estimate = fitted.params[name] if index is None else fitted.params[name][index]
        assert printed[label] == pytest.approx(float(estimate), rel=1e-7), label


def test_a_capped_run_fails_then_resumes_exactly(tmp_path, capsys, data):
    path, _ = data
    common = ["fit", "gaussian-regression", "--data", path, "--x", "a,b", "--y", "y"]
    logs, backup = tmp_path / "logs", tmp_path / "backup"
    code, out, err = run(
        capsys, *common, "--epochs", "15", "--logdir", logs, "--checkpoint-dir", backup
    )
    assert (code, out) == (1, "")
    assert re.fullmatch(
        r"keras-mle fit: error: did not converge within --epochs 15: gradient norm \S+ > "
        r"1\.29\d*e-07; run more epochs \(add --resume to continue from the backup\) or change "
        r"--learning-rate; nothing saved to --out\n",
        err,
    ), err
    assert os.listdir(logs / "train")
    assert checkpoint.read_backup(backup)["epoch"] == 15

    code, out, err = run(
        capsys, *common, "--checkpoint-dir", backup, "--resume", "--out", tmp_path / "r.keras"
    )
    assert (code, err) == (0, "")
    run_epochs, steps = map(int, re.search(r"(\d+) epoch\(s\) run, (\d+) optimizer", out).groups())
    assert steps == run_epochs + 15
    code, _, err = run(capsys, *common, "--out", tmp_path / "straight.keras")
    assert (code, err) == (0, "")
    resumed = keras.models.load_model(tmp_path / "r.keras")
    straight = keras.models.load_model(tmp_path / "straight.keras")
    assert int(resumed.optimizer.iterations) == int(straight.optimizer.iterations) == steps
    for name in straight.params:
        np.testing.assert_array_equal(resumed.params[name], straight.params[name], err_msg=name)

    # A backup without its record, resumed as another model: refused before training.
    os.remove(backup / "keras_mle_cli.json")
    code, out, err = run(
        capsys, "fit", "linear", "--data", path, "--x", "a,b", "--y", "y",
        "--checkpoint-dir", backup, "--resume",
    )  # fmt: skip
    assert (code, out) == (2, "")
    assert err.startswith(
        f"keras-mle fit: error: --resume: the backup in {backup} is not a LinearRegression fit "
        "of 2 column(s) with sgd ("
    )
    assert len(err.splitlines()) == 1
    assert checkpoint.read_backup(backup)["epoch"] > 15  # the backup is untouched


def test_divergence_and_no_convergence_exit_1_and_keep_the_saved_model(tmp_path, capsys, data):
    path, _ = data
    out_file = tmp_path / "model.keras"
    out_file.write_bytes(b"the previous model")
    common = ["fit", "linear", "--data", path, "--x", "a,b", "--y", "y", "--out", out_file]
    # After adapt the squared-error Hessian is 2 I: SGD(1e6) multiplies the error by -2e6 a step.
    code, out, err = run(capsys, *common, "--learning-rate", "1e6")
    assert (code, out) == (1, "")
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("keras-mle fit: error: the fit diverged (")
    assert lines[0].endswith("try a smaller --learning-rate (now 1e+06); nothing saved to --out")
    assert out_file.read_bytes() == b"the previous model"
    assert not os.path.exists(f"{out_file}.json")

    code, out, err = run(
        capsys, "fit", "gaussian-regression", "--data", path, "--x", "a,b", "--y", "y",
        "--out", out_file, "--epochs", "2",
    )  # fmt: skip
    assert (code, out) == (1, "")
    assert err.startswith("keras-mle fit: error: did not converge within --epochs 2: ")
    assert out_file.read_bytes() == b"the previous model"


def test_show_refuses_a_model_with_non_finite_parameters(tmp_path, capsys):
    import keras_mle

    model = keras_mle.LinearRegression()
    model(np.zeros((2, 1), np.float32))
    model.set_params({"m": np.array([1.0]), "b": 0.0})
    model.weights[1].assign(np.nan)
    path = tmp_path / "nan.keras"
    model.save(path)
    code, out, err = run(capsys, "show", path)
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"keras-mle show: error: {path} holds non-finite parameters (b = nan): not a usable fit"
    ]


BAD_CSVS = {
    "empty": "",
    "header only": "a,b,y,sample\n",
    "non-numeric cell": "a,b,y,sample\n1,2,3,4\n1,oops,3,4\n",
    "empty cell": "a,b,y,sample\n1,2,3,4\n1,,3,4\n",
    "short row": "a,b,y,sample\n1,2,3,4\n1\n",
    "NaN": "a,b,y,sample\n1,2,3,4\nnan,2,3,4\n2,1,0,4\n",
}


def _check_usage_error(tmp_path, code, out, err, *, command="fit"):
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"keras-mle {command}: error: "), err
    assert not (tmp_path / "outputs").exists()


def _outputs(tmp_path):
    outputs = tmp_path / "outputs"
    return ["--logdir", outputs / "logs", "--checkpoint-dir", outputs / "backup"]


@pytest.mark.parametrize("case", sorted(BAD_CSVS))
def test_bad_csv_gives_one_line_and_exit_code_2(tmp_path, capsys, case):
    path = tmp_path / "bad.csv"
    path.write_text(BAD_CSVS[case])
    args = ["fit", "linear", "--data", path, "--x", "a,b", "--y", "y", *_outputs(tmp_path)]
    code, out, err = run(capsys, *args)
    _check_usage_error(tmp_path, code, out, err)


@pytest.mark.parametrize(
    "args, message",
    [
        (["linear", "--data", "{missing}", "--x", "a", "--y", "y"], "cannot read"),
        (["linear", "--data", "{csv}", "--x", "a,zz", "--y", "y"], "column 'zz' not found"),
        (["linear", "--data", "{csv}", "--x", "a", "--y", "nope"], "column 'nope' not found"),
        (["linear", "--data", "{csv}", "--x", "a"], "needs --x"),
        (["gaussian", "--data", "{csv}", "--x", "a", "--y", "y"], "one column"),
        (["linear", "--data", "{csv}", "--x", "a", "--y", "y", "--optimizer", "nope"], "nope"),
        (["linear", "--data", "{csv}", "--x", "a", "--y", "y", "--resume"], "--resume needs"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_code_2(tmp_path, capsys, data, args, message):
    path, _ = data
    args = [a.format(csv=path, missing=tmp_path / "missing.csv") for a in args]
    outputs = ["--logdir", tmp_path / "outputs" / "logs"]
    code, out, err = run(capsys, "fit", *args, *outputs)
    _check_usage_error(tmp_path, code, out, err)
    assert message in err


def test_show_errors(tmp_path, capsys):
    code, out, err = run(capsys, "show", tmp_path / "missing.keras")
    _check_usage_error(tmp_path, code, out, err, command="show")
    (tmp_path / "broken.keras").write_text("not a zip archive")
    code, out, err = run(capsys, "show", tmp_path / "broken.keras")
    _check_usage_error(tmp_path, code, out, err, command="show")


def test_show_with_data_prints_the_summary_table(tmp_path, capsys, data):
    import statsmodels.api as sm

    path, values = data
    out_file = tmp_path / "line.keras"
    code, _, err = run(
        capsys, "fit", "linear", "--data", path, "--x", "a,b", "--y", "y", "--out", out_file
    )
    assert (code, err) == (0, "")
    # The same data, tab-separated: the separator is told from the header.
    tabbed = tmp_path / "data.tsv"
    tabbed.write_text(path.read_text().replace(",", "\t"))
    # Without --x/--y, show uses the columns recorded beside the model.
    code, out, err = run(capsys, "show", out_file, "--data", tabbed)
    assert (code, err) == (0, "")
    assert "keras_mle inference: LinearRegression" in out and "std err" in out
    rows = summary_rows(out)
    design = sm.add_constant(np.stack([values["a"], values["b"]], 1))
    ols = sm.OLS(values["y"], design).fit()
    # The table prints 6 significant digits.
    for label, index in (("m[a]", 1), ("m[b]", 2), ("b", 0)):
        assert rows[label][0] == pytest.approx(ols.params[index], rel=1e-5)
        assert rows[label][1] == pytest.approx(ols.bse[index], rel=1e-5)
    assert json.loads((tmp_path / "line.keras.json").read_text())["x"] == ["a", "b"]
    code, out, err = run(capsys, "show", out_file, "--data", path, "--x", "nope", "--y", "y")
    assert code == 2 and "nope" in err and len(err.strip().splitlines()) == 1
    # A robust table: statsmodels' HC3 standard errors (printed to 6 significant digits).
    code, out, err = run(capsys, "show", out_file, "--data", path, "--cov-type", "HC3")
    assert (code, err) == (0, "")
    rows, robust = summary_rows(out), ols.get_robustcov_results(cov_type="HC3")
    for label, index in (("m[a]", 1), ("m[b]", 2), ("b", 0)):
        assert rows[label][1] == pytest.approx(robust.bse[index], rel=1e-5)
    code, out, err = run(capsys, "show", out_file, "--cov-type", "HC1")
    assert code == 2 and err.strip().endswith(
        "--cov-type needs --data, the file to compute the summary on"
    )


# A console-script subprocess (about 10 s): the in-process tests cover the same fit.
@pytest.mark.slow
def test_console_fit_is_quiet_and_converges_on_badly_scaled_data(tmp_path):
    """A fresh `keras-mle fit` process: no stderr at all, rows named after the columns.

    Excel-style file: UTF-8 byte order mark, semicolons, one row with an NA cell (dropped).
    """
    rng = np.random.default_rng(1)
    n = 200
    income, debt = rng.normal(1e4, 1e3, n), rng.normal(-5e3, 2e2, n)
    y = 3.0 + 0.002 * income - 0.01 * debt + rng.normal(size=n)
    lines = ["income;debt;y"] + [
        f"{a!r};{b!r};{c!r}"
        for a, b, c in zip(income.tolist(), debt.tolist(), y.tolist(), strict=True)
    ]
    lines[5] = "NA;1;2"  # data row 4 (file line 6)
    (tmp_path / "scaled.csv").write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    done = subprocess.run(
        [sys.executable, "-m", "keras_mle_cli", "fit", "linear", "--data", "scaled.csv",
         "--x", "income,debt", "--y", "y", "--missing", "drop", "--out", "m.keras"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.startswith("dropped 1 row(s) with a missing value (lines 6)\n")
    keep = np.arange(n) != 4
    x = np.stack([income, debt], 1)[keep]
    reference = closed_form.ols(x, y[keep])
    fitted = keras.models.load_model(tmp_path / "m.keras")
    # float64 SGD(0.5) after adapt solves least squares in one step, up to rounding; 1e-9 of
    # the slopes' size leaves room for the whitening of x near 1e4.
    np.testing.assert_allclose(fitted.params["m"], reference["m"], rtol=1e-9)
    np.testing.assert_allclose(fitted.params["b"], reference["b"], rtol=1e-9)
    rows = summary_rows(done.stdout)
    assert list(rows) == ["m[income]", "m[debt]", "b"]
    assert rows["m[income]"][0] == pytest.approx(reference["m"][0], rel=1e-5)


def test_records_are_written_with_the_umask_mode(tmp_path, capsys, data):
    """The record in the backup folder and beside the model: mode 0o666 less the umask."""
    path, _ = data
    old = os.umask(0o022)
    try:
        code, _, err = run(
            capsys, "fit", "linear", "--data", path, "--x", "a,b", "--y", "y",
            "--checkpoint-dir", tmp_path / "backup", "--out", tmp_path / "m.keras",
        )  # fmt: skip
    finally:
        os.umask(old)
    assert (code, err) == (0, "")
    for record in (tmp_path / "backup" / "keras_mle_cli.json", tmp_path / "m.keras.json"):
        assert stat.S_IMODE(os.stat(record).st_mode) == 0o644, record
    assert json.loads((tmp_path / "backup" / "keras_mle_cli.json").read_text()) == {
        "model": "linear",
        "x": ["a", "b"],
        "y": "y",
        "optimizer": "sgd",
    }


def test_a_run_refused_by_the_backup_lock_leaves_the_record_of_the_running_fit(
    tmp_path, capsys, data
):
    path, _ = data
    backup = tmp_path / "backup"
    backup.mkdir()
    running = {"model": "gaussian-regression", "x": ["a", "b"], "y": "y", "optimizer": "nadam"}
    (backup / "keras_mle_cli.json").write_text(json.dumps(running))
    held, done = threading.Event(), threading.Event()

    def hold_the_folder():  # the running fit, in another thread of this process
        holder = checkpoint.BackupAndRestore(backup, restore=False)
        holder.restore_state(object())  # takes the folder's lock (nothing to restore)
        held.set()
        done.wait(120)
        holder.release()

    thread = threading.Thread(target=hold_the_folder)
    thread.start()
    try:
        assert held.wait(60)
        code, out, err = run(
            capsys, "fit", "linear", "--data", path, "--x", "a", "--y", "y",
            "--checkpoint-dir", backup,
        )  # fmt: skip
    finally:
        done.set()
        thread.join()
    assert (code, out) == (2, "")
    assert err.startswith("keras-mle fit: error: --checkpoint-dir: The backup folder ")
    assert "in use by another training run in this process" in err
    assert json.loads((backup / "keras_mle_cli.json").read_text()) == running


def test_show_labels_come_from_the_model(tmp_path, capsys, data):
    """The fitted model's own labels, record or not; `name_i` for a vector without features."""
    path, _ = data
    out_file = tmp_path / "m.keras"
    code, _, err = run(
        capsys, "fit", "linear", "--data", path, "--x", "a,b", "--y", "y", "--out", out_file
    )
    assert (code, err) == (0, "")
    os.remove(f"{out_file}.json")
    code, shown, err = run(capsys, "show", out_file)
    assert (code, err) == (0, "")
    fitted = keras.models.load_model(out_file)
    assert printed_parameters(shown) == pytest.approx(
        {
            "m[a]": fitted.params["m"][0],
            "m[b]": fitted.params["m"][1],
            "b": float(fitted.params["b"]),
        },
        rel=1e-7,
    )

    import keras_mle

    unnamed = keras_mle.LinearRegression()
    unnamed(np.zeros((2, 2), np.float32))
    unnamed.set_params({"m": np.array([1.5, -2.0]), "b": 0.25})
    unnamed.save(tmp_path / "unnamed.keras")
    code, shown, err = run(capsys, "show", tmp_path / "unnamed.keras")
    assert (code, err) == (0, "")
    # The table prints 8 significant digits of float32 values set from these decimals.
    assert printed_parameters(shown) == pytest.approx(
        {"m_0": 1.5, "m_1": -2.0, "b": 0.25}, rel=1e-7
    )


def test_show_of_a_network_says_there_is_no_table(capsys):
    path = os.path.join(os.path.dirname(__file__), "data", "gaussian_network.keras")
    code, out, err = run(capsys, "show", path)
    assert (code, out) == (2, "")
    assert "whose weights are a network's, not named parameters" in err
