"""Feature names: from a DataFrame's columns or `feature_names=`, through fit, logs and inference.

The names label the slopes (`m[income]`) in `param_names`, `parameter_logs` (History keys,
TensorBoard tags), `ParameterHistory` and the inference rows; they are saved in the config, and a
DataFrame whose columns differ from them is refused. The numbers are checked against statsmodels
fitted on the same DataFrame, matched by column name, so a swapped label would fail.
"""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from helpers import read_events

import keras_mle

# Float64 models set to the optimum by Newton refinement: statsmodels' numbers on the same data
# agree to ~1e-12 relative; 1e-8 leaves room for the conditioning of the features (values ~50).
RTOL = 1e-8


@pytest.fixture(scope="module")
def frame():
    """Income (~50, slope 0.05) and age (~40, slope -0.1): distinct so that a swap shows."""
    rng = np.random.default_rng(3)
    n = 80
    x = pd.DataFrame({"income": rng.normal(50.0, 10.0, n), "age": rng.normal(40.0, 5.0, n)})
    y = pd.Series(1.0 + 0.05 * x["income"] - 0.1 * x["age"] + rng.normal(0.0, 0.5, n), name="y")
    return x, y


def fitted(frame, model=None):
    """A float64 LinearRegression adapted to the frame, one SGD epoch, then refined."""
    x, y = frame
    model = model or keras_mle.LinearRegression(dtype="float64")
    model.adapt(x, y)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    history = model.fit(
        x,
        y,
        epochs=2,
        batch_size=len(x),
        verbose=0,
        callbacks=[keras_mle.callbacks.ParameterHistory()],
    )
    keras_mle.refine(model, x, y)
    return model, history


def test_names_from_a_dataframe_label_every_output(frame):
    x, y = frame
    model, history = fitted(frame)
    assert model.feature_names == ["income", "age"]
    assert model.param_names == ["m[income]", "m[age]", "b"]
    assert set(history.history) == {"loss", "m[income]", "m[age]", "b"}
    logs = {name: float(value) for name, value in model.parameter_logs().items()}
    assert list(logs) == model.param_names
    result = keras_mle.inference(model, x, y)
    assert result.param_names == ["m[income]", "m[age]", "b"]
    assert result.fixed == ()
    ols = sm.OLS(y, sm.add_constant(x)).fit()
    frame_ = result.to_frame()
    for name, column in (("m[income]", "income"), ("m[age]", "age"), ("b", "const")):
        np.testing.assert_allclose(frame_.loc[name, "coef"], ols.params[column], rtol=RTOL)
        np.testing.assert_allclose(frame_.loc[name, "std err"], ols.bse[column], rtol=RTOL)
    table = result.summary().split("-" * 78 + "\n")[1].split("=")[0].splitlines()
    rows = {line.split()[0]: line.split()[1] for line in table}
    assert list(rows) == ["m[income]", "m[age]", "b"]
    assert float(rows["m[age]"]) == pytest.approx(ols.params["age"], rel=1e-5)  # 6 digits shown


def test_parameter_history_and_tensorboard_use_the_names(frame, tmp_path):
    x, y = frame
    model = keras_mle.GaussianRegression(feature_names=["income", "age"])
    model.compile(optimizer=keras.optimizers.SGD(1e-4))
    parameters = keras_mle.callbacks.ParameterHistory()
    board = keras_mle.callbacks.ParameterTensorBoard(tmp_path, image_every=0)
    model.fit(
        x.to_numpy(), y, epochs=2, batch_size=len(x), verbose=0, callbacks=[parameters, board]
    )
    assert set(parameters.history) == {"m[income]", "m[age]", "b", "sigma"}
    events = read_events(tmp_path / "train")
    assert {"parameters/m[income]", "parameters/m[age]", "parameters/m"} <= set(events)
    np.testing.assert_allclose(
        events["parameters/m[age]"][1][-1], parameters.history["m[age]"][-1], rtol=1e-6
    )


def test_without_names_the_components_are_numbered(frame):
    x, y = frame
    model = keras_mle.LinearRegression(dtype="float64")
    model.adapt(x.to_numpy(), y.to_numpy())
    assert model.feature_names is None
    assert model.param_names == ["m_0", "m_1", "b"]
    assert list(model.parameter_logs()) == ["m_0", "m_1", "b"]
    sample = keras_mle.GaussianMLE()
    assert sample.param_names == ["mu", "sigma"]


def test_gaussian_regression_under_ols_conventions_keeps_the_names(frame):
    x, y = frame
    model = keras_mle.GaussianRegression(dtype="float64")
    model.adapt(x, y)
    keras_mle.refine(model, x, y)
    result = keras_mle.inference(model, x, y, convention="ols")
    assert result.param_names == ["m[income]", "m[age]", "b", "sigma"]
    ols = sm.OLS(y, sm.add_constant(x)).fit()
    np.testing.assert_allclose(
        result.to_frame().loc["m[age]", "coef"], ols.params["age"], rtol=RTOL
    )


def test_columns_that_differ_from_the_names_are_refused(frame):
    x, y = frame
    model, _ = fitted(frame)
    swapped = x[["age", "income"]]
    renamed = x.rename(columns={"age": "years"})
    for call in (
        lambda: model.fit(swapped, y, epochs=1, verbose=0),
        lambda: keras_mle.inference(model, swapped, y),
        lambda: model.predict(swapped, verbose=0),
        lambda: model.evaluate(renamed, y, verbose=0),
        lambda: keras_mle.inference(model, pd.DataFrame(x.to_numpy()), y),
    ):
        with pytest.raises(ValueError, match=r"x: the DataFrame's columns .* feature_names"):
            call()
    # The same columns, or a plain array in the saved order, are fine.
    np.testing.assert_allclose(
        model.predict(x, verbose=0), model.predict(x.to_numpy(), verbose=0), rtol=0
    )


def test_feature_names_are_validated():
    for bad in ("income", ["a", 3], ["a", "a"], [], ["a", ""]):
        with pytest.raises(ValueError, match="feature_names"):
            keras_mle.LinearRegression(feature_names=bad)
    model = keras_mle.LinearRegression(feature_names=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"feature_names has 3 name\(s\).*x has 2 feature"):
        model.fit(np.ones((4, 2)), np.arange(4.0), epochs=1, verbose=0)
    assert not model.built  # refused before any work


# A fresh process (about 11 s); tests/test_saving.py loads .keras files in one by default.
@pytest.mark.slow
def test_names_and_fixed_survive_a_keras_file_in_a_fresh_process(frame, tmp_path):
    x, y = frame
    named, _ = fitted(frame)
    fixed, _ = fitted(
        frame, keras_mle.GaussianRegression(dtype="float64", fixed={"m": [None, 0.0]})
    )
    expected = {}
    for name, model in (("named", named), ("fixed", fixed)):
        model.save(tmp_path / f"{name}.keras")
        expected[name] = model.predict(x, verbose=0).tolist()
    x.to_csv(tmp_path / "x.csv", index=False)
    child = textwrap.dedent(
        """
        import json, sys
        import keras, pandas as pd
        import keras_mle

        folder, report = sys.argv[1], {}
        x = pd.read_csv(folder + "/x.csv")
        for name in ("named", "fixed"):
            model = keras.models.load_model(f"{folder}/{name}.keras", safe_mode=True)
            try:
                model.predict(x[["age", "income"]], verbose=0)
                refused = False
            except ValueError:
                refused = True
            report[name] = {
                "feature_names": model.feature_names,
                "param_names": model.param_names,
                "fixed": model.fixed,
                "m": model.params["m"].tolist(),
                "predict": model.predict(x, verbose=0).tolist(),
                "refused": refused,
            }
        print("REPORT" + json.dumps(report))
        """
    )
    output = subprocess.run(
        [sys.executable, "-c", child, str(tmp_path)], capture_output=True, text=True, check=True
    ).stdout
    report = json.loads(output.split("REPORT", 1)[1])
    for name, model in (("named", named), ("fixed", fixed)):
        entry = report[name]
        assert entry["feature_names"] == ["income", "age"]
        assert entry["param_names"][:2] == ["m[income]", "m[age]"]
        assert entry["fixed"] == model.fixed
        assert entry["refused"]
        # The same float64 weights and float64 maths: equal to rounding.
        np.testing.assert_allclose(entry["m"], model.params["m"], rtol=1e-15)
        np.testing.assert_allclose(entry["predict"], expected[name], rtol=1e-14)
    assert report["fixed"]["fixed"] == {"m": [None, 0.0]}
    assert report["fixed"]["m"][1] == 0.0
