"""The fit image and the demo's figures, judged by what they show.

`render_fit` images are read back pixel by pixel: the red fitted line must lie on the
least-squares line of the blue data points, and the red density on the curve it stands for on
the histogram's axes (see `helpers.red_line_on_blue_points` and `helpers.red_curve_on_histogram`).
"""

import os
import subprocess
import sys
import types

import helpers
import keras
import numpy as np
import pytest
from matplotlib import image as mpimg
from scipy import stats

import keras_mle
from keras_mle import plots

#: Share of pixel columns where a correct fit curve lies on its expected path (measured: > 0.99).
ON_PATH = 0.95
#: Share under which a wrong curve falls (measured: < 0.15).
OFF_PATH = 0.5
IMAGE_SHAPE = (320, 480, 4)


def _fitted(model, x, y=None):
    """`model` set to its closed-form MLE on the data; returns the checked data."""
    checked = model.check_data(x, y)
    model(checked[0][:2])
    model.set_params(model.closed_form(*checked))
    return checked


class NoisyLine(keras_mle.LinearRegression):
    """A least-squares line that also states a noise level through `predict_distribution`."""

    def predict_distribution(self, x, **kwargs):
        mean = self.predict(x, **kwargs)
        return {"mean": mean, "sigma": np.full_like(mean, 0.3)}


class MeanOnly(keras_mle.LinearRegression):
    """A `predict_distribution` without a `sigma`: nothing to draw a band with."""

    def predict_distribution(self, x, **kwargs):
        return {"mean": self.predict(x, **kwargs)}


@pytest.mark.parametrize("slope", [1.0, -1.0])
@pytest.mark.parametrize("make_model", [keras_mle.LinearRegression, keras_mle.GaussianRegression])
def test_the_fitted_line_runs_through_the_data(make_model, slope):
    x, y = keras_mle.data.noisy_line(m=slope, b=2.0, n=100, seed=1)
    model = make_model()
    checked = _fitted(model, x, y)
    image = plots.render_fit(model, *checked, title="epoch 1")
    assert image.dtype == np.uint8 and image.shape == IMAGE_SHAPE
    assert helpers.red_line_on_blue_points(image) > ON_PATH

    # The line of other parameters is drawn where those parameters put it, not on the data.
    model.set_params({"m": np.array([-slope]), "b": np.float64(2.0 + slope)})
    assert helpers.red_line_on_blue_points(plots.render_fit(model, *checked)) < OFF_PATH


def test_observed_against_predicted_lies_on_the_diagonal_at_the_least_squares_fit():
    # Regressing y on the OLS fitted values gives slope 1 and intercept 0: the points' line is
    # the drawn diagonal y = prediction.
    x, y = helpers.two_feature_data()
    model = keras_mle.LinearRegression()
    checked = _fitted(model, x, y)
    image = plots.render_fit(model, *checked)
    assert image.shape == IMAGE_SHAPE
    assert helpers.red_line_on_blue_points(image) > ON_PATH
    model.set_params({"m": np.array([1.5, 0.5])})
    assert helpers.red_line_on_blue_points(plots.render_fit(model, *checked)) < OFF_PATH


def _band_columns(image):
    """Columns with band pixels (red at alpha 0.15 on white) both above and below the red line."""
    rgb = image[..., :3].astype(int)
    band = np.all(np.abs(rgb - [255, 217, 217]) <= 8, axis=-1)
    red = (rgb[..., 0] >= 200) & (rgb[..., 1] <= 90) & (rgb[..., 2] <= 90)
    found = []
    for column in np.nonzero(red.any(axis=0))[0]:
        line = np.nonzero(red[:, column])[0]
        band_rows = np.nonzero(band[:, column])[0]
        if np.any(band_rows < line.min()) and np.any(band_rows > line.max()):
            found.append(column)
    return len(found)


@pytest.mark.parametrize(
    "make_model, has_band",
    [
        (keras_mle.GaussianRegression, True),
        (NoisyLine, True),
        (keras_mle.LinearRegression, False),
        (MeanOnly, False),
    ],
)
def test_the_two_sigma_band_comes_with_predict_distribution(make_model, has_band):
    x, y = keras_mle.data.noisy_line(n=100, seed=2)
    model = make_model()
    checked = _fitted(model, x, y)
    image = plots.render_fit(model, *checked)
    assert helpers.red_line_on_blue_points(image) > ON_PATH
    columns = _band_columns(image)
    if has_band:
        assert columns > 250  # the line spans about 370 columns
    else:
        assert columns == 0


@pytest.mark.parametrize("shift", [0.0, 1.0])
def test_the_fitted_density_is_drawn_on_the_histogram(shift):
    samples = keras_mle.data.gaussian_sample(mu=2.0, sigma=1.0, n=300, seed=3)
    model = keras_mle.GaussianMLE()
    (checked, *_) = _fitted(model, samples)
    mle = model.closed_form(checked)
    mu, sigma = float(mle["mu"]) + shift, float(mle["sigma"])
    model.set_params({"mu": mu})
    image = plots.render_fit(model, checked, title="epoch 0")
    assert image.shape == IMAGE_SHAPE

    def fitted(values):
        return stats.norm.pdf(values, mu, sigma)

    def other(values):
        return stats.norm.pdf(values, mu + 1.0, sigma)

    assert helpers.red_curve_on_histogram(image, checked, fitted) > ON_PATH
    assert helpers.red_curve_on_histogram(image, checked, other) < OFF_PATH


def test_a_weighted_sample_is_drawn_with_its_weights():
    samples = keras_mle.data.gaussian_sample(mu=0.0, sigma=1.0, n=400, seed=4)
    weights = np.where(samples > 0, 3.0, 1.0).astype("float32")
    model = keras_mle.GaussianMLE()
    checked = model.check_data(samples, sample_weight=weights)
    unweighted = plots.render_fit(model, checked[0])
    weighted = plots.render_fit(model, *checked)
    bars = [
        np.all(np.abs(image[..., :3].astype(int) - [143, 187, 217]) <= 12, axis=-1)
        for image in (unweighted, weighted)
    ]
    middle = IMAGE_SHAPE[1] // 2
    # Tripled weights on the right half raise its bars relative to the left's.
    left, right = ([b[:, :middle].sum(), b[:, middle:].sum()] for b in bars)
    assert right[1] / left[1] > 1.5 * right[0] / left[0]


def test_at_most_max_points_are_drawn():
    x, y = keras_mle.data.noisy_line(n=3000, seed=5)
    model = keras_mle.LinearRegression()
    checked = _fitted(model, x, y)
    few = plots.render_fit(model, *checked, max_points=50)
    many = plots.render_fit(model, *checked)
    _, few_blue = helpers.colour_masks(few)
    _, many_blue = helpers.colour_masks(many)
    assert 0 < few_blue.sum() < many_blue.sum() / 5


def _run(model):
    return types.SimpleNamespace(
        mode="fit",
        model=model,
        steps=np.arange(1, 11),
        history={"loss": list(np.geomspace(1.0, 1e-3, 10))},
    )


def test_demo_plots_writes_the_five_figures(tmp_path):
    x, y = keras_mle.data.noisy_line(n=100, seed=0)
    samples = keras_mle.data.gaussian_sample(n=300, seed=0)
    line, gaussian = keras_mle.LinearRegression(), keras_mle.GaussianMLE()
    _fitted(line, x, y)
    _fitted(gaussian, samples)
    results = {
        "line": (types.SimpleNamespace(x=x, y=y), [_run(line)]),
        "gaussian": (types.SimpleNamespace(x=samples, y=None), [_run(gaussian)]),
        "gaussian_regression": (types.SimpleNamespace(x=x, y=y), [_run(line)]),
    }
    paths = plots.demo_plots(results, str(tmp_path))
    names = ["line_fit", "line_loss", "gaussian_fit", "gaussian_loss", "mse_vs_loglik"]
    assert paths == [os.path.join(str(tmp_path), f"{name}.png") for name in names]
    for path in paths:
        with open(path, "rb") as file:
            assert file.read(8) == b"\x89PNG\r\n\x1a\n"
        # 6 x 4 inches at 90 dpi.
        assert mpimg.imread(path).shape[:2] == (360, 540)
    # The line figure shows the fitted line on its data.
    figure = (mpimg.imread(paths[0])[..., :3] * 255).round().astype(np.uint8)
    assert helpers.red_line_on_blue_points(figure) > ON_PATH


@pytest.mark.slow  # a fresh process that imports TensorFlow: 8-14 s
def test_importing_and_drawing_leave_the_matplotlib_backend_alone(tmp_path):
    script = """
import matplotlib
import numpy as np
import keras_mle
from keras_mle import plots

x, y = keras_mle.data.noisy_line(n=20)
model = keras_mle.LinearRegression()
model(x[:2])
plots.render_fit(model, x, y)
print("backend:", matplotlib.get_backend())
"""
    env = dict(os.environ, MPLBACKEND="svg", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "backend: svg" in result.stdout


def test_the_axes_are_labelled_with_the_column_names():
    x, y = keras_mle.data.noisy_line(n=50, seed=6)
    named = keras_mle.LinearRegression(feature_names=["income"])
    checked = _fitted(named, x, y)
    figure, ax = plots.new_figure()
    plots.draw_fit(ax, named, *checked, target_name="balance")
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("income", "balance")
    figure, ax = plots.new_figure()
    plots.draw_fit(ax, keras_mle.LinearRegression(), *_fitted(keras_mle.LinearRegression(), x, y))
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x", "y")

    x2, y2 = helpers.two_feature_data()
    several = keras_mle.LinearRegression(feature_names=["income", "age"])
    figure, ax = plots.new_figure()
    plots.draw_fit(ax, several, *_fitted(several, x2, y2), target_name="balance")
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted balance", "observed balance")

    samples = keras_mle.data.gaussian_sample(n=100, seed=6)
    sample_model = keras_mle.GaussianMLE()
    (checked, *_) = _fitted(sample_model, samples)
    figure, ax = plots.new_figure()
    plots.draw_fit(ax, sample_model, checked, target_name="height")
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("height", "density")


def test_the_y_range_follows_the_data_not_a_band_that_grows_with_x():
    # Credit-card balances in 0..2,000 whose fitted noise level grows as exp(g x): at the
    # largest income 2 sigma is about 8,000, four times the data's range.
    rng = np.random.default_rng(8)
    income = rng.uniform(10.0, 150.0, 300)
    balance = np.clip(10.0 * income + rng.normal(0.0, 100.0, 300), 0.0, 2_000.0)
    model = keras_mle.HeteroscedasticRegression(feature_names=["income"], dtype="float64")
    x = income[:, None]
    model(x[:2])
    sigma_at = {10.0: 20.0, 150.0: 4_000.0}
    g = np.log(sigma_at[150.0] / sigma_at[10.0]) / 140.0
    model.set_params(
        {"m": np.array([10.0]), "b": 0.0, "g": np.array([g]), "c": np.log(20.0) - 10 * g}
    )
    figure, ax = plots.new_figure()
    plots.draw_fit(ax, model, x, balance, target_name="balance")
    low, high = ax.get_ylim()
    span = np.ptp(balance)
    # The data and the mean (10 x income: 100 to 1,500) set it, padded by Y_MARGIN.
    assert balance.min() - 0.1 * span <= low <= balance.min()
    assert balance.max() <= high <= balance.max() + 0.1 * span
    assert len(ax.collections) == 1  # the band is drawn, cut at the range
    image = plots.render_fit(model, x, balance)
    assert helpers.red_line_on_blue_points(image) > ON_PATH


def test_the_tensorboard_fit_image_names_the_target(tmp_path, monkeypatch):
    from keras_mle import callbacks, plots

    seen = {}
    draw = plots.render_fit

    def recording(*args, **kwargs):
        seen.update(kwargs)
        return draw(*args, **kwargs)

    monkeypatch.setattr(plots, "render_fit", recording)
    x, y = keras_mle.data.noisy_line(n=50, seed=0)
    model = keras_mle.LinearRegression(feature_names=["income"])
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    board = callbacks.ParameterTensorBoard(tmp_path, (x, y), image_every=1, target_name="balance")
    model.fit(x, y, epochs=1, batch_size=50, verbose=0, callbacks=[board])
    assert seen["target_name"] == "balance"
