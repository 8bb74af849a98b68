"""Helpers shared by the test modules (not fixtures).

One of each: `built` (build a model on data), `plane` (a noisy plane in k features),
`train` (full-batch fit() or a custom loop, with callbacks), `fit_steps` (an exact number of
optimizer steps through `fit()`, by default on the fast `epoch_dataset` path), `load_example`
(import an `examples/` script once), and the references and readers below
(`gradient_descent_mse`, `read_events`, the image checks), and `cli_run`, `summary_rows`,
`front_end_probe` for the command line.
"""

import json
import os
import re
import subprocess
import sys

import keras

import keras_mle


def built(model, x):
    """`model` built (and its variables initialised) by a call on the first two rows of `x`."""
    model(x[:2])
    return model


def plane(n=64, seed=0, *, slopes=(1.5, -0.5), intercept=2.0, noise=0.3, dtype="float32"):
    """`y = x @ slopes + intercept` plus N(0, noise^2), `x` standard normal of shape `(n, k)`.

    The defaults are two features, `y = 1.5 x_0 - 0.5 x_1 + 2`. `y` is computed from `x` as
    returned (after the cast to `dtype`), then cast itself.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(slopes))).astype(dtype)
    y = x @ np.asarray(slopes, np.float64) + intercept + noise * rng.normal(size=n)
    return x, y.astype(dtype)


def two_feature_data(n=64, seed=0):
    """`plane(n, seed)`: `y = x @ [1.5, -0.5] + 2` plus N(0, 0.3^2) noise, float32."""
    return plane(n, seed)


def train(
    model,
    x,
    y,
    mode,
    epochs,
    callbacks=None,
    optimizer=None,
    *,
    batch_size=None,
    sample_weight=None,
    validation_data=None,
):
    """Trains through `fit()` (`mode="fit"`) or `keras_mle.loops.train(mode=...)`, in order.

    Full-batch by default (`batch_size=None`), never shuffled, silent. `optimizer` is required
    (a Keras optimizer or its name): `fit()` compiles the model with it. Returns the History.
    """
    if optimizer is None:
        raise TypeError("train() needs an optimizer.")
    batch_size = batch_size or len(x)
    if mode == "fit":
        model.compile(optimizer=optimizer)
        return model.fit(
            x,
            y,
            sample_weight=sample_weight,
            epochs=epochs,
            batch_size=batch_size,
            shuffle=False,
            verbose=0,
            callbacks=callbacks,
            validation_data=validation_data,
        )
    return keras_mle.loops.train(
        model,
        x,
        y,
        sample_weight=sample_weight,
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        mode=mode,
        callbacks=callbacks,
        validation_data=validation_data,
        verbose=0,
    )


def fit_steps(
    model,
    x,
    y=None,
    w=None,
    *,
    optimizer,
    steps,
    batch_size=None,
    path="epoch_dataset",
    jit_compile=False,
):
    """Compiles `model` with `optimizer` and makes exactly `steps` optimizer steps with `fit()`.

    The steps are those of `fit(x, y, sample_weight=w, batch_size=batch_size, shuffle=False)`
    epoch after epoch (`batch_size=None`: full batch), taken one of two ways:

    - `path="epoch_dataset"` (the default): the documented fast path, `fit()` on
      `keras_mle.data.epoch_dataset(..., repeats=...)`, two Keras epochs when `steps` allows,
      else one: an in-graph loop, so hundreds of steps cost one compiled call.
    - `path="arrays"`: plain `fit()` on the arrays repeated `steps / batches` times in one
      epoch, i.e. through `fit()`'s own array checks and dataset in the model's dtype.

    `jit_compile=False` by default: for a few hundred steps on small data, XLA's compile time
    costs more than it saves. `steps` must be a whole number of epochs. Returns the model.
    """
    import numpy as np

    from keras_mle import data

    n = len(x)
    batch_size = batch_size or n
    batches = -(-n // batch_size)
    if steps % batches:
        raise ValueError(f"steps={steps} is not a whole number of {batches}-batch epochs.")
    epochs = steps // batches
    model.compile(optimizer=optimizer, jit_compile=jit_compile)
    if path == "epoch_dataset":
        keras_epochs = 2 if epochs % 2 == 0 else 1
        checked = model.check_data(x, y, w)
        dataset = data.epoch_dataset(
            *checked, batch_size=batch_size, repeats=epochs // keras_epochs
        )
        model.fit(dataset, steps_per_epoch=1, epochs=keras_epochs, shuffle=False, verbose=0)
    elif path == "arrays":
        if epochs > 1 and n % batch_size:
            raise ValueError("path='arrays' repeats the data: batch_size must divide len(x).")

        def tiled(a):
            return None if a is None else np.tile(a, (epochs,) + (1,) * (np.ndim(a) - 1))

        model.fit(
            tiled(x),
            tiled(y),
            sample_weight=tiled(w),
            batch_size=batch_size,
            epochs=1,
            shuffle=False,
            verbose=0,
        )
    else:
        raise ValueError(f"path must be 'epoch_dataset' or 'arrays', got {path!r}.")
    assert int(model.optimizer.iterations) == steps, (int(model.optimizer.iterations), steps)
    return model


def load_example(name):
    """Imports `examples/<name>.py` once per process, as the module `name`.

    Once: an example's model classes register for Keras serialization on import, and the
    registered class must stay the one `keras.models.load_model` returns.
    """
    import importlib.util
    import sys
    from pathlib import Path

    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def gradient_descent_mse(x, y, m, b, epochs, learning_rate):
    """Full-batch gradient descent on the MSE of `y = x @ m + b`, in float64 NumPy.

    Returns an array of shape `(epochs, k + 1)`: `(m_0, ..., m_{k-1}, b)` after each epoch.
    """
    import numpy as np

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    x = x.reshape(len(x), -1)
    m, b = np.asarray(m, np.float64).reshape(-1), float(b)
    path = []
    for _ in range(epochs):
        residual = x @ m + b - y
        m = m - learning_rate * 2 * x.T @ residual / len(y)
        b = b - learning_rate * 2 * residual.mean()
        path.append(np.concatenate([m, [b]]))
    return np.array(path)


def read_events(run_dir):
    """`{tag: (steps, values, plugin)}` from the TensorBoard event files of one run.

    `values` holds the scalars of a scalar tag, the decoded RGBA images (`uint8`, `(H, W, 4)`)
    of an image tag, and `None` for other plugins.
    """
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    accumulator.Reload()
    events = {}
    for tag in accumulator.Tags()["tensors"]:
        items = accumulator.Tensors(tag)
        plugin = accumulator.SummaryMetadata(tag).plugin_data.plugin_name
        protos = [tf.make_ndarray(e.tensor_proto) for e in items]
        if plugin == "scalars":
            values = protos
        elif plugin == "images":
            # An image summary holds [width, height, png, ...].
            values = [tf.image.decode_png(p[2], channels=4).numpy() for p in protos]
        else:
            values = None
        events[tag] = ([e.step for e in items], values, plugin)
    return events


def colour_masks(image):
    """Pixels of pure red (the fitted curve) and pure blue (the data points) in an RGB(A) image."""
    r, g, b = (image[..., i].astype(int) for i in range(3))
    red = (r >= 200) & (g <= 90) & (b <= 90)
    blue = (b >= 200) & (r <= 90) & (g <= 90)
    return red, blue


def red_line_on_blue_points(image, tolerance=2.0):
    """How well the red line of a fit image follows the least-squares line of its blue points.

    The points are the connected blue blobs (a blob of merged points counts as that many);
    blobs far from the line, such as the legend's marker, are dropped by iterated clipping at
    4 robust standard deviations. The pixel map of a plot is affine in each axis, so the least
    squares line of the points in pixels is the image of their least-squares line in data units.

    Returns:
        The fraction of the pixel columns spanned by the points where a red pixel lies within
        `tolerance` pixels of that line.
    """
    import numpy as np
    from scipy import ndimage

    red, blue = colour_masks(image)
    labels, count = ndimage.label(blue)
    if count < 3:
        return 0.0
    index = np.arange(1, count + 1)
    centres = np.array(ndimage.center_of_mass(blue, labels, index))
    sizes = np.asarray(ndimage.sum(blue, labels, index))
    weights = np.maximum(1.0, np.round(sizes / np.median(sizes)))
    keep = np.ones(count, bool)
    for _ in range(3):
        slope, intercept = np.polyfit(
            centres[keep, 1], centres[keep, 0], 1, w=np.sqrt(weights[keep])
        )
        residuals = centres[:, 0] - (slope * centres[:, 1] + intercept)
        keep = np.abs(residuals) <= 4 * 1.4826 * np.median(np.abs(residuals[keep]))
    columns = np.arange(int(np.ceil(centres[keep, 1].min())), int(centres[keep, 1].max()) + 1)
    red_rows, red_columns = np.nonzero(red)
    hits = [
        np.any(np.abs(red_rows[red_columns == k] - (slope * k + intercept)) <= tolerance)
        for k in columns
    ]
    return float(np.mean(hits))


def red_curve_on_histogram(image, samples, density, tolerance=2.0):
    """How well the red curve of a sample's fit image follows `density` on its histogram's axes.

    The pixel map comes from the histogram itself (30 bins from the sample's min to max, in
    matplotlib's first colour at alpha 0.5): its left and right edges are the sample's extremes,
    its base is density 0 and its tallest bar is the highest density of the histogram. The bars
    are the pixels of that colour connected, through the red curve drawn over them, to the
    lowest row of that colour; which leaves out the legend's patch.

    Returns:
        The fraction of the histogram's pixel columns where a red pixel lies within `tolerance`
        pixels of `density` (a function of the values) drawn on that map.
    """
    import numpy as np
    from scipy import ndimage

    samples = np.asarray(samples, np.float64)
    red, _ = colour_masks(image)
    colour = np.all(np.abs(image[..., :3].astype(int) - [143, 187, 217]) <= 12, axis=-1)
    if not colour.any():
        return 0.0
    base = np.nonzero(colour)[0].max()
    labels, _ = ndimage.label(colour | red, structure=np.ones((3, 3)))
    on_base = np.unique(labels[base][colour[base]])
    rows, columns = np.nonzero(colour & np.isin(labels, on_base))
    left, right, top = columns.min(), columns.max(), rows.min()
    heights, _ = np.histogram(samples, bins=30, density=True)
    columns = np.arange(left, right + 1)
    values = samples.min() + (columns - left + 0.5) / len(columns) * np.ptp(samples)
    expected = base - density(values) / heights.max() * (base - top)
    red_rows, red_columns = np.nonzero(red)
    hits = [
        np.any(np.abs(red_rows[red_columns == k] - row) <= tolerance)
        for k, row in zip(columns, expected, strict=True)
    ]
    return float(np.mean(hits))


def least_squares(x, y, sample_weight=None):
    """`(m, b, sigma)` of (weighted) least squares, from `numpy.linalg.lstsq` on `[x, 1]`.

    `sigma = sqrt(sum_i w_i r_i^2 / sum_i w_i)` is the Gaussian MLE of the noise level.
    """
    import numpy as np

    x = np.asarray(x, np.float64).reshape(len(x), -1)
    y = np.asarray(y, np.float64)
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, np.float64)
    design = np.column_stack([x, np.ones(len(x))])
    root = np.sqrt(w)
    coefficients, *_ = np.linalg.lstsq(root[:, None] * design, root * y, rcond=None)
    residuals = y - design @ coefficients
    return coefficients[:-1], coefficients[-1], np.sqrt(np.sum(w * residuals**2) / w.sum())


def cli_run(capsys, *args):
    """Runs `keras-mle` in this process: `(exit code, stdout, stderr)`."""
    from keras_mle import cli

    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def summary_rows(out):
    """`{label: [coef, std err, ...]}` from the summary table's parameter rows."""
    rows = {}
    for line in out.splitlines():
        cells = line.split()
        if len(cells) == 7 and re.fullmatch(r"[a-z]+(\[\w+\])?", cells[0]):
            try:
                rows[cells[0]] = [float(c) for c in cells[1:]]
            except ValueError:  # the header row
                continue
    return rows


#: Runs `keras_mle_cli.main` on several argument lists in one process (see `front_end_probe`).
_FRONT_END_PROBE = """
import contextlib, io, json, sys
import keras_mle_cli
results = {}
for name, argv in json.loads(sys.argv[1]).items():
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = keras_mle_cli.main(argv)
    results[name] = [code, out.getvalue(), err.getvalue()]
imported = {name: name in sys.modules for name in ("tensorflow", "keras", "keras_mle", "numpy")}
print(json.dumps({"results": results, "imported": imported}))
"""


def front_end_probe(cwd, argvs):
    """`keras-mle`'s front end on each of `argvs` (`{name: argv}`), in one fresh process in `cwd`.

    Returns `(results, imported)`: `{name: [exit code, stdout, stderr]}`, and which of
    TensorFlow, Keras, keras_mle and NumPy the process imported.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", _FRONT_END_PROBE, json.dumps(argvs)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    report = json.loads(done.stdout)
    return report["results"], report["imported"]


class WatchesBatches(keras.callbacks.Callback):
    """A batch hook that does nothing: it only makes `fit` take Keras' per-batch loop."""

    def on_train_batch_end(self, batch, logs=None):
        pass


class StopAfter(keras.callbacks.Callback):
    """Interrupts training (`KeyboardInterrupt`) at the end of epoch `epoch`."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt(f"interrupted after epoch {epoch}")
