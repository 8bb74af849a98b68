"""`keras-mle demo`: the articles' experiments through `fit()` and every custom-loop mode.

Experiment 1 fits `y = m x + b` to a noisy line by MSE; experiment 2 fits `(mu, sigma)` of a
Gaussian sample by NLL; experiment 3 fits `y ~ N(m x + b, sigma^2)` by NLL and shows that MSE and
likelihood share their argmin in `(m, b)`. Each run starts from the same initial values and
writes TensorBoard logs; the fitted models are saved as `.keras`, the articles' plots as PNG,
one table per experiment compares every estimate with the closed-form MLE, and a
summary table gives the `fit()` estimate's standard errors and intervals (`keras_mle.inference`).

Experiment 4 has noise that grows with x, `y = sin(2 pi x) + (0.1 + 0.5 x) e`, and no closed
form: a `GaussianNetwork` (a small ReLU MLP with a mean head and a scale head) learns the mean
and `sigma(x)` together through `fit()`, with TensorBoard logs and the calibration pictures of
`keras_mle.calibration.CalibrationTensorBoard`. It is judged against the truth: the largest
relative error of the fitted `sigma(x)` on a grid (0% for a perfect fit) and the coverage of the
95% prediction interval on held-out data (95% when calibrated).

`fit()` runs the package's recommended fast path (`keras_mle.data.epoch_dataset` with
`jit_compile=True`): the same optimizer steps as `fit(x, y, batch_size=N, shuffle=False)`, with
Keras' per-epoch overhead paid once per `repeats` epochs.
"""

from __future__ import annotations

import dataclasses
import os
import time

import keras
import numpy as np

from keras_mle import calibration, closed_form, data, loops, metrics
from keras_mle.callbacks import ParameterTensorBoard
from keras_mle.inference import inference
from keras_mle.models import GaussianMLE, GaussianRegression, LinearRegression
from keras_mle.models.gaussian_network import GaussianNetwork

MODES = ("fit", *loops.MODES)


@dataclasses.dataclass
class Experiment:
    """One of the demo's experiments: data, model factory, optimizer settings, reference."""

    name: str
    title: str
    make_model: object
    x: np.ndarray
    y: np.ndarray | None
    truth: dict
    reference: dict
    make_optimizer: object
    epochs: int


@dataclasses.dataclass
class Run:
    mode: str
    model: object
    history: dict
    steps: np.ndarray
    seconds: float


def experiments(quick: bool = False) -> list[Experiment]:
    """The three experiments with the articles' data and initial values."""
    x, y = data.noisy_line(m=1.0, b=2.0, n=100, noise=0.15, seed=0)
    samples = data.gaussian_sample(mu=2.0, sigma=1.0, n=1000, seed=0)
    ols = closed_form.ols(x, y)
    gaussian = closed_form.gaussian_mle(samples)
    # The second article starts from 0.7 * mean and 1.3 * std of the sample.
    mu0 = round(0.7 * float(samples.mean()), 2)
    sigma0 = round(1.3 * float(samples.std()), 2)
    scale = 10 if quick else 1
    return [
        Experiment(
            name="line",
            title="Line y = m x + b by MSE",
            make_model=lambda: LinearRegression(
                m_initializer=keras.initializers.RandomNormal(seed=0)
            ),
            x=x,
            y=y,
            truth={"m": 1.0, "b": 2.0},
            reference={"m": ols["m"][0], "b": ols["b"]},
            make_optimizer=lambda: keras.optimizers.SGD(0.7),
            epochs=300 // scale,
        ),
        Experiment(
            name="gaussian",
            title=f"Gaussian (mu, sigma) by NLL, from mu={mu0}, sigma={sigma0}",
            make_model=lambda: GaussianMLE(initial_mu=mu0, initial_sigma=sigma0),
            x=samples,
            y=None,
            truth={"mu": 2.0, "sigma": 1.0},
            reference={"mu": gaussian["mu"], "sigma": gaussian["sigma"]},
            make_optimizer=lambda: keras.optimizers.SGD(0.5),
            epochs=100 // scale,
        ),
        Experiment(
            name="gaussian_regression",
            title="Line y ~ N(m x + b, sigma^2) by NLL: the same (m, b) as MSE",
            make_model=lambda: GaussianRegression(
                initial_sigma=1.0, m_initializer=keras.initializers.RandomNormal(seed=0)
            ),
            x=x,
            y=y,
            truth={"m": 1.0, "b": 2.0, "sigma": 0.15},
            reference={"m": ols["m"][0], "b": ols["b"], "sigma": ols["sigma"]},
            # The NLL's curvature in (m, b) is that of the MSE over 2 sigma^2 (about 24x at
            # sigma = 0.145), so the stable step is that much smaller.
            make_optimizer=lambda: keras.optimizers.SGD(0.025),
            epochs=600 // scale,
        ),
    ]


def run_experiment(experiment: Experiment, out: str) -> list[Run]:
    """Trains the experiment's model in every mode from one initialisation."""
    first = experiment.make_model()
    first(experiment.x[:2])
    initial_weights = first.get_weights()
    runs = []
    for mode in MODES:
        model = experiment.make_model()
        model(experiment.x[:2])
        model.set_weights(initial_weights)
        log_dir = os.path.join(out, "tensorboard", experiment.name, mode)
        start = time.perf_counter()
        if mode == "fit":
            callbacks = _tensorboard(experiment, log_dir, experiment.epochs // _repeats(experiment))
            history, steps = _fast_fit(model, experiment, callbacks)
        else:
            history = loops.train(
                model,
                experiment.x,
                experiment.y,
                epochs=experiment.epochs,
                batch_size=len(experiment.x),
                optimizer=experiment.make_optimizer(),
                mode=mode,
                callbacks=_tensorboard(experiment, log_dir, experiment.epochs),
                verbose=0,
            ).history
            steps = np.arange(1, experiment.epochs + 1)
        seconds = time.perf_counter() - start
        model.save(os.path.join(out, "models", f"{experiment.name}_{mode}.keras"))
        runs.append(Run(mode, model, history, steps, seconds))
    return runs


def _tensorboard(experiment, log_dir, keras_epochs):
    """The package's TensorBoard callback: parameters, loss, likelihood, gradient norm, images.

    It replaces Keras' own `TensorBoard` here, whose `epoch_*` scalars it repeats at about a
    third of the cost per epoch.
    """
    data = experiment.x if experiment.y is None else (experiment.x, experiment.y)
    return [ParameterTensorBoard(log_dir, data=data, image_every=max(1, keras_epochs // 2))]


def _repeats(experiment):
    return next(r for r in (100, 50, 20, 10, 5, 2, 1) if experiment.epochs % r == 0)


def _fast_fit(model, experiment, callbacks):
    """`fit()` on whole-epoch elements, `repeats` epochs per Keras epoch (full batch)."""
    repeats = _repeats(experiment)
    model.compile(optimizer=experiment.make_optimizer(), jit_compile=True)
    x, y, _ = model.check_data(experiment.x, experiment.y)
    dataset = data.epoch_dataset(x, y, batch_size=len(x), repeats=repeats)
    history = model.fit(
        dataset,
        epochs=experiment.epochs // repeats,
        steps_per_epoch=1,
        shuffle=False,
        callbacks=callbacks,
        verbose=0,
    )
    steps = np.arange(1, experiment.epochs // repeats + 1) * repeats
    return history.history, steps


def format_table(experiment: Experiment, runs: list[Run]) -> str:
    """One table: parameter, truth, closed form, each mode's estimate; wall time per mode."""
    headers = ["parameter", "truth", "closed form", *(r.mode for r in runs)]
    rows = []
    for name, reference in experiment.reference.items():
        estimates = [float(np.ravel(r.model.params[name])[0]) for r in runs]
        rows.append([name, f"{experiment.truth[name]:.4f}", f"{float(reference):.6f}"])
        rows[-1] += [f"{e:.6f}" for e in estimates]
    for name, reference in experiment.reference.items():
        errors = [abs(float(np.ravel(r.model.params[name])[0]) - reference) for r in runs]
        rows.append([f"|{name} - MLE|", "", ""] + [f"{e:.1e}" for e in errors])
    rows.append(["wall time (s)", "", ""] + [f"{r.seconds:.2f}" for r in runs])
    rows.append(["epochs", "", ""] + [str(experiment.epochs)] * len(runs))
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=True)]
    line = "  ".join("-" * w for w in widths)
    text = [
        experiment.title,
        line,
        "  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)),
    ]
    text.append(line)
    text += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(text)


# ---------------------------------------------------------------- experiment 4: a network
def true_sigma(x):
    """The noise level of experiment 4: `sigma(x) = 0.1 + 0.5 x`."""
    return 0.1 + 0.5 * np.asarray(x)


def noisy_sine(n: int, seed: int):
    """`n` points of `y = sin(2 pi x) + sigma(x) e`, `x ~ U(0, 1)`, `e ~ N(0, 1)`, as float32.

    Returns:
        `(x, y)` of shapes `(n, 1)` and `(n,)`.
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, 1))
    y = np.sin(2 * np.pi * x[:, 0]) + true_sigma(x[:, 0]) * rng.normal(size=n)
    return x.astype(np.float32), y.astype(np.float32)


@dataclasses.dataclass
class NetworkExperiment:
    """Experiment 4's settings: data sizes and the training schedule."""

    name: str
    title: str
    n: int
    n_held_out: int
    epochs: int
    batch_size: int
    learning_rate: float
    width: int
    calibration_every: int
    quick: bool


@dataclasses.dataclass
class NetworkRun:
    """Experiment 4's fit and how it compares with the truth."""

    model: GaussianNetwork
    x: np.ndarray
    y: np.ndarray
    #: `PLOT_GRID` and the fitted mean, fitted sigma and true sigma on it (the plot's curves).
    grid: np.ndarray
    mean: np.ndarray
    sigma: np.ndarray
    true_sigma: np.ndarray
    #: The fitted sigma on `SIGMA_GRID`, where its error is measured.
    grid_sigma: np.ndarray
    max_sigma_error: float
    coverage: float
    level: float
    history: dict
    seconds: float


#: Where `sigma(x)` is compared with the truth: 19 points of [0.05, 0.95].
SIGMA_GRID = np.linspace(0.05, 0.95, 19, dtype=np.float32)
#: Where the plot draws the fitted mean and `sigma(x)`.
PLOT_GRID = np.linspace(0.0, 1.0, 101, dtype=np.float32)


def network_experiment(quick: bool = False) -> NetworkExperiment:
    """Experiment 4: 20,000 points and 40 epochs; `quick`: 2,000 points and 30 epochs.

    The batch sizes divide the data, so that every batch has one shape and `fit()` traces its
    step once.
    """
    full = NetworkExperiment(
        name="gaussian_network",
        title="Noise growing with x, y = sin(2 pi x) + (0.1 + 0.5 x) e: a GaussianNetwork by NLL",
        n=20_000,
        n_held_out=10_000,
        epochs=40,
        batch_size=250,
        learning_rate=0.005,
        width=64,
        calibration_every=20,
        quick=False,
    )
    if not quick:
        return full
    return dataclasses.replace(
        full,
        n=2000,
        epochs=30,
        batch_size=100,
        learning_rate=0.01,
        calibration_every=30,
        quick=True,
    )


def run_network(experiment: NetworkExperiment, out: str, level: float = 0.95) -> NetworkRun:
    """Trains experiment 4's `GaussianNetwork` through `fit()`, saves it, judges it on new data.

    The weights' initial values and the batches' order come from `keras.utils.set_random_seed(0)`.
    """
    x, y = noisy_sine(experiment.n, seed=0)
    x_new, y_new = noisy_sine(experiment.n_held_out, seed=1)
    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    backbone = keras.Sequential(
        [
            keras.layers.Dense(experiment.width, activation="relu"),
            keras.layers.Dense(experiment.width, activation="relu"),
        ]
    )
    model = GaussianNetwork(backbone)
    steps = experiment.epochs * -(-experiment.n // experiment.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(experiment.learning_rate, steps, alpha=0.05)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule), metrics=[metrics.IntervalCoverage(level)]
    )
    log_dir = os.path.join(out, "tensorboard", experiment.name, "fit")
    callbacks = [
        keras.callbacks.TensorBoard(log_dir, write_graph=False),
        calibration.CalibrationTensorBoard(
            log_dir,
            (x_new, y_new),
            every=experiment.calibration_every,
            level=level,
            max_points=2000,
        ),
    ]
    history = model.fit(
        x,
        y,
        epochs=experiment.epochs,
        batch_size=experiment.batch_size,
        callbacks=callbacks,
        verbose=0,
    )
    seconds = time.perf_counter() - start
    model.save(os.path.join(out, "models", f"{experiment.name}_fit.keras"))
    curves = model.predict_distribution(PLOT_GRID[:, None])
    grid_sigma = model.predict_distribution(SIGMA_GRID[:, None])["sigma"]
    low, high = model.prediction_interval(x_new, level=level)
    return NetworkRun(
        model=model,
        x=x,
        y=y,
        grid=PLOT_GRID,
        mean=curves["mean"],
        sigma=curves["sigma"],
        true_sigma=true_sigma(PLOT_GRID),
        grid_sigma=grid_sigma,
        max_sigma_error=float(np.max(np.abs(grid_sigma / true_sigma(SIGMA_GRID) - 1))),
        coverage=float(np.mean((y_new >= low) & (y_new <= high))),
        level=level,
        history=history.history,
        seconds=seconds,
    )


def format_network(experiment: NetworkExperiment, run: NetworkRun) -> str:
    """Experiment 4's lines: sigma(x)'s largest error, the interval's coverage; the truth."""
    grid = SIGMA_GRID
    level = f"{run.level:.0%}"
    rows = [
        [
            f"largest relative error of sigma(x) on {len(grid)} x in "
            f"[{grid[0]:.2f}, {grid[-1]:.2f}]",
            "0.0%",
            f"{run.max_sigma_error:.1%}",
        ],
        [
            f"{level} interval coverage on {experiment.n_held_out:,} held-out points",
            f"{run.level:.1%}",
            f"{run.coverage:.1%}",
        ],
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    widths[1], widths[2] = max(widths[1], len("truth")), max(widths[2], len("fit"))
    line = "  ".join("-" * w for w in widths)
    header = "  ".join(h.rjust(w) for h, w in zip(("", "truth", "fit"), widths, strict=True))
    text = [experiment.title, line, header, line]
    text += [
        "  ".join((r[0].ljust(widths[0]), r[1].rjust(widths[1]), r[2].rjust(widths[2])))
        for r in rows
    ]
    every = slice(None, None, 3)
    text.append("")
    text.append("x              " + " ".join(f"{v:6.2f}" for v in grid[every]))
    text.append("true sigma(x)  " + " ".join(f"{v:6.3f}" for v in true_sigma(grid[every])))
    text.append("fitted sigma(x)" + " ".join(f"{v:6.3f}" for v in run.grid_sigma[every]))
    text.append("")
    text.append(
        f"{experiment.n:,} training points, 2 x {experiment.width} ReLU backbone, "
        f"{experiment.epochs} epochs of batches of {experiment.batch_size} through fit(): "
        f"{run.seconds:.2f} s"
    )
    if experiment.quick:
        full = network_experiment(quick=False)
        text.append(
            f"Quick run: a tenth of the data, not trained to convergence; the full demo "
            f"trains {full.epochs} epochs on {full.n:,} points."
        )
    return "\n".join(text)


def run(out: str = "demo_output", quick: bool = False) -> dict:
    """Runs the demo, writes everything under `out`, prints the tables; returns the runs."""
    from keras_mle import plots

    for folder in ("models", "plots", "tensorboard"):
        os.makedirs(os.path.join(out, folder), exist_ok=True)
    results = {}
    tables = []
    for experiment in experiments(quick=quick):
        runs = run_experiment(experiment, out)
        results[experiment.name] = (experiment, runs)
        # Standard errors, intervals and information criteria of the fit() estimate.
        summary = inference(runs[0].model, experiment.x, experiment.y).summary()
        table = format_table(experiment, runs) + "\n\n" + summary
        tables.append(table)
        print(table, end="\n\n", flush=True)
    network = network_experiment(quick=quick)
    network_run = run_network(network, out)
    results[network.name] = (network, network_run)
    tables.append(format_network(network, network_run))
    print(tables[-1], end="\n\n", flush=True)
    plots.demo_plots(results, os.path.join(out, "plots"))
    with open(os.path.join(out, "results.txt"), "w") as f:
        f.write("\n\n".join(tables) + "\n")
    print(f"Wrote plots, TensorBoard logs and models under {out}/.")
    print(f"Open TensorBoard with: tensorboard --logdir {os.path.join(out, 'tensorboard')}")
    return results
