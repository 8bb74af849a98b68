"""Callbacks that watch and keep a maximum-likelihood fit, in `fit()` and in `keras_mle.loops`.

- `ParameterHistory`: every parameter per epoch, beside the loss in `History`.
- `ParameterTensorBoard`: per-epoch TensorBoard scalars of every parameter, the log-likelihood
  (or MSE), the gradient norm and the distance to the closed form; histograms of vector
  parameters; an image of the current fit every few epochs. No `tf.summary` code for the user.
- `ConvergenceStopping`: stops when the gradient norm or the relative parameter change stays
  under a tolerance, and says why.
- `BackupAndRestore` and `ModelCheckpoint`: Keras' callbacks with files written atomically and
  backups taken at epoch boundaries only, so that a resumed run is exact.

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

from keras_mle import checkpoint
from keras_mle import closed_form as closed_form_lib
from keras_mle import data as data_lib
from keras_mle.models import GaussianMLE, GaussianRegression, LinearRegression

__all__ = [
    "ParameterHistory",
    "ParameterTensorBoard",
    "ConvergenceStopping",
    "BackupAndRestore",
    "ModelCheckpoint",
    "fit_statistics",
    "known_closed_form",
    "render_fit",
]

#: TensorBoard tag prefixes written by `ParameterTensorBoard`.
PARAMETER_PREFIX = "parameters/"
STATISTICS_PREFIX = "statistics/"
#: TensorBoard image tag of the fit picture.
IMAGE_TAG = "fit"


# -------------------------------------------------------------------- shared statistics
def known_closed_form(model, x, y=None, sample_weight=None) -> dict | None:
    """The closed-form MLE of `model`'s parameters on the data, where one is known.

    `GaussianMLE`: sample mean and divisor-`n` standard deviation; `LinearRegression`: OLS `m`,
    `b`; `GaussianRegression`: OLS `m`, `b` and `sigma = sqrt(RSS / n)`. `None` for other models.
    """
    if isinstance(model, GaussianMLE):
        return closed_form_lib.gaussian_mle(x, sample_weight)
    if isinstance(model, LinearRegression):
        ols = closed_form_lib.ols(x, y, sample_weight)
        names = ("m", "b", "sigma") if isinstance(model, GaussianRegression) else ("m", "b")
        return {name: ols[name] for name in names}
    return None


def fit_statistics(model, x, y=None, sample_weight=None, closed_form=None) -> dict:
    """Statistics of the current fit on the data `(x, y, sample_weight)`, as Python floats.

    - `mse` `= sum_i w_i * (y_i - y_hat_i)^2 / sum_i w_i` (for models trained by squared error,
      `sample_loss_kind == "squared_error"`, e.g. `LinearRegression`), or else
      `log_likelihood` `= -sum_i w_i * nll_i` (the full constant included: the articles' `LL`);
    - `gradient_norm`: the global norm of the gradient of the training objective (the weighted
      mean loss) with respect to the trainable variables, i.e. in the optimizer's coordinates
      (`log sigma` for a positive parameter);
    - `distance_to_closed_form`: `||theta - theta_hat||_2` over every parameter component, when
      `closed_form` (a dict like `model.params`) is given.

    The data must already be checked (`model.check_data`).
    """
    statistics = _FitStatistics(model, x, y, sample_weight, closed_form)
    return {name: float(value) for name, value in statistics.tensors().items()}


class _FitStatistics:
    """The tensors of `fit_statistics` on fixed data; callable inside a `tf.function`."""

    def __init__(self, model, x, y=None, sample_weight=None, closed_form=None):
        self.model = model
        self.inputs = tuple(None if a is None else tf.constant(a) for a in (x, y, sample_weight))
        self.reference = None if closed_form is None else _log_entries(model, closed_form)

    def tensors(self) -> dict:
        _, gradients, sample_losses, weights = self.model.compute_loss_and_gradients(*self.inputs)
        weighted_sum = tf.reduce_sum(tf.cast(sample_losses * weights, tf.float64))
        if _is_mse(self.model):
            stats = {"mse": weighted_sum / tf.reduce_sum(tf.cast(weights, tf.float64))}
        else:
            stats = {"log_likelihood": -weighted_sum}
        stats["gradient_norm"] = tf.cast(tf.linalg.global_norm(gradients), tf.float64)
        if self.reference is not None:
            logs = self.model.parameter_logs()
            squares = [
                tf.square(tf.cast(logs[name], tf.float64) - value)
                for name, value in self.reference.items()
            ]
            stats["distance_to_closed_form"] = tf.sqrt(tf.add_n(squares))
        return stats


def _log_entries(model, values: dict) -> dict:
    """A dict like `model.params` flattened to the keys of `model.parameter_logs()`."""
    sizes = {name: np.size(value) for name, value in model.params.items()}
    entries = {}
    for name, value in values.items():
        if name not in sizes or np.size(value) != sizes[name]:
            raise ValueError(
                f"closed_form[{name!r}] does not match a parameter of {type(model).__name__} "
                f"(parameters and sizes: {sizes})."
            )
        flat = np.ravel(np.asarray(value, np.float64))
        if flat.size == 1:
            entries[name] = float(flat[0])
        else:
            entries.update({f"{name}_{i}": float(v) for i, v in enumerate(flat)})
    return entries


def _is_mse(model):
    return getattr(model, "sample_loss_kind", "nll") == "squared_error"


def _unpack_data(model, data):
    """`data` as `x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)`, checked by the model."""
    if isinstance(data, (tuple, list)):
        if not 1 <= len(data) <= 3:
            raise ValueError(
                f"data must be x, (x, y) or (x, y, sample_weight), got {len(data)} items."
            )
        data = tuple(data) + (None,) * (3 - len(data))
    else:
        data = (data, None, None)
    return model.check_data(*data)


def _flat_parameters(model) -> np.ndarray:
    return np.concatenate([np.ravel(v).astype(np.float64) for v in model.params.values()])


# -------------------------------------------------------------------- ParameterHistory
class ParameterHistory(keras.callbacks.Callback):
    """Records every parameter at the end of each epoch, and adds it to the epoch's logs.

    The values go under the names of `model.parameter_logs()`: `mu`, `sigma`, `b`, and `m_0`,
    `m_1`, ... for the components of a vector parameter (a one-element vector is logged under its
    own name, `m`). Because they are added to the logs, they land in `history.history` beside the
    loss (and in any later callback, such as `keras.callbacks.TensorBoard` or `CSVLogger`), also
    for a model whose `train_step` does not report them.

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

    - `parameters/<name>`: every parameter component (`parameters/mu`, `parameters/m_0`, ...);
    - `parameters/<name>` histograms for vector parameters with more than one component;
    - `statistics/loss`: the epoch's mean training loss (from the logs);
    - with `data`: `statistics/log_likelihood` (or `statistics/mse` for `LinearRegression`),
      `statistics/gradient_norm`, and `statistics/distance_to_closed_form` where a closed form is
      known (see `fit_statistics`);
    - with `data`, every `image_every` epochs and at the last one: image `fit`, the data with the
      fitted line (or observed against predicted for several features), or a histogram of a
      sample with the fitted density, drawn with matplotlib (Agg).

    With `run="train"` (the default) the tags share the run of `keras.callbacks.TensorBoard`
    pointed at the same `log_dir`, whose `epoch_loss`, `epoch_<parameter>` use the same steps.

    Args:
        log_dir: Root folder of the TensorBoard logs.
        data: The data the statistics and images are computed on: `x` (a sample, for
            `GaussianMLE`), `(x, y)` or `(x, y, sample_weight)`; usually the training data, or a
            subsample of it for big data. Defaults to `None` (parameters and loss only).
        closed_form: The reference parameters for `statistics/distance_to_closed_form`: a dict
            like `model.params`, `"auto"` (computed from `data` for the package's models), or
            `None`. Defaults to `"auto"`.
        image_every: Epochs between two images; `0` for none. Defaults to `50`.
        histograms: Write histograms of vector parameters. Defaults to `True`.
        run: Sub-folder of `log_dir` (the TensorBoard run). Defaults to `"train"`.

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
    ):
        super().__init__()
        if isinstance(image_every, bool) or not isinstance(image_every, int) or image_every < 0:
            raise ValueError(f"image_every must be an integer >= 0, got {image_every!r}.")
        self.log_dir = os.fspath(log_dir)
        self.data = data
        self.closed_form = closed_form
        self.image_every = image_every
        self.histograms = histograms
        self.run = run
        self._writer = None
        self._checked = None
        self._statistics = None
        self._reference = None
        self._last_epoch = None
        self._last_image_epoch = None

    def on_train_begin(self, logs=None):
        if self.data is not None and self._checked is None:
            self._checked = _unpack_data(self.model, self.data)
        if isinstance(self.closed_form, dict):
            self._reference = self.closed_form
        elif self.closed_form == "auto" and self._checked is not None:
            self._reference = known_closed_form(self.model, *self._checked)
        elif self.closed_form not in (None, "auto"):
            raise ValueError(
                f"closed_form must be a dict, 'auto' or None, got {self.closed_form!r}."
            )
        if self._checked is not None:
            self._statistics = _FitStatistics(self.model, *self._checked, self._reference)
        self._vectors = {
            name: np.size(value)
            for name, value in self.model.params.items()
            if self.histograms and np.size(value) > 1
        }
        if self._writer is None:
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
            for name, size in self._vectors.items():
                values = tf.stack([logs[f"{name}_{i}"] for i in range(size)])
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
        image = render_fit(self.model, *self._checked, title=f"epoch {epoch}")
        tf.summary.image(IMAGE_TAG, image[None], max_outputs=1)
        self._last_image_epoch = epoch


def render_fit(model, x, y=None, sample_weight=None, *, title=None, max_points: int = 2000):
    """The current fit drawn with matplotlib (Agg), as an RGBA `uint8` array `(H, W, 4)`.

    A sample model gets a histogram of the data with the fitted density `exp(-nll)`; a regression
    with one feature the data with the fitted line (and `+-2 sigma` when it has a `sigma`); with
    several features, observed against predicted `y`. At most `max_points` points are drawn.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if len(x) > max_points:
        keep = np.random.default_rng(0).choice(len(x), max_points, replace=False)
        x = x[keep]
        y = None if y is None else y[keep]
    figure = Figure(figsize=(6, 4), dpi=80)
    canvas = FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    params = model.params
    if not model.takes_targets:
        samples = np.ravel(x)
        ax.hist(samples, bins=30, density=True, alpha=0.5, label="data")
        grid = np.linspace(samples.min(), samples.max(), 200)
        # sample_loss is a formula in the natural parameters: with the user's values (float64)
        # it is the NLL in the user's units, also after `adapt`.
        user_params = {k: tf.constant(v, tf.float64) for k, v in params.items()}
        nll = model.sample_loss(user_params, tf.constant(grid), None)
        label = ", ".join(f"{k}={float(np.ravel(v)[0]):.4g}" for k, v in params.items())
        ax.plot(grid, np.exp(-np.asarray(nll)), "k", label=f"fit: {label}")
        ax.set_xlabel(model.x_name)
        ax.set_ylabel("density")
    elif x.ndim == 1 or x.shape[1] == 1:
        column = np.ravel(x)
        grid = np.linspace(column.min(), column.max(), 100).astype(column.dtype)
        mean = np.asarray(model(grid.reshape(-1, *x.shape[1:])))
        ax.plot(column, y, "b.", markersize=3, label="data")
        ax.plot(grid, mean, "r", label="fit")
        if "sigma" in params:
            sigma = float(params["sigma"])
            ax.fill_between(
                grid,
                mean - 2 * sigma,
                mean + 2 * sigma,
                color="r",
                alpha=0.15,
                label="fit +- 2 sigma",
            )
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    else:
        predicted = np.asarray(model(x))
        ax.plot(predicted, y, "b.", markersize=3, label="data")
        low, high = float(min(predicted.min(), y.min())), float(max(predicted.max(), y.max()))
        ax.plot([low, high], [low, high], "r", label="y = prediction")
        ax.set_xlabel("predicted y")
        ax.set_ylabel("observed y")
    ax.legend(loc="best", fontsize="small")
    if title:
        ax.set_title(f"{type(model).__name__}, {title}")
    figure.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


# -------------------------------------------------------------------- ConvergenceStopping
class ConvergenceStopping(keras.callbacks.Callback):
    """Stops training when the fit has converged, and says why.

    The statistical counterpart of `EarlyStopping` (which watches a validation loss): training
    stops once, for `patience` consecutive epochs, either

    - the relative parameter change `||theta_e - theta_{e-1}|| / ||theta_{e-1}||` (over every
      natural parameter component) is below `parameter_tolerance`, or
    - the gradient norm of the objective on `data` (see `fit_statistics`) is below
      `gradient_tolerance`.

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
    """

    def __init__(
        self,
        data=None,
        *,
        parameter_tolerance: float | None = 1e-6,
        gradient_tolerance: float | None = None,
        patience: int = 3,
        verbose: int = 1,
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
        if gradient_tolerance is not None and data is None:
            raise ValueError("gradient_tolerance needs data=(x, y) to compute the gradient norm.")
        data_lib.check_positive_int("patience", patience)
        self.data = data
        self.parameter_tolerance = parameter_tolerance
        self.gradient_tolerance = gradient_tolerance
        self.patience = patience
        self.verbose = verbose
        self._checked = None

    def on_train_begin(self, logs=None):
        if self.data is not None and self._checked is None:
            self._checked = _unpack_data(self.model, self.data)
        if self.gradient_tolerance is not None:
            statistics = _FitStatistics(self.model, *self._checked)
            self._gradient_norm = tf.function(lambda: statistics.tensors()["gradient_norm"])
        self._previous = _flat_parameters(self.model)
        self._waits = {"parameter": 0, "gradient": 0}
        self.stopped_epoch = None
        self.stop_reason = None

    def on_epoch_end(self, epoch, logs=None):
        logs = {} if logs is None else logs
        current = _flat_parameters(self.model)
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
            norm = float(self._gradient_norm())
            logs["gradient_norm"] = norm
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

    def on_train_end(self, logs=None):
        if self.stop_reason is None:
            return
        if self.verbose:
            print(f"ConvergenceStopping: {self.stop_reason}.", flush=True)
        history = getattr(self.model, "history", None)
        if isinstance(history, keras.callbacks.History):
            history.history["stop_reason"] = [self.stop_reason]


# -------------------------------------------------------------------- checkpoints
class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` made exact and crash-safe.

    Same files and use as Keras' callback (`latest.weights.h5`, `training_metadata.json` in
    `backup_dir`; `fit()` resumes from the backup), with three differences:

    - backups are taken at epoch boundaries only (every `save_every` epochs, and at the end of
      training), because a restart from a mid-epoch backup replays that epoch from its first batch
      and is not exact;
    - each backup is written atomically (see `keras_mle.checkpoint`): a process killed while
      saving leaves the previous backup whole, and the epoch number stored inside the weights
      file always matches the weights;
    - the NumPy global random state is saved and restored with it, so the custom loops'
      `shuffle=True` draws the same orders after a resume.

    `keras_mle.loops.train(checkpoint_dir=...)` uses this callback. See `docs/checkpointing.md`.

    Args:
        backup_dir: Folder of the backup (dedicated to one training run).
        save_every: Epochs between two backups. Defaults to `1`.
        restore: Resume from an existing backup at the start of training. Defaults to `True`
            (as Keras does).
        delete_checkpoint: Delete the backup files when training ends. Defaults to `True`
            (as Keras does); set `False` to keep the final state for a later resumption.
    """

    def __init__(
        self,
        backup_dir,
        *,
        save_every: int = 1,
        restore: bool = True,
        delete_checkpoint: bool = True,
    ):
        super().__init__(
            os.fspath(backup_dir), save_freq="epoch", delete_checkpoint=delete_checkpoint
        )
        data_lib.check_positive_int("save_every", save_every)
        self.save_every = save_every
        self.restore = restore
        self._saved_epoch = None

    def on_train_begin(self, logs=None):
        if not self.model.built:
            raise ValueError(
                "BackupAndRestore needs a built model: call it on a batch (model(x[:2])) first."
            )
        self._current_epoch = 0
        self._saved_epoch = None
        metadata = checkpoint.restore_backup(self.model, self.backup_dir) if self.restore else None
        if metadata is not None:
            self._current_epoch = self._saved_epoch = int(metadata["epoch"])
            self.model._initial_epoch = self._current_epoch

    def on_epoch_end(self, epoch, logs=None):
        self._current_epoch = epoch + 1
        if self._current_epoch % self.save_every == 0:
            self._save_model()

    def on_train_batch_end(self, batch, logs=None):
        pass

    def on_train_end(self, logs=None):
        if self.delete_checkpoint:
            checkpoint.delete_backup(self.backup_dir)
        elif self._current_epoch and self._saved_epoch != self._current_epoch:
            self._save_model()

    def _save_model(self):
        metadata = {
            "epoch": self._current_epoch,
            "batch": 0,
            "numpy_random_state": checkpoint.numpy_random_state(),
        }
        checkpoint.write_backup(self.model, self.backup_dir, metadata)
        self._saved_epoch = self._current_epoch


class ModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """`keras.callbacks.ModelCheckpoint` whose files are written atomically.

    Same arguments and behaviour as Keras' callback (`.keras` or `.weights.h5` file paths, with
    `{epoch}` placeholders, `save_best_only`, ...), but each file is written to a temporary file
    and moved into place (`keras_mle.checkpoint.save_model_atomic`), so a process killed during a
    save leaves the previous checkpoint loadable.
    """

    def _save_model(self, epoch, batch, logs):
        filepath = self._get_file_path(epoch, batch, logs)
        if os.path.isdir(filepath):
            raise OSError(f"ModelCheckpoint needs a file path, got the directory {filepath!r}.")
        if self._should_save_model(epoch, batch, logs, filepath):
            checkpoint.save_model_atomic(self.model, filepath, weights_only=self.save_weights_only)
            if self.verbose > 0:
                print(f"\nEpoch {epoch + 1}: finished saving model to {filepath}", flush=True)
