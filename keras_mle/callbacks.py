"""Callbacks that watch and keep a maximum-likelihood fit, in `fit()` and in `keras_mle.loops`.

- `ParameterHistory`: every parameter per epoch, beside the loss in `History`.
- `ParameterTensorBoard`: per-epoch TensorBoard scalars of every parameter, the log-likelihood
  (or MSE), the gradient norm and the distance to the closed form; histograms of vector
  parameters; an image of the current fit every few epochs. No `tf.summary` code for the user.
- `ConvergenceStopping`: stops when the gradient norm or the relative parameter change stays
  under a tolerance, and says why.
- `BackupAndRestore` and `ModelCheckpoint` (from `keras_mle.checkpoint`): backups and model files
  written atomically at epoch boundaries, so that a resumed run is exact.

They read the model through its public hooks only (`params`, `parameter_logs`,
`compute_loss_and_gradients`, `closed_form`, `check_data`), so they serve any
`keras_mle.MaximumLikelihoodModel`. A keras_mle model's `fit()` and `keras_mle.loops.train`
build the model before `on_train_begin`, so the callbacks behave the same on a new model as on
one already built.

All of them act in `on_epoch_end`, after the epoch's compiled steps have run, and
`ParameterTensorBoard` passes the epoch number to its writer as an argument: what is recorded at
step `epoch` is the state after that epoch (never a step frozen when a function was traced),
whatever the execution mode (`fit()`, or the loops' eager, `tf.function` and XLA modes).
"""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf

from keras_mle import data as data_lib
from keras_mle import statistics
from keras_mle.checkpoint import BackupAndRestore, ModelCheckpoint, check_folder
from keras_mle.statistics import fit_statistics

__all__ = [
    "ParameterHistory",
    "ParameterTensorBoard",
    "ConvergenceStopping",
    "BackupAndRestore",
    "ModelCheckpoint",
    "fit_statistics",
]

#: TensorBoard tag prefixes written by `ParameterTensorBoard`.
PARAMETER_PREFIX = "parameters/"
STATISTICS_PREFIX = "statistics/"
#: TensorBoard image tag of the fit picture.
IMAGE_TAG = "fit"


def _check_built(callback, model):
    if not model.built:
        raise ValueError(
            f"{type(callback).__name__} needs a built model at the start of training: a "
            "keras_mle model's fit() and keras_mle.loops.train build it; in another loop, call "
            "the model on a batch (model(x[:2])) first."
        )


# -------------------------------------------------------------------- ParameterHistory
class ParameterHistory(keras.callbacks.Callback):
    """Records every parameter at the end of each epoch, and adds it to the epoch's logs.

    The values go under the names of `model.parameter_logs()` (`model.param_names`): `mu`,
    `sigma`, `b`, and `m_0`, `m_1`, ... for the components of a vector parameter (a one-element
    vector is logged under its own name, `m`), or `m[income]`, `m[age]` for the slopes of named
    features (`feature_names`, or a DataFrame's columns). Because they are added to the logs,
    they land in `history.history` beside the loss (and in any later callback, such as
    `keras.callbacks.TensorBoard` or `CSVLogger`), also for a model whose `train_step` does not
    report them.

    The callback keeps its own record across runs (e.g. a run and its resumption): `epoch` is the
    list of epoch indices and `history` maps each name to its list of values.

    Example:

    ```python
    parameters = keras_mle.callbacks.ParameterHistory()
    history = model.fit(x, y, epochs=100, callbacks=[parameters])
    plt.plot(history.history["m"]); plt.plot(parameters.epoch, parameters.history["b"])
    ```
    """

    def __init__(self):
        super().__init__()
        self.epoch = []
        self.history = {}

    def on_epoch_end(self, epoch, logs=None):
        values = {k: float(v) for k, v in self.model.parameter_logs().items()}
        if logs is not None:
            logs.update(values)
        self.epoch.append(epoch)
        for name, value in values.items():
            self.history.setdefault(name, []).append(value)


# -------------------------------------------------------------------- ParameterTensorBoard
class ParameterTensorBoard(keras.callbacks.Callback):
    """Writes the statistics of a likelihood fit to TensorBoard, once per epoch.

    Tags (run `log_dir/<run>`, step = epoch index as Keras counts it, from 0):

    - `parameters/<name>`: every parameter component, named as in `model.param_names`
      (`parameters/mu`, `parameters/m_0`, or `parameters/m[income]` for named features);
    - `parameters/<name>` histograms for vector parameters with more than one component;
    - `statistics/loss`: the epoch's mean training loss (from the logs);
    - with `data`: `statistics/log_likelihood` (or `statistics/mse` for a model trained by
      squared error, such as `LinearRegression`), `statistics/gradient_norm`, and
      `statistics/distance_to_closed_form` where a closed form is known (see
      `keras_mle.statistics.fit_statistics`);
    - with `data`, every `image_every` epochs and at the last one: image `fit`, the data with the
      fitted mean (or observed against predicted for several features), or a histogram of a
      sample with the fitted density (see `keras_mle.plots.render_fit`).

    With `run="train"` (the default) the tags share the run of `keras.callbacks.TensorBoard`
    pointed at the same `log_dir`, whose `epoch_loss`, `epoch_<parameter>` use the same steps.

    Args:
        log_dir: Root folder of the TensorBoard logs.
        data: The data the statistics and images are computed on: `x` (a sample, for
            `GaussianMLE`), `(x, y)` or `(x, y, sample_weight)`; usually the training data, or a
            subsample of it for big data. Defaults to `None` (parameters and loss only).
        closed_form: The reference parameters for `statistics/distance_to_closed_form`: a dict
            like `model.params`, `"auto"` for `model.closed_form(*data)` (no distance for a
            model whose `closed_form` returns `None`), or `None`. Defaults to `"auto"`.
        image_every: Epochs between two images; `0` for none. Defaults to `50`.
        histograms: Write histograms of vector parameters. Defaults to `True`.
        run: Sub-folder of `log_dir` (the TensorBoard run). Defaults to `"train"`.
        target_name: The name of `y`, for the fit image's axis. Defaults to `None` ("y").

    Example:

    ```python
    x, y = keras_mle.data.noisy_line()
    model.fit(x, y, epochs=200, callbacks=[ParameterTensorBoard("logs", data=(x, y))])
    # then: tensorboard --logdir logs
    ```
    """

    def __init__(
        self,
        log_dir,
        data=None,
        *,
        closed_form="auto",
        image_every: int = 50,
        histograms: bool = True,
        run: str = "train",
        target_name: str | None = None,
    ):
        super().__init__()
        if isinstance(image_every, bool) or not isinstance(image_every, int) or image_every < 0:
            raise ValueError(f"image_every must be an integer >= 0, got {image_every!r}.")
        if not (
            closed_form is None
            or isinstance(closed_form, dict)
            or (isinstance(closed_form, str) and closed_form == "auto")
        ):
            raise ValueError(f"closed_form must be a dict, 'auto' or None, got {closed_form!r}.")
        if not isinstance(run, str) or not run:
            raise TypeError(f"run must be a non-empty folder name, got {run!r}.")
        self.log_dir = check_folder("log_dir", log_dir)
        check_folder("log_dir", os.path.join(self.log_dir, run))
        self.data = data
        self.closed_form = closed_form
        self.image_every = image_every
        self.histograms = histograms
        self.run = run
        self.target_name = target_name
        self._writer = None
        self._checked = None
        self._statistics = None
        self._vectors = {}
        self._last_epoch = None
        self._last_image_epoch = None

    def on_train_begin(self, logs=None):
        _check_built(self, self.model)
        # Checked again at every run: the model may have been adapted (float64 data) since.
        self._checked = None
        self._statistics = None
        if self.data is not None:
            self._checked = statistics.checked_data(self.model, self.data)
            reference = self.closed_form
            if isinstance(reference, str):
                reference = self.model.closed_form(*self._checked)
            self._statistics = statistics.FitStatistics(self.model, *self._checked, reference)
        self._vectors = {
            name: self.model.component_names(name)
            for name, value in self.model.params.items()
            if self.histograms and np.size(value) > 1
        }
        if self._writer is None:
            # Checked again: a file may have taken the folder's place since the constructor.
            check_folder("log_dir", os.path.join(self.log_dir, self.run))
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, self.run))
        # One compiled call per epoch writes every scalar and histogram (eager summary ops cost
        # about 1 ms each); the step is an argument, so it is the real epoch, not a traced constant.
        self._write_summaries = tf.function(self._summaries)
        self._last_epoch = self._last_image_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        step = tf.constant(epoch, tf.int64)
        self._write_summaries(step, None if loss is None else tf.constant(loss, tf.float64))
        if self._checked is not None and self.image_every and epoch % self.image_every == 0:
            with self._writer.as_default(step=epoch):
                self._write_image(epoch)
        self._writer.flush()
        self._last_epoch = epoch

    def _summaries(self, step, loss):
        logs = self.model.parameter_logs()
        with self._writer.as_default(step=step):
            for name, value in logs.items():
                tf.summary.scalar(PARAMETER_PREFIX + name, value)
            for name, labels in self._vectors.items():
                values = tf.stack([logs[label] for label in labels])
                tf.summary.histogram(PARAMETER_PREFIX + name, values)
            if loss is not None:
                tf.summary.scalar(STATISTICS_PREFIX + "loss", loss)
            if self._statistics is not None:
                for name, value in self._statistics.tensors().items():
                    tf.summary.scalar(STATISTICS_PREFIX + name, value)

    def on_train_end(self, logs=None):
        # The last epoch always gets a picture, also when training stopped early.
        if self._last_epoch is not None and self._last_image_epoch != self._last_epoch:
            if self._checked is not None and self.image_every:
                with self._writer.as_default(step=self._last_epoch):
                    self._write_image(self._last_epoch)
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _write_image(self, epoch):
        # matplotlib is loaded only once an image is drawn.
        from keras_mle import plots

        image = plots.render_fit(
            self.model, *self._checked, title=f"epoch {epoch}", target_name=self.target_name
        )
        tf.summary.image(IMAGE_TAG, image[None], max_outputs=1)
        self._last_image_epoch = epoch


# -------------------------------------------------------------------- ConvergenceStopping
class ConvergenceStopping(keras.callbacks.Callback):
    """Stops training when the fit has converged, and says why.

    The statistical counterpart of `EarlyStopping` (which watches a validation loss): training
    stops once, for `patience` consecutive epochs, either

    - the relative parameter change `||theta_e - theta_{e-1}|| / ||theta_{e-1}||` (over every
      natural parameter component) is below `parameter_tolerance`, or
    - the gradient norm of the objective on `data` (see `keras_mle.statistics.fit_statistics`)
      is below `gradient_tolerance`.

    Each epoch's `parameter_change` (and `gradient_norm`) is added to the logs, so it is in
    `history.history`. On stopping, the reason is printed (with `verbose=1`), kept in
    `stop_reason` and `stopped_epoch`, and added to the run's History as
    `history.history["stop_reason"] = [reason]` (one entry, not one per epoch).

    Args:
        data: Data for the gradient norm: `x`, `(x, y)` or `(x, y, sample_weight)`. Required
            with `gradient_tolerance`. Defaults to `None`.
        parameter_tolerance: Tolerance of the relative parameter change, or `None` to not watch
            it. Defaults to `1e-6`.
        gradient_tolerance: Tolerance of the gradient norm, or `None`. Defaults to `None`.
        patience: Consecutive epochs under a tolerance before stopping. Defaults to `3`.
        verbose: 1 prints the reason when stopping. Defaults to `1`.
        gradient_from_logs: Read the gradient norm from each epoch's logs (`gradient_norm`),
            where the training loop computes it already (a full-batch fit over a stream logs
            it), instead of computing it on `data`. Defaults to `False`.
    """

    def __init__(
        self,
        data=None,
        *,
        parameter_tolerance: float | None = 1e-6,
        gradient_tolerance: float | None = None,
        patience: int = 3,
        verbose: int = 1,
        gradient_from_logs: bool = False,
    ):
        super().__init__()
        if parameter_tolerance is None and gradient_tolerance is None:
            raise ValueError("Give parameter_tolerance or gradient_tolerance (or both).")
        for name, value in (
            ("parameter_tolerance", parameter_tolerance),
            ("gradient_tolerance", gradient_tolerance),
        ):
            if value is not None and not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
        if gradient_from_logs and data is not None:
            raise ValueError("Give data or gradient_from_logs=True, not both.")
        if gradient_tolerance is not None and data is None and not gradient_from_logs:
            raise ValueError(
                "gradient_tolerance needs data=(x, y) to compute the gradient norm (or "
                "gradient_from_logs=True where the training loop logs gradient_norm)."
            )
        data_lib.check_positive_int("patience", patience)
        self.data = data
        self.parameter_tolerance = parameter_tolerance
        self.gradient_tolerance = gradient_tolerance
        self.patience = patience
        self.verbose = verbose
        self.gradient_from_logs = bool(gradient_from_logs)
        self.stopped_epoch = None
        self.stop_reason = None
        self._gradient_norm = None

    def on_train_begin(self, logs=None):
        _check_built(self, self.model)
        self._gradient_norm = None
        if self.gradient_tolerance is not None and not self.gradient_from_logs:
            checked = statistics.checked_data(self.model, self.data)
            fit = statistics.FitStatistics(self.model, *checked)
            self._gradient_norm = tf.function(lambda: fit.tensors()["gradient_norm"])
        self._previous = statistics.flat_parameters(self.model)
        self._waits = {"parameter": 0, "gradient": 0}
        self.stopped_epoch = None
        self.stop_reason = None

    def on_epoch_end(self, epoch, logs=None):
        logs = {} if logs is None else logs
        current = statistics.flat_parameters(self.model)
        change = float(
            np.linalg.norm(current - self._previous)
            / max(np.linalg.norm(self._previous), np.finfo(np.float64).tiny)
        )
        self._previous = current
        logs["parameter_change"] = change
        reasons = []
        if self.parameter_tolerance is not None:
            below = change < self.parameter_tolerance
            self._waits["parameter"] = self._waits["parameter"] + 1 if below else 0
            if self._waits["parameter"] >= self.patience:
                reasons.append(
                    f"relative parameter change {change:.3g} < {self.parameter_tolerance:g}"
                )
        if self.gradient_tolerance is not None:
            norm = self._epoch_gradient_norm(logs)
            below = norm < self.gradient_tolerance
            self._waits["gradient"] = self._waits["gradient"] + 1 if below else 0
            if self._waits["gradient"] >= self.patience:
                reasons.append(f"gradient norm {norm:.3g} < {self.gradient_tolerance:g}")
        if reasons:
            self.stopped_epoch = epoch
            self.stop_reason = (
                f"converged at epoch {epoch + 1}: {' and '.join(reasons)} "
                f"for {self.patience} epoch(s)"
            )
            self.model.stop_training = True

    def _epoch_gradient_norm(self, logs) -> float:
        if not self.gradient_from_logs:
            logs["gradient_norm"] = float(self._gradient_norm())
        elif "gradient_norm" not in logs:
            raise ValueError(
                "ConvergenceStopping(gradient_from_logs=True): this training loop logs no "
                "gradient_norm; give data=(x, y) instead."
            )
        return float(logs["gradient_norm"])

    def on_train_end(self, logs=None):
        if self.stop_reason is None:
            return
        if self.verbose:
            print(f"ConvergenceStopping: {self.stop_reason}.", flush=True)
        history = getattr(self.model, "history", None)
        if isinstance(history, keras.callbacks.History):
            history.history["stop_reason"] = [self.stop_reason]
