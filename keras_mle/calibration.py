"""Calibration pictures of a model's predictive distribution, for TensorBoard.

`CalibrationTensorBoard` draws, every few epochs, on data of the user's choice (held-out data,
preferably):

- `calibration/pit`: the histogram of the probability integral transform
  `Phi((y - mu) / sigma)` (`keras_mle.metrics.pit`), flat at density 1 when the model is
  calibrated, with that level drawn in red;
- `calibration/band`: the data, the fitted mean in red and its central interval
  `mu -/+ z sigma` of probability `level`, against the feature for a one-feature `x` (labelled
  with the model's `feature_names`), and against the fitted mean itself for several features
  (the mean is then the diagonal, the band around it; the image's title says so);

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

__all__ = ["CalibrationTensorBoard", "render_pit", "render_band", "draw_band"]

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


def render_band(
    x, y, mean, sigma, level: float = 0.95, title=None, *, x_label="x", y_label="y"
) -> np.ndarray:
    """Data (blue), mean (red) and its central `level` interval against `x`, as RGBA.

    `x` is one feature, or the fitted mean itself (a model of several features). The y-range is
    the data's and the mean's (`keras_mle.plots.follow_data`), not the interval's.
    """
    from keras_mle import plots

    figure, ax = plots.new_figure(_FIGSIZE, _DPI)
    draw_band(ax, x, y, mean, sigma, level, x_label=x_label, y_label=y_label)
    if title:
        ax.set_title(title)
    return _to_array(figure)


def draw_band(ax, x, y, mean, sigma, level: float = 0.95, *, x_label="x", y_label="y"):
    """Draws `render_band`'s picture on the matplotlib `Axes` `ax`; returns `ax`."""
    from keras_mle import plots

    x = np.reshape(x, -1)
    order = np.argsort(x)
    z = float(distributions.normal_ppf(0.5 + 0.5 * level))
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
    plots.follow_data(ax, y, mean)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.legend(loc="best", fontsize="small")
    return ax


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
        target_name: The name of `y`, which labels its axis. Defaults to `None` (`"y"`).

    With one feature the band is drawn against it (labelled with the model's `feature_names`);
    with several, against the fitted mean (the x axis is the mean, the title says so).

    Raises:
        ValueError: naming the argument, before any training.
    """

    def __init__(
        self,
        log_dir,
        data,
        every=1,
        level=0.95,
        bins=20,
        max_points=5000,
        run="calibration",
        target_name=None,
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
        if target_name is not None and not (isinstance(target_name, str) and target_name):
            raise ValueError(f"target_name must be a non-empty string, got {target_name!r}.")
        self.target_name = target_name
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

    def _band(self, mean, sigma, title):
        """The band image: against the one feature, or against the fitted mean."""
        from keras_mle import plots

        y_label = self.target_name or "y"
        if self.x.ndim == 1 or self.x.shape[1] == 1:
            x, x_label = self.x, plots.feature_label(self.model)
        else:
            x, x_label = mean, f"fitted mean of {y_label}"
            title = f"{title}: {self.x.shape[1]} features, against the fitted mean"
        return render_band(
            x, self.y, mean, sigma, self.level, title, x_label=x_label, y_label=y_label
        )

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
            tf.summary.image(BAND_TAG, self._band(mean, sigma, title)[None])
            tf.summary.scalar(COVERAGE_TAG, coverage)
            tf.summary.scalar(CRPS_TAG, crps)
        self._writer.flush()
        self._last = epoch
