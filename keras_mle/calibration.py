"""Calibration pictures of a model's predictive distribution, for TensorBoard.

`CalibrationTensorBoard` draws, every few epochs, on data of the user's choice (held-out data,
preferably):

- `calibration/pit`: the histogram of the probability integral transform
  `Phi((y - mu) / sigma)` (`keras_mle.metrics.pit`), flat at density 1 when the model is
  calibrated, with that level drawn in red;
- `calibration/band` (one-feature `x` only): the data, the fitted mean in red and its central
  interval `mu -/+ z sigma` of probability `level`;

and the scalars `calibration/coverage` (the fraction of the data inside that interval) and
`calibration/crps`. It works with any model that has `predict_distribution(x)` returning
`{"mean", "sigma"}` (`GaussianNetwork`, `GaussianRegression`).
"""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf

from keras_mle import data as data_lib
from keras_mle import distributions
from keras_mle import metrics as metrics_lib

__all__ = ["CalibrationTensorBoard", "render_pit", "render_band"]

PIT_TAG = "calibration/pit"
BAND_TAG = "calibration/band"
COVERAGE_TAG = "calibration/coverage"
CRPS_TAG = "calibration/crps"
_FIGSIZE = (6, 4)
_DPI = 80


def render_pit(pit_values, bins: int = 20, title=None) -> np.ndarray:
    """The PIT histogram (density) with the uniform density 1 in red, as RGBA `(H, W, 4)`."""
    from keras_mle import plots  # matplotlib is loaded only once an image is drawn.

    figure, ax = plots.new_figure(_FIGSIZE, _DPI)
    ax.hist(pit_values, bins=bins, range=(0.0, 1.0), density=True, color="b", alpha=0.5)
    ax.axhline(1.0, color="r", label="calibrated")
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("PIT = Phi((y - mean) / sigma)")
    ax.set_ylabel("density")
    ax.legend(loc="best", fontsize="small")
    if title:
        ax.set_title(title)
    return _to_array(figure)


def render_band(x, y, mean, sigma, level: float = 0.95, title=None) -> np.ndarray:
    """Data (blue), mean (red) and its central `level` interval against one feature, RGBA."""
    from keras_mle import plots

    x = np.reshape(x, -1)
    order = np.argsort(x)
    z = float(distributions.normal_ppf(0.5 + 0.5 * level))
    figure, ax = plots.new_figure(_FIGSIZE, _DPI)
    ax.scatter(x, y, s=4, color="b", alpha=0.4, label="data")
    ax.fill_between(
        x[order],
        (mean - z * sigma)[order],
        (mean + z * sigma)[order],
        color="0.6",
        alpha=0.4,
        label=f"{level:.0%} interval",
    )
    ax.plot(x[order], mean[order], color="r", label="mean")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend(loc="best", fontsize="small")
    if title:
        ax.set_title(title)
    return _to_array(figure)


def _to_array(figure):
    figure.tight_layout()
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba()).copy()


class CalibrationTensorBoard(keras.callbacks.Callback):
    """Writes the PIT histogram, the mean with its interval, coverage and CRPS to TensorBoard.

    Args:
        log_dir: TensorBoard log folder (as for `keras.callbacks.TensorBoard`).
        data: `(x, y)`: the data to judge the predictions on (held out, preferably).
        every: Draw every this many epochs; the last epoch is always drawn. Defaults to `1`.
        level: Probability of the interval drawn and covered. Defaults to `0.95`.
        bins: Bins of the PIT histogram. Defaults to `20`.
        max_points: At most this many points (a fixed random subset) are judged and drawn.
            Defaults to `5000`.
        run: Sub-folder of `log_dir` for these events. Defaults to `"calibration"`.

    Raises:
        ValueError: naming the argument, before any training.
    """

    def __init__(
        self, log_dir, data, every=1, level=0.95, bins=20, max_points=5000, run="calibration"
    ):
        super().__init__()
        if not isinstance(data, (tuple, list)) or len(data) != 2:
            raise ValueError("data must be a pair (x, y).")
        x, y = data_lib.check_xy(*data)
        if len(x) > data_lib.check_positive_int("max_points", max_points):
            keep = np.sort(np.random.default_rng(0).choice(len(x), max_points, replace=False))
            x, y = x[keep], y[keep]
        self.x, self.y = x, y
        self.log_dir = os.fspath(log_dir)
        self.every = data_lib.check_positive_int("every", every)
        self.level = metrics_lib.check_level(level)
        self.bins = data_lib.check_positive_int("bins", bins)
        if not isinstance(run, str) or not run:
            raise ValueError(f"run must be a non-empty string, got {run!r}.")
        self.run = run
        self._writer = None
        self._last = self._epoch = None

    def on_train_begin(self, logs=None):
        if not hasattr(self.model, "predict_distribution"):
            raise ValueError(
                f"model: {type(self.model).__name__} has no predict_distribution(x) for "
                "CalibrationTensorBoard."
            )
        self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, self.run))
        self._last = self._epoch = None

    def on_epoch_end(self, epoch, logs=None):
        self._epoch = epoch
        if epoch % self.every == 0:
            self._write(epoch)

    def on_train_end(self, logs=None):
        # The last epoch always gets its pictures, also when training stopped early.
        if self._writer is not None:
            if self._epoch is not None and self._last != self._epoch:
                self._write(self._epoch)
            self._writer.close()
            self._writer = None

    def _write(self, epoch):
        out = self.model.predict_distribution(self.x)
        mean = np.asarray(out["mean"], np.float64)
        sigma = np.asarray(out["sigma"], np.float64)
        z = float(distributions.normal_ppf(0.5 + 0.5 * self.level))
        coverage = float(np.mean(np.abs(self.y - mean) <= z * sigma))
        crps = float(np.mean(metrics_lib.gaussian_crps(self.y, mean, sigma)))
        title = f"epoch {epoch}"
        with self._writer.as_default(step=epoch):
            pit_values = metrics_lib.pit(self.y, mean, sigma)
            tf.summary.image(PIT_TAG, render_pit(pit_values, self.bins, title)[None])
            if self.x.ndim == 1 or self.x.shape[1] == 1:
                image = render_band(self.x, self.y, mean, sigma, self.level, title)
                tf.summary.image(BAND_TAG, image[None])
            tf.summary.scalar(COVERAGE_TAG, coverage)
            tf.summary.scalar(CRPS_TAG, crps)
        self._writer.flush()
        self._last = epoch
