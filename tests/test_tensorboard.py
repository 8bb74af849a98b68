"""ParameterTensorBoard: event files read back, and a real TensorBoard server queried over HTTP.

Steps must be the real epoch numbers under `fit()` and the compiled loops, and the logged values
must be the training's own: they are checked against gradient descent worked out in NumPy,
`scipy.stats.norm.logpdf`, least squares from `numpy.linalg.lstsq` and the sample moments. The fit
images are read back from the event files and judged by what they show (see `helpers`).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import helpers
import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

import keras_mle
from keras_mle import callbacks as mle_callbacks

EPOCHS = 25
IMAGE_EVERY = 10
LEARNING_RATE = 0.35
#: float32 training against float64 NumPy references.
VALUE_TOL = 1e-5
#: Where 25 epochs of gradient descent leave the line (contraction under 0.5 per epoch).
CONVERGED_TOL = 1e-5
#: A Gaussian sample's MLE after GAUSSIAN_EPOCHS of SGD(0.5).
GAUSSIAN_EPOCHS = 20
GAUSSIAN_TOL = 1e-4
#: Seconds for the TensorBoard server to start and load the logs.
SERVER_TIMEOUT = 90


#: Share of pixel columns where the fitted curve of an image lies on its expected path.
ON_PATH = 0.95
#: Share under which a curve far from its expected path falls.
OFF_PATH = 0.5
IMAGE_SHAPE = (320, 480, 4)


@pytest.mark.parametrize("mode", ["fit", "function", "xla"])
def test_event_files_hold_every_tag_at_the_real_epochs(tmp_path, mode):
    x, y = helpers.two_feature_data()
    model = keras_mle.LinearRegression()
    model(x[:2])
    start = model.params
    board = mle_callbacks.ParameterTensorBoard(tmp_path, data=(x, y), image_every=IMAGE_EVERY)
    history = helpers.train(model, x, y, mode, EPOCHS, [board], keras.optimizers.SGD(LEARNING_RATE))
    events = helpers.read_events(tmp_path / "train")

    scalars = [
        "parameters/m_0",
        "parameters/m_1",
        "parameters/b",
        "statistics/loss",
        "statistics/mse",
        "statistics/gradient_norm",
        "statistics/distance_to_closed_form",
    ]
    assert set(events) == {*scalars, "parameters/m", "fit"}
    for tag in scalars:
        assert events[tag][0] == list(range(EPOCHS)), tag
        assert events[tag][2] == "scalars"
    assert events["parameters/m"][0] == list(range(EPOCHS))
    assert events["parameters/m"][2] == "histograms"
    assert events["fit"][0] == [0, 10, 20, EPOCHS - 1]
    assert events["fit"][2] == "images"

    # Each step holds that epoch's parameters: the History's, and gradient descent's.
    logged = np.stack([events[f"parameters/{k}"][1] for k in ("m_0", "m_1", "b")], axis=1).astype(
        np.float32
    )
    recorded = np.array([history.history[k] for k in ("m_0", "m_1", "b")], np.float32).T
    np.testing.assert_array_equal(logged, recorded)
    expected = helpers.gradient_descent_mse(x, y, start["m"], start["b"], EPOCHS, LEARNING_RATE)
    np.testing.assert_allclose(logged, expected, atol=VALUE_TOL)

    # ... converging to OLS, with the statistics computed at those parameters.
    m, b, _ = helpers.least_squares(x, y)
    reference = np.concatenate([m, [b]])
    distance = np.array(events["statistics/distance_to_closed_form"][1])
    np.testing.assert_allclose(
        distance, np.linalg.norm(expected - reference, axis=1), atol=VALUE_TOL
    )
    # Down every epoch, until float32 rounding of the parameters stops it (about 2e-7).
    assert np.all(np.diff(distance) <= 0) and distance[-1] < CONVERGED_TOL
    np.testing.assert_allclose(logged[-1], reference, atol=CONVERGED_TOL)
    x64 = x.astype(np.float64)
    mse = [np.mean((x64 @ p[:2] + p[2] - y) ** 2) for p in expected]
    np.testing.assert_allclose(events["statistics/mse"][1], mse, rtol=VALUE_TOL)
    assert events["statistics/gradient_norm"][1][-1] < 10 * CONVERGED_TOL

    # Every image is a 480 x 320 RGBA picture; the last shows observed against predicted y at
    # the least-squares fit, on the diagonal, and the first (far from it) does not.
    images = events["fit"][1]
    assert all(image.shape == IMAGE_SHAPE and image.dtype == np.uint8 for image in images)
    assert helpers.red_line_on_blue_points(images[-1]) > ON_PATH
    assert helpers.red_line_on_blue_points(images[0]) < OFF_PATH


@pytest.fixture(scope="module")
def gaussian_logs(tmp_path_factory):
    """A GaussianMLE fitted with fit() and ParameterTensorBoard: the logs of the server test."""
    log_dir = tmp_path_factory.mktemp("tensorboard")
    samples = keras_mle.data.gaussian_sample(mu=2.0, sigma=1.0, n=400, seed=7)
    model = keras_mle.GaussianMLE(initial_mu=1.4, initial_sigma=1.3)
    board = mle_callbacks.ParameterTensorBoard(log_dir, data=samples, image_every=10)
    helpers.train(model, samples, None, "fit", GAUSSIAN_EPOCHS, [board], keras.optimizers.SGD(0.5))
    return log_dir, samples, model


def test_gaussian_log_likelihood_at_every_epoch(gaussian_logs):
    log_dir, samples, model = gaussian_logs
    events = helpers.read_events(log_dir / "train")
    steps, mus, _ = events["parameters/mu"]
    _, sigmas, _ = events["parameters/sigma"]
    assert steps == list(range(GAUSSIAN_EPOCHS))
    expected = [
        stats.norm.logpdf(samples.astype(np.float64), m, s).sum()
        for m, s in zip(mus, sigmas, strict=True)
    ]
    np.testing.assert_allclose(events["statistics/log_likelihood"][1], expected, rtol=VALUE_TOL)
    mle = _sample_mle(samples)
    assert abs(mus[-1] - mle["mu"]) < GAUSSIAN_TOL and abs(sigmas[-1] - mle["sigma"]) < GAUSSIAN_TOL
    assert events["fit"][0] == [0, 10, GAUSSIAN_EPOCHS - 1]
    assert "parameters/mu" not in {t for t, e in events.items() if e[2] == "histograms"}

    # Each image shows the density of that step's parameters on the sample's histogram.
    for step, image in zip(*events["fit"][:2], strict=True):
        assert image.shape == IMAGE_SHAPE
        at_step = _normal_density(mus[step], sigmas[step])
        assert helpers.red_curve_on_histogram(image, samples, at_step) > ON_PATH, step
    first, last = events["fit"][1][0], events["fit"][1][-1]
    assert helpers.red_curve_on_histogram(first, samples, _normal_density(**mle)) < OFF_PATH
    assert helpers.red_curve_on_histogram(last, samples, _normal_density(**mle)) > ON_PATH


def _sample_mle(samples):
    x = np.asarray(samples, np.float64)
    return {"mu": np.mean(x), "sigma": np.std(x)}


def _normal_density(mu, sigma):
    return lambda values: stats.norm.pdf(values, mu, sigma)


def _line(slope):
    return keras_mle.LinearRegression(m_initializer=keras.initializers.Constant(-slope))


def _adapted_gaussian_line(slope, x, y):
    model = keras_mle.GaussianRegression(m_initializer=keras.initializers.Constant(-slope))
    return model.adapt(x, y)


@pytest.mark.parametrize("slope", [1.0, -1.0])
@pytest.mark.parametrize(
    "make_model, learning_rate",
    [
        (lambda slope, x, y: _line(slope), 0.7),
        (_adapted_gaussian_line, 0.3),
    ],
    ids=["LinearRegression", "adapted GaussianRegression"],
)
def test_the_fit_image_shows_the_fitted_line_on_the_data(
    tmp_path, make_model, learning_rate, slope
):
    x, y = keras_mle.data.noisy_line(m=slope, b=2.0, n=100, seed=1)
    model = make_model(slope, x, y)
    board = mle_callbacks.ParameterTensorBoard(tmp_path, data=(x, y), image_every=40)
    helpers.train(model, x, y, "function", 80, [board], keras.optimizers.SGD(learning_rate))
    steps, images, plugin = helpers.read_events(tmp_path / "train")["fit"]

    assert plugin == "images" and steps == [0, 40, 79]
    assert all(image.shape == IMAGE_SHAPE for image in images)
    # After one epoch the line is still far from the data; at the end it runs through them.
    assert helpers.red_line_on_blue_points(images[0]) < OFF_PATH
    assert helpers.red_line_on_blue_points(images[-1]) > ON_PATH
    m, b, _ = helpers.least_squares(x, y)
    np.testing.assert_allclose(model.params["m"], m, atol=5e-3)
    np.testing.assert_allclose(model.params["b"], b, atol=5e-3)


class LineWithoutClosedForm(keras_mle.LinearRegression):
    def closed_form(self, x, y=None, sample_weight=None):
        return None


class LineWithAReference(keras_mle.LinearRegression):
    def closed_form(self, x, y=None, sample_weight=None):
        return {"b": 10.0}


@pytest.mark.parametrize("make_model", [LineWithoutClosedForm, LineWithAReference])
def test_the_automatic_reference_is_the_model_closed_form(tmp_path, make_model):
    x, y = helpers.two_feature_data()
    model = make_model()
    board = mle_callbacks.ParameterTensorBoard(tmp_path, data=(x, y), image_every=0)
    helpers.train(model, x, y, "fit", 3, [board], keras.optimizers.SGD(LEARNING_RATE))
    events = helpers.read_events(tmp_path / "train")

    assert "fit" not in events
    if make_model is LineWithoutClosedForm:
        assert "statistics/distance_to_closed_form" not in events
        assert "statistics/mse" in events
    else:
        distances = events["statistics/distance_to_closed_form"][1]
        np.testing.assert_allclose(
            distances, np.abs(10.0 - np.array(events["parameters/b"][1])), rtol=VALUE_TOL
        )


def test_steps_continue_across_a_resume(tmp_path):
    x, y = helpers.two_feature_data()

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 6:
                raise KeyboardInterrupt

    def run(callbacks, resume):
        keras_mle.loops.train(
            keras_mle.LinearRegression(),
            x,
            y,
            epochs=10,
            batch_size=64,
            optimizer="sgd",
            verbose=0,
            checkpoint_dir=tmp_path / "backup",
            resume=resume,
            callbacks=[mle_callbacks.ParameterTensorBoard(tmp_path / "logs"), *callbacks],
        )

    with pytest.raises(KeyboardInterrupt):
        run([Interrupt()], resume=False)
    run([], resume=True)
    events = helpers.read_events(tmp_path / "logs" / "train")
    assert events["parameters/b"][0] == list(range(10))


# ------------------------------------------------------------------- a real TensorBoard server
def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


@pytest.fixture
def tensorboard_server(gaussian_logs):
    log_dir = gaussian_logs[0]
    port = _free_port()
    # TensorBoard runs without TensorFlow (its "reduced feature set", which serves scalars and
    # images): it then starts in about 2 s instead of 15 on this machine.
    launcher = (
        "import sys; sys.modules['tensorflow'] = None; "
        "from tensorboard.main import run_main; run_main()"
    )
    command = [
        sys.executable,
        "-c",
        launcher,
        "--logdir",
        str(log_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--reload_interval",
        "1",
        "--load_fast",
        "false",
    ]
    server = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        # The server leads its own process group: stop it and anything it started.
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        server.stdout.close()


def _wait_for_tags(base, server, wanted):
    deadline = time.monotonic() + SERVER_TIMEOUT
    while True:
        if server.poll() is not None:
            pytest.fail(f"TensorBoard exited: {server.stdout.read().decode(errors='replace')}")
        try:
            tags = json.loads(_get(f"{base}/data/plugin/scalars/tags"))
            if wanted <= set(tags.get("train", {})):
                return tags
        except OSError:
            pass  # not listening yet
        if time.monotonic() > deadline:
            pytest.fail(f"TensorBoard did not serve {sorted(wanted)} within {SERVER_TIMEOUT} s")
        time.sleep(0.25)


def test_a_real_tensorboard_server_serves_the_scalars_and_the_image(
    tensorboard_server, gaussian_logs
):
    base, server = tensorboard_server
    _, samples, _ = gaussian_logs
    wanted = {
        "parameters/mu",
        "parameters/sigma",
        "statistics/loss",
        "statistics/log_likelihood",
        "statistics/gradient_norm",
        "statistics/distance_to_closed_form",
    }
    _wait_for_tags(base, server, wanted)

    def scalars(tag):
        query = urllib.parse.urlencode({"run": "train", "tag": tag})
        rows = json.loads(_get(f"{base}/data/plugin/scalars/scalars?{query}"))
        return [row[1] for row in rows], np.array([row[2] for row in rows])

    steps, mus = scalars("parameters/mu")
    _, sigmas = scalars("parameters/sigma")
    _, distances = scalars("statistics/distance_to_closed_form")
    assert steps == list(range(GAUSSIAN_EPOCHS))
    mle = _sample_mle(samples)
    assert abs(mus[-1] - mle["mu"]) < GAUSSIAN_TOL and abs(sigmas[-1] - mle["sigma"]) < GAUSSIAN_TOL
    np.testing.assert_allclose(
        distances, np.hypot(mus - mle["mu"], sigmas - mle["sigma"]), atol=VALUE_TOL
    )

    image_tags = json.loads(_get(f"{base}/data/plugin/images/tags"))
    assert "fit" in image_tags["train"]
    query = urllib.parse.urlencode({"run": "train", "tag": "fit", "sample": 0})
    images = json.loads(_get(f"{base}/data/plugin/images/images?{query}"))
    assert [image["step"] for image in images] == [0, 10, GAUSSIAN_EPOCHS - 1]
    png = _get(f"{base}/data/plugin/images/individualImage?{images[-1]['query']}")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = tf.image.decode_png(png, channels=4).numpy()
    assert image.shape == IMAGE_SHAPE
    density = _normal_density(mus[-1], sigmas[-1])
    assert helpers.red_curve_on_histogram(image, samples, density) > ON_PATH


@pytest.mark.parametrize("features", [1, 2])
def test_calibration_band_with_any_number_of_features(tmp_path, features):
    """One feature: the band against it, named; several: against the fitted mean, so titled."""
    from keras_mle import calibration

    x, y = helpers.plane(n=80, seed=9, slopes=(1.5, -0.5)[:features], dtype="float64")
    names = ["income", "age"][:features]
    model = keras_mle.GaussianRegression(feature_names=names, dtype="float64")
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    callback = calibration.CalibrationTensorBoard(tmp_path, (x, y), target_name="spend")
    model.fit(x, y, epochs=1, batch_size=len(x), verbose=0, callbacks=[callback])
    steps, images, _ = helpers.read_events(tmp_path / "calibration")[calibration.BAND_TAG]
    assert list(steps) == [0]
    out = model.predict_distribution(x)
    mean, sigma = np.asarray(out["mean"], np.float64), np.asarray(out["sigma"], np.float64)
    if features == 1:
        against, x_label, title = x, "income", "epoch 0"
    else:
        against, x_label = mean, "fitted mean of spend"
        title = "epoch 0: 2 features, against the fitted mean"
    expected = calibration.render_band(
        against, y, mean, sigma, 0.95, title, x_label=x_label, y_label="spend"
    )
    np.testing.assert_array_equal(images[0], expected)
    figure, ax = keras_mle.plots.new_figure()
    calibration.draw_band(ax, against, y, mean, sigma, x_label=x_label, y_label="spend")
    assert (ax.get_xlabel(), ax.get_ylabel()) == (x_label, "spend")
    line = ax.lines[0]
    order = np.argsort(np.ravel(against))
    np.testing.assert_allclose(line.get_xdata(), np.ravel(against)[order], rtol=1e-12)
    np.testing.assert_allclose(line.get_ydata(), mean[order], rtol=1e-12)
