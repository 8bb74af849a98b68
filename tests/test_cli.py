"""`keras-mle fit` and `keras-mle show` on a small CSV file written by the test.

The commands run in-process through `keras_mle.cli.main`, as the console script calls it.
"""

import os

import keras
import numpy as np
import pytest

from keras_mle import checkpoint, cli, closed_form

ROWS = 60
#: SGD(0.3) for 200 epochs on unit-variance data gets this close to the closed form.
CLI_TOL = 1e-4
TRAINING = ["--optimizer", "sgd", "--learning-rate", "0.3", "--epochs", "200", "--verbose", "0"]


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=ROWS), rng.normal(size=ROWS)
    y = 1.0 + 2.0 * a - 1.0 * b + rng.normal(size=ROWS)
    sample = rng.normal(3.0, 1.0, size=ROWS)
    path = tmp_path / "data.csv"
    lines = ["a,b,y,sample"] + [
        ",".join(f"{v:.17g}" for v in row) for row in zip(a, b, y, sample, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    # The CSV holds 17 digits; the fit sees float32, as the closed form below does.
    columns = {k: v.astype(np.float32) for k, v in dict(a=a, b=b, y=y, sample=sample).items()}
    return path, columns


def run(capsys, *args):
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def printed_parameters(out):
    """`{label: estimate}` from the table that fit/show print."""
    values = {}
    for line in out.splitlines():
        cells = line.split()
        if len(cells) >= 2 and cells[0] not in ("parameter",) and _is_number(cells[1]):
            values[cells[0]] = float(cells[1])
    return values


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(
    "model, columns, expected",
    [
        (
            "linear",
            ["--x", "a,b", "--y", "y"],
            lambda c: closed_form.ols(np.stack([c["a"], c["b"]], 1), c["y"]),
        ),
        ("gaussian", ["--y", "sample"], lambda c: closed_form.gaussian_mle(c["sample"])),
        (
            "gaussian-regression",
            ["--x", "a,b", "--y", "y"],
            lambda c: closed_form.ols(np.stack([c["a"], c["b"]], 1), c["y"]),
        ),
    ],
)
def test_fit_then_show(tmp_path, capsys, data, model, columns, expected):
    path, values = data
    out_file = tmp_path / "model.keras"
    code, out, err = run(
        capsys, "fit", model, "--data", path, *columns, *TRAINING, "--out", out_file
    )
    assert code == 0, err
    fitted = keras.models.load_model(out_file)
    reference = expected(values)
    for name, value in fitted.params.items():
        np.testing.assert_allclose(value, reference[name], atol=CLI_TOL, err_msg=name)
    assert int(fitted.optimizer.iterations) == 200
    printed = printed_parameters(out)
    assert f"saved model: {out_file}" in out

    code, shown, err = run(capsys, "show", out_file)
    assert code == 0, err
    assert shown.splitlines()[0].startswith(type(fitted).__name__)
    assert printed_parameters(shown) == {k: printed[k] for k in printed_parameters(shown)}
    assert set(printed_parameters(shown)) == set(printed) and printed


def test_fit_writes_tensorboard_logs_and_a_checkpoint_and_resumes_exactly(tmp_path, capsys, data):
    path, _ = data
    common = [
        "fit",
        "gaussian-regression",
        "--data",
        path,
        "--x",
        "a,b",
        "--y",
        "y",
        "--verbose",
        "0",
    ]
    logs, backup = tmp_path / "logs", tmp_path / "backup"
    code, _, err = run(
        capsys, *common, "--epochs", "15", "--logdir", logs, "--checkpoint-dir", backup
    )
    assert code == 0, err
    assert os.listdir(logs / "train")
    assert checkpoint.read_backup(backup)["epoch"] == 15

    code, out, err = run(
        capsys,
        *common,
        "--epochs",
        "25",
        "--checkpoint-dir",
        backup,
        "--resume",
        "--out",
        tmp_path / "resumed.keras",
    )
    assert code == 0, err
    assert "10 epoch(s) run, 25 optimizer step(s)" in out
    code, _, err = run(capsys, *common, "--epochs", "25", "--out", tmp_path / "straight.keras")
    assert code == 0, err
    resumed = keras.models.load_model(tmp_path / "resumed.keras")
    straight = keras.models.load_model(tmp_path / "straight.keras")
    for name in straight.params:
        np.testing.assert_array_equal(resumed.params[name], straight.params[name], err_msg=name)
    for a, b in zip(resumed.optimizer.variables, straight.optimizer.variables, strict=True):
        np.testing.assert_array_equal(a, b)


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
    return [
        "--logdir",
        outputs / "logs",
        "--checkpoint-dir",
        outputs / "backup",
        "--out",
        outputs / "model.keras",
    ]


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
    ],
)
def test_bad_arguments_give_one_line_and_exit_code_2(tmp_path, capsys, data, args, message):
    path, _ = data
    args = [a.format(csv=path, missing=tmp_path / "missing.csv") for a in args]
    code, out, err = run(capsys, "fit", *args, *_outputs(tmp_path))
    _check_usage_error(tmp_path, code, out, err)
    assert message in err


def test_resume_needs_a_checkpoint_dir(tmp_path, capsys, data):
    path, _ = data
    code, out, err = run(
        capsys,
        "fit",
        "linear",
        "--data",
        path,
        "--x",
        "a",
        "--y",
        "y",
        "--resume",
        "--logdir",
        tmp_path / "outputs" / "logs",
    )
    _check_usage_error(tmp_path, code, out, err)
    assert "--resume needs --checkpoint-dir" in err


def test_out_must_be_a_keras_file(tmp_path, capsys, data):
    path, _ = data
    code, out, err = run(
        capsys,
        "fit",
        "linear",
        "--data",
        path,
        "--x",
        "a",
        "--y",
        "y",
        "--out",
        tmp_path / "outputs" / "model.h5",
    )
    _check_usage_error(tmp_path, code, out, err)


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
        capsys,
        "fit",
        "linear",
        "--data",
        path,
        "--x",
        "a,b",
        "--y",
        "y",
        *TRAINING,
        "--out",
        out_file,
    )
    assert code == 0, err
    code, out, err = run(capsys, "show", out_file, "--data", path, "--x", "a,b", "--y", "y")
    assert code == 0, err
    assert "keras_mle inference: LinearRegression" in out and "std err" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line[:1] in "mb"}
    design = sm.add_constant(np.stack([values["a"], values["b"]], 1).astype(np.float64))
    ols = sm.OLS(values["y"].astype(np.float64), design).fit()
    # The table prints 6 significant digits; the CLI fit is within CLI_TOL of the closed form.
    for label, index in (("m_0", 1), ("m_1", 2), ("b", 0)):
        assert float(rows[label][1]) == pytest.approx(ols.params[index], abs=2 * CLI_TOL)
        assert float(rows[label][2]) == pytest.approx(ols.bse[index], rel=1e-3)
    code, out, err = run(capsys, "show", out_file, "--data", path, "--x", "nope", "--y", "y")
    assert code == 2 and "nope" in err and len(err.strip().splitlines()) == 1
