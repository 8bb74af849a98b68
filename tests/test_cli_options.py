"""`keras-mle fit` and `show`: the summary's options and the regressions beyond the Gaussian.

- `--convention {mle,ols}` is `keras_mle.inference`'s `convention`, and an error of `inference`
  that names its arguments names the options (`--convention ols`);
- `--cov-type cluster --groups COL`: statsmodels' cluster standard errors, the groups read from
  a column of the file with the rows kept;
- `heteroscedastic-regression` and `student-t-regression` converge to the MLE (a float64 Newton
  fit, `refine`, and statsmodels' `TLinearModel`).

Tolerances: the summary table prints 6 significant digits (`rel=1e-5`); `RTOL_CLUSTER = 1e-8`
compares the `InferenceResult` itself: a linear fit after `adapt` is least squares up to
rounding, so its sandwich equals statsmodels' to rounding. `SE_LEFT = 1e-3`: the command stops
when the whitened gradient norm is under 1e-6 / sqrt(n), where the Newton step left is about
1e-6 standard errors (`keras_mle.cli.GRADIENT_TOLERANCE`); a wrong likelihood moves the
estimates by a good fraction of a standard error.
"""

import warnings

import keras
import numpy as np
import pytest
import statsmodels.api as sm
from helpers import cli_run as run
from helpers import front_end_probe, summary_rows
from statsmodels.miscmodels.tmodel import TLinearModel

import keras_mle
from keras_mle import demo
from keras_mle.cli.results import command_line_words, summary, summary_options
from keras_mle_cli.checks import CHECKS
from keras_mle_cli.options import COV_TYPES
from keras_mle_cli.parser import build_parser

RTOL_CLUSTER = 1e-8
TABLE = 1e-5
SE_LEFT = 1e-3
ROWS = 120


def _write(path, columns):
    names = list(columns)
    lines = [",".join(names)] + [
        ",".join(repr(float(v)) if not isinstance(v, str) else v for v in row)
        for row in zip(*columns.values(), strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A plane with clustered errors (8 firms), a heteroscedastic and a Student-t target.

    Line 6 of the file has no `y` (`NA`): `--missing drop` drops it, with its group.
    """
    rng = np.random.default_rng(7)
    a, b = rng.uniform(0.0, 3.0, ROWS), rng.normal(size=ROWS)
    firm = rng.integers(0, 8, ROWS)
    shock = rng.normal(size=8)[firm]
    y = 1.0 + 2.0 * a - 1.0 * b + shock + rng.normal(size=ROWS)
    het = 1.0 + 2.0 * a - b + np.exp(-0.5 + 0.4 * a) * rng.normal(size=ROWS)
    t = 0.5 + 2.0 * a + b + 0.7 * rng.standard_t(4.0, ROWS)
    cells = {"a": a, "b": b, "firm": firm * 10 + 3.0, "y": list(y), "het": het, "t": t}
    cells["y"][4] = "NA"
    path = _write(tmp_path_factory.mktemp("options") / "data.csv", cells)
    keep = np.arange(ROWS) != 4
    return path, {"a": a, "b": b, "firm": firm, "y": y, "het": het, "t": t, "keep": keep}


def _design(values, keep=None):
    keep = np.ones(ROWS, bool) if keep is None else keep
    return np.stack([values["a"], values["b"]], 1)[keep]


def test_hc3_advice_names_the_option_and_following_it_gives_statsmodels_ols(tmp_path, capsys, data):
    path, values = data
    out_file = tmp_path / "g.keras"
    common = ["--data", path, "--x", "a,b", "--y", "het"]
    code, out, err = run(capsys, "fit", "gaussian-regression", *common, "--out", out_file)
    assert (code, err) == (0, "")
    code, out, err = run(capsys, "show", out_file, "--data", path, "--cov-type", "HC3")
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "keras-mle show: error: --cov-type HC3 needs leverages (the hat matrix of a "
        "least-squares fit), which GaussianRegression under MLE conventions does not define; "
        "use 'HC0' or 'HC1'. Pass --convention ols: its least_squares_model() defines them."
    ]
    ols = sm.OLS(values["het"], sm.add_constant(_design(values))).fit()
    robust = ols.get_robustcov_results(cov_type="HC3")
    code, out, err = run(
        capsys, "show", out_file, "--data", path, "--cov-type", "HC3", "--convention", "ols"
    )
    assert (code, err) == (0, "")
    assert "OLS" in out
    rows = summary_rows(out)
    for label, index in (("m[a]", 1), ("m[b]", 2), ("b", 0)):
        assert rows[label][0] == pytest.approx(ols.params[index], rel=TABLE), label
        assert rows[label][1] == pytest.approx(robust.bse[index], rel=TABLE), label

    # fit takes the same options; a covariance the model has not is refused before training.
    code, out, err = run(capsys, "fit", "gaussian-regression", *common, "--convention", "ols")
    assert (code, err) == (0, "")
    rows = summary_rows(out)
    for label, index in (("m[a]", 1), ("m[b]", 2), ("b", 0)):
        assert rows[label][1] == pytest.approx(ols.bse[index], rel=TABLE), label
    logs = tmp_path / "logs"
    code, out, err = run(
        capsys, "fit", "gaussian-regression", *common, "--cov-type", "HC2", "--logdir", logs
    )
    assert (code, out) == (2, "")
    assert "Pass --convention ols" in err and len(err.splitlines()) == 1
    assert not logs.exists()
    code, out, err = run(capsys, "fit", "linear", *common, "--convention", "mle")
    assert (code, out) == (2, "")
    assert err.startswith(
        "keras-mle fit: error: LinearRegression minimises squared error and has no noise "
        "parameter: use --convention ols,"
    )


def test_command_line_words():
    assert command_line_words(
        ValueError("cov_type='cluster' needs groups= (use convention=\"ols\")")
    ) == ("--cov-type cluster needs --groups (use --convention ols)")


def test_cluster_standard_errors_are_statsmodels(tmp_path, capsys, data):
    path, values = data
    keep = values["keep"]
    x, y = _design(values, keep), values["y"][keep]
    reference = sm.OLS(y, sm.add_constant(x)).fit(
        cov_type="cluster", cov_kwds={"groups": values["firm"][keep]}
    )
    out_file = tmp_path / "line.keras"
    fit = ["fit", "linear", "--data", path, "--x", "a,b", "--y", "y", "--missing", "drop"]
    code, out, err = run(
        capsys, *fit, "--cov-type", "cluster", "--groups", "firm", "--out", out_file
    )
    assert (code, err) == (0, "")
    rows = summary_rows(out)
    for label, index in (("m[a]", 1), ("m[b]", 2), ("b", 0)):
        assert rows[label][1] == pytest.approx(reference.bse[index], rel=TABLE), label
    show = ["show", out_file, "--data", path, "--missing", "drop", "--cov-type", "cluster"]
    code, out, err = run(capsys, *show, "--groups", "firm")
    assert (code, err) == (0, "")
    assert summary_rows(out)["m[a]"][1] == pytest.approx(reference.bse[1], rel=TABLE)

    # The numbers themselves, through the command's own parsing, reading and options.
    args = build_parser().parse_args([str(a) for a in [*show, "--groups", "firm"]])
    columns = CHECKS["show"](args)
    result = summary(
        keras.models.load_model(out_file), *_xy(columns), **summary_options(args, columns)
    )
    stderr = [result.stderr["m"][0], result.stderr["m"][1], result.stderr["b"]]
    np.testing.assert_allclose(stderr, reference.bse[[1, 2, 0]], rtol=RTOL_CLUSTER)
    assert result.n_groups == 8


def _xy(columns):
    x = np.asarray([columns.values[c] for c in columns.x], np.float64).T
    return x, np.asarray(columns.values[columns.y], np.float64)


def _fitted_by_refine(x, y):
    model = keras_mle.HeteroscedasticRegression(dtype="float64")
    model.start_from_ols(x, y)
    assert model.refine(x, y).converged
    return model


@pytest.mark.parametrize("name", ["heteroscedastic-regression", "student-t-regression"])
def test_the_other_regressions_converge_to_the_mle(tmp_path, capsys, data, name):
    path, values = data
    column = {"heteroscedastic-regression": "het", "student-t-regression": "t"}[name]
    out_file = tmp_path / "m.keras"
    code, out, err = run(
        capsys, "fit", name, "--data", path, "--x", "a,b", "--y", column, "--out", out_file
    )
    assert (code, err) == (0, "")
    fitted = keras.models.load_model(out_file)
    x, y = _design(values), values[column]
    result = keras_mle.inference(fitted, x, y)
    if name == "heteroscedastic-regression":
        reference = _fitted_by_refine(x, y).params
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t_model = TLinearModel(y, sm.add_constant(x))
            params = t_model.fit(method="bfgs", disp=0, maxiter=5000, gtol=1e-10).params
        # statsmodels: [const, x_0, x_1, df, scale].
        reference = {"m": params[1:3], "b": params[0], "df": params[3], "scale": params[4]}
    for key, value in reference.items():
        left = np.abs(np.asarray(fitted.params[key]) - value) / result.stderr[key]
        assert np.all(left < SE_LEFT), (key, left)

    code, shown, err = run(capsys, "show", out_file, "--data", path)
    assert (code, err) == (0, "")
    rows = summary_rows(shown)
    values = keras_mle.statistics.flat_parameters(fitted)
    for label, value in zip(fitted.param_names, values, strict=True):
        assert rows[label][0] == pytest.approx(value, rel=TABLE), label


FRONT_END = {
    "groups without cluster": (
        ["fit", "linear", "--data", "d.csv", "--x", "a", "--y", "y", "--groups", "g"],
        "keras-mle fit: error: --groups is only used with --cov-type cluster, not nonrobust",
    ),
    "cluster without groups": (
        ["fit", "linear", "--data", "d.csv", "--x", "a", "--y", "y", "--cov-type", "cluster"],
        "keras-mle fit: error: --cov-type cluster needs --groups COL, the column of cluster labels",
    ),
    "unknown groups": (
        [
            "fit",
            "linear",
            "--data",
            "d.csv",
            "--x",
            "a",
            "--y",
            "y",
            "--cov-type",
            "cluster",
            "--groups",
            "zz",
        ],
        "keras-mle fit: error: column 'zz' not found in d.csv (columns: a, y, g)",
    ),  # fmt: skip
    "groups is y": (
        [
            "fit",
            "linear",
            "--data",
            "d.csv",
            "--x",
            "a",
            "--y",
            "y",
            "--cov-type",
            "cluster",
            "--groups",
            "y",
        ],
        "keras-mle fit: error: --groups y is the column fitted; give the column of cluster labels",
    ),  # fmt: skip
    "groups of a glob": (
        [
            "fit",
            "linear",
            "--data",
            "part-*.csv",
            "--x",
            "a",
            "--y",
            "y",
            "--cov-type",
            "cluster",
            "--groups",
            "g",
        ],
        "keras-mle fit: error: --cov-type cluster reads --groups g into memory: give one CSV "
        "file as --data, not the glob 'part-*.csv'",
    ),  # fmt: skip
    "convention without data": (
        ["show", "m.keras", "--convention", "ols"],
        "keras-mle show: error: --convention needs --data, the file to compute the summary on",
    ),
    "groups without data": (
        ["show", "m.keras", "--groups", "g"],
        "keras-mle show: error: --groups needs --data, the file to compute the summary on",
    ),
    "bad convention": (
        ["fit", "linear", "--data", "d.csv", "--x", "a", "--y", "y", "--convention", "x"],
        "keras-mle fit: error: argument --convention: invalid choice: 'x' (choose from 'mle', "
        "'ols') (see keras-mle fit --help)",
    ),
}


def test_front_end_refuses_bad_summary_options_without_tensorflow(tmp_path):
    (tmp_path / "d.csv").write_text("a,y,g\n1,2,1\n2,3,1\n3,5,2\n")
    (tmp_path / "m.keras").write_text("not read")
    argvs = {name: argv for name, (argv, _) in FRONT_END.items()}
    results, imported = front_end_probe(tmp_path, {**argvs, "help": ["--help"]})
    assert not imported["tensorflow"] and not imported["keras_mle"]
    for name, (_, line) in FRONT_END.items():
        assert results[name] == [2, "", line + "\n"], name
    code, out, _ = results["help"]
    # The demo runs experiments 1 to 3 through every mode and the network (experiment 4).
    count = {3: "three", 4: "four", 5: "five"}[len(demo.experiments(quick=True)) + 1]
    assert code == 0 and f"run the articles' {count} experiments" in " ".join(out.split())


def test_cov_types_are_inference_s():
    assert COV_TYPES == keras_mle.covariance.COV_TYPES


def test_models_table_names_public_classes():
    from keras_mle_cli.options import MODELS

    for name, (class_name, _) in MODELS.items():
        assert issubclass(getattr(keras_mle, class_name), keras_mle.MaximumLikelihoodModel), name
    assert {"heteroscedastic-regression", "student-t-regression"} <= set(MODELS)
