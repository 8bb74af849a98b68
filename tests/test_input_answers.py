"""Inputs that used to get a silent wrong answer: each is now refused, or answered right.

Pandas objects whose indexes are not aligned (paired by position before), masked arrays (their
hidden values used), closed forms that are not identifiable or leave float64's range, and
constant targets for a regression that fits a noise scale.
"""

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import keras_mle
from keras_mle import closed_form

N = 40

#: Two float64 least-squares solves of the same well-conditioned data agree to rounding.
RTOL = 1e-12

ALIGN = (
    r"^x and y are pandas objects whose indexes .*Align them first, e\.g\. y = y\.loc\[x\.index\]"
)


@pytest.fixture(scope="module")
def frame():
    """`y = 2 x + 1` plus N(0, 0.1^2) noise, as a DataFrame of 40 rows with labels 100..139."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=N)
    y = 2.0 * x + 1.0 + 0.1 * rng.normal(size=N)
    return pd.DataFrame({"x": x, "y": y}, index=np.arange(100, 100 + N))


def model_of(name):
    model = getattr(keras_mle, name)()
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    return model


def entry_point(name, model, x, y, w=None):
    if name == "fit":
        return model.fit(x, y, sample_weight=w, epochs=1, verbose=0)
    if name == "evaluate":
        model.build((None, 1))
        return model.evaluate(x, y, sample_weight=w, verbose=0)
    if name == "adapt":
        return model.adapt(x, y)
    model.build((None, 1))
    return keras_mle.inference(model, x, y, sample_weight=w)


ENTRY_POINTS = ["fit", "evaluate", "adapt", "inference"]


# ------------------------------------------------------------------------------------ pandas
@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("misalign", ["sorted", "reset-x"])
def test_unaligned_pandas_x_and_y_are_refused(frame, entry, misalign):
    x = frame[["x"]]
    y = frame["y"].sort_values() if misalign == "sorted" else frame["y"]
    if misalign == "reset-x":
        x = x.reset_index(drop=True)
    model = model_of("GaussianRegression")
    with pytest.raises(ValueError, match=ALIGN):
        entry_point(entry, model, x, y)
    assert entry in ("evaluate", "inference") or not model.built


def test_sorted_y_was_paired_by_position(frame):
    # What the refusal prevents: by position, the slope of the sorted y is far from 2.
    by_position = closed_form.ols(frame["x"].to_numpy(), frame["y"].sort_values().to_numpy())
    assert abs(by_position["m"][0] - 2.0) > 1.0
    with pytest.raises(ValueError, match="hold the same labels in a different order"):
        closed_form.ols(frame[["x"]], frame["y"].sort_values())


def test_aligned_pandas_with_any_labels_are_fitted_as_their_arrays(frame):
    expected = closed_form.ols(frame["x"].to_numpy(), frame["y"].to_numpy())
    fit = closed_form.ols(frame[["x"]], frame["y"], sample_weight=pd.Series(1.0, frame.index))
    for name in ("m", "b", "sigma"):
        np.testing.assert_allclose(fit[name], expected[name], rtol=RTOL)
    assert abs(fit["m"][0] - 2.0) < 0.1
    # Pandas on one side only pairs by position, as NumPy does.
    np.testing.assert_allclose(
        closed_form.ols(frame["x"].to_numpy(), frame["y"])["m"], expected["m"], rtol=RTOL
    )


def test_unaligned_sample_weight_series_is_refused_by_ols(frame):
    weights = pd.Series(np.linspace(1.0, 2.0, N))  # labels 0..39, the data 100..139
    with pytest.raises(ValueError, match=r"^x and sample_weight are pandas objects.*position 0"):
        closed_form.ols(frame[["x"]], frame["y"], sample_weight=weights)


def test_unaligned_sample_weight_series_is_refused_by_fit(frame):
    weights = pd.Series(np.linspace(1.0, 2.0, N))
    with pytest.raises(ValueError, match=r"^x and sample_weight are pandas objects"):
        model_of("LinearRegression").fit(frame[["x"]], frame["y"], sample_weight=weights)


# ------------------------------------------------------------------------------ masked arrays
@pytest.mark.parametrize(
    ("argument", "entry"),
    [
        ("x", "fit"),
        ("x", "evaluate"),
        ("x", "adapt"),
        ("x", "inference"),
        ("y", "fit"),
        ("y", "evaluate"),
        ("y", "adapt"),
        ("y", "inference"),
        ("sample_weight", "fit"),
        ("sample_weight", "evaluate"),
        ("sample_weight", "inference"),
    ],
)
def test_masked_cells_are_refused_naming_the_argument(frame, argument, entry):
    data = {"x": frame["x"].to_numpy(), "y": frame["y"].to_numpy(), "sample_weight": None}
    values = np.ones(N) if argument == "sample_weight" else data[argument].copy()
    mask = np.zeros(N, bool)
    mask[[3, 7]] = True
    values[mask] = 1e6  # what the fit used before: the hidden values
    data[argument] = np.ma.masked_array(values, mask=mask)
    model = model_of("LinearRegression")
    with pytest.raises(ValueError, match=rf"^{argument} is a masked array with 2 masked cell"):
        entry_point(entry, model, data["x"], data["y"], data["sample_weight"])


def test_a_mask_with_nothing_masked_is_its_data(frame):
    x, y = frame["x"].to_numpy(), frame["y"].to_numpy()
    fit = closed_form.ols(np.ma.masked_array(x, mask=False), np.ma.masked_array(y))
    np.testing.assert_allclose(fit["m"], closed_form.ols(x, y)["m"], rtol=RTOL)
    message = r"^x is a masked array with 1 masked cell\(s\) of 40.*\.filled\(value\)"
    with pytest.raises(ValueError, match=message):
        closed_form.ols(np.ma.masked_greater(x, np.sort(x)[-2]), y)


# ------------------------------------------------------------------------------- closed forms
def test_ols_refuses_fewer_rows_than_parameters(frame):
    x, y = frame["x"].to_numpy(), frame["y"].to_numpy()
    with pytest.raises(ValueError, match=r"^x: 1 row\(s\) .* the 2 parameters"):
        closed_form.ols(x[:1], y[:1])
    wide = np.random.default_rng(0).normal(size=(3, 5))
    with pytest.raises(ValueError, match=r"^x: 3 row\(s\) .* the 6 parameters"):
        closed_form.ols(wide, y[:3])
    with pytest.raises(ValueError, match=r"^x: 1 row\(s\) with a positive weight"):
        closed_form.ols(x[:3], y[:3], sample_weight=[0.0, 1.0, 0.0])
    exact = closed_form.ols(x[:2], y[:2])  # two rows, two parameters: the line through them
    slope = (y[1] - y[0]) / (x[1] - x[0])
    np.testing.assert_allclose(exact["m"], [slope], rtol=RTOL)
    np.testing.assert_allclose(exact["b"], y[0] - slope * x[0], rtol=RTOL)


def test_ols_names_collinear_and_constant_columns(frame):
    x, y = frame["x"].to_numpy(), frame["y"].to_numpy()
    with pytest.raises(
        ValueError, match=r"^x: column 1 is a linear combination of column\(s\) \[0\]"
    ):
        closed_form.ols(np.column_stack([x, x]), y)
    other = np.random.default_rng(1).normal(size=N)
    design = np.column_stack([x, np.full(N, 4.0), other, 3.0 * x - 2.0 * other])
    message = (
        r"^x: column 1 is constant; column 3 is a linear combination of column\(s\) \[0, 2\], "
        "so the slopes are not identifiable"
    )
    with pytest.raises(ValueError, match=message):
        closed_form.ols(design, y)


def test_ols_keeps_an_ill_conditioned_polynomial():
    # A degree-10 polynomial in x on [-8.8, -3.1], like NIST's Filip: ill-conditioned (the
    # centred, normalised design's condition number is 3.7e9), not collinear. Its noise-free
    # coefficients come back to about cond * eps = 8e-7 (2.5e-7 measured); the unscaled solve
    # cut its small singular values (rcond) and missed them by up to 31 times.
    x = np.linspace(-8.78, -3.13, 82)
    design = np.column_stack([x**p for p in range(1, 11)])
    coefficients = np.array([1.0, 0.5, 0.1, 0.02, 3e-3, 3e-4, 2e-5, 1e-6, 3e-8, 4e-10])
    fit = closed_form.ols(design, design @ coefficients + 2.0)
    np.testing.assert_allclose(fit["m"], coefficients, rtol=1e-5)
    np.testing.assert_allclose(fit["b"], 2.0, rtol=1e-7)


def test_ols_refuses_a_slope_beyond_float64(frame):
    x, y = frame["x"].to_numpy(), frame["y"].to_numpy()
    with pytest.raises(ValueError, match=r"^ols: m overflows float64"):
        closed_form.ols(x * 1e-310, y)  # the slope would be 2e310
    with pytest.raises(ValueError, match=r"^ols: m underflows float64"):
        closed_form.ols(x * 1e300, y * 1e-20)  # the slope would be 2e-320


def test_ols_answers_data_far_from_1_in_their_units(frame):
    x, y = frame["x"].to_numpy(), frame["y"].to_numpy()
    fit = closed_form.ols(x, y)
    big = closed_form.ols(x * 1e150, y * 1e150)  # the RSS alone is near 1e299
    np.testing.assert_allclose(big["m"], fit["m"], rtol=RTOL)
    np.testing.assert_allclose(big["b"], fit["b"] * 1e150, rtol=RTOL)
    np.testing.assert_allclose(big["sigma"], fit["sigma"] * 1e150, rtol=RTOL)
    small = closed_form.ols(x * 1e-100, y)
    np.testing.assert_allclose(small["m"], fit["m"] * 1e100, rtol=RTOL)


@pytest.mark.parametrize("scale", [1e200, 1e-200])
def test_gaussian_mle_far_from_1_gets_its_sigma(scale):
    z = np.random.default_rng(5).normal(size=100)
    expected_sigma = np.std(z) * scale  # numpy's std of z, then scaled: no square of 1e200
    fit = closed_form.gaussian_mle(z * scale)
    np.testing.assert_allclose(fit["sigma"], expected_sigma, rtol=RTOL)
    np.testing.assert_allclose(fit["mu"], np.mean(z) * scale, rtol=1e-10)


def test_gaussian_mle_refuses_a_sigma_below_float64():
    with pytest.raises(ValueError, match=r"^gaussian_mle: sigma underflows float64"):
        closed_form.gaussian_mle(np.array([-1e-320, 0.0, 1e-320]))


# ---------------------------------------------------------------------------- constant targets
SCALE_MODELS = ["GaussianRegression", "HeteroscedasticRegression", "StudentTRegression"]


# Estimation refuses them; scoring held-out data (`evaluate`) that happen to be constant is fine.
@pytest.mark.parametrize("entry", ["fit", "adapt", "inference"])
@pytest.mark.parametrize("name", SCALE_MODELS)
def test_constant_targets_are_refused_by_a_model_with_a_noise_scale(frame, name, entry):
    model = model_of(name)
    x, y = frame["x"].to_numpy(), np.full(N, 2.5)
    with pytest.raises(ValueError, match=rf"^y is constant: .* no MLE exists. \({name} fits"):
        entry_point(entry, model, x, y)
    assert entry == "inference" or not model.built


def test_constant_held_out_targets_are_scored(frame):
    x, y = frame["x"].to_numpy(), frame["y"].to_numpy()
    model = model_of("GaussianRegression")
    model.compile(optimizer="sgd")
    model.fit(x, y, epochs=1, verbose=0)
    loss = model.evaluate(x[:5], np.full(5, 2.5), verbose=0)
    np.testing.assert_allclose(
        loss, np.mean(model.per_sample_loss(x[:5], np.full(5, 2.5))), rtol=1e-6
    )


def test_constant_targets_among_the_weighted_rows_are_refused(frame):
    y = np.where(np.arange(N) < 20, 2.5, frame["y"].to_numpy())
    weights = (np.arange(N) < 20).astype(float)
    with pytest.raises(ValueError, match=r"^y is constant"):
        model_of("GaussianRegression").fit(frame["x"].to_numpy(), y, sample_weight=weights)


def test_least_squares_fits_constant_targets(frame):
    x, y = frame["x"].to_numpy(), np.full(N, 2.5)
    fit = closed_form.ols(x, y)
    np.testing.assert_allclose(fit["b"], 2.5, rtol=RTOL)
    np.testing.assert_allclose(fit["m"], [0.0], atol=1e-15)
    model_of("LinearRegression").fit(x, y, epochs=1, verbose=0)


def test_a_streamed_last_batch_of_one_row_is_not_constant_data(frame):
    # check_data checks each batch of a dataset: a last batch of one row is not refused.
    x, y = frame["x"].to_numpy()[:33], frame["y"].to_numpy()[:33]
    model = model_of("GaussianRegression")
    model.fit(x, y, epochs=1, verbose=0)
    model.refine(x, y)  # to the MLE, where inference reports standard errors
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)  # 8, 8, 8, 8, 1
    streamed = keras_mle.inference(model, dataset)
    np.testing.assert_allclose(
        keras_mle.parameters.flatten(streamed.params),
        keras_mle.parameters.flatten(keras_mle.inference(model, x, y).params),
        rtol=1e-10,
    )
