"""Plots of fits: the articles' figures for the demo, and the fit image of the callbacks.

Drawn on `matplotlib.figure.Figure` objects with the Agg canvas, never through `pyplot`:
importing or using this module leaves the user's matplotlib backend and figures alone.

- `render_fit`: the current fit of any `keras_mle.MaximumLikelihoodModel` as an RGBA array (the
  image `keras_mle.callbacks.ParameterTensorBoard` logs), drawn by `draw_fit`;
- `follow_data`: the y-range of the data (and the fitted curve), whatever a band around the curve
  reaches (a noise level that grows exponentially with `x` would otherwise set the scale);
- `demo_plots`: the PNG files of `keras-mle demo`, built from `line_fit`, `gaussian_fit`,
  `mse_and_loglik`, `loss_curves`, `interval_fit` and `sigma_curves`, each drawing on a given
  matplotlib `Axes`.
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from keras_mle import closed_form, distributions

__all__ = [
    "new_figure",
    "render_fit",
    "draw_fit",
    "follow_data",
    "demo_plots",
    "line_fit",
    "gaussian_fit",
    "mse_and_loglik",
    "loss_curves",
    "interval_fit",
    "sigma_curves",
]

#: Size of the `render_fit` image: 480 x 320 pixels.
FIT_FIGSIZE = (6, 4)
FIT_DPI = 80
#: Colour of the fitted curve in `render_fit` (pure red, so that it can be found in the image).
FIT_COLOR = "r"
DATA_COLOR = "b"
#: `follow_data` pads the data's y-range by this share of it on each side.
Y_MARGIN = 0.05


def new_figure(figsize=(6, 4), dpi=100):
    """A `Figure` on its own Agg canvas, and its single `Axes`, without `pyplot`.

    Args:
        figsize: Width and height in inches. Defaults to `(6, 4)`.
        dpi: Dots per inch. Defaults to `100`.

    Returns:
        `(figure, axes)`.
    """
    figure = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def render_fit(
    model,
    x,
    y=None,
    sample_weight=None,
    *,
    title=None,
    max_points: int = 2000,
    target_name=None,
):
    """The model's current fit drawn on the data, as an RGBA `uint8` array of shape `(H, W, 4)`.

    What is drawn depends on the data, never on the model's class:

    - a model of a sample (`not model.takes_targets`): a histogram of the sample (weighted by
      `sample_weight`) with the fitted density `exp(-l(x))` in red, `l` being
      `model.per_sample_loss` (the negative log-likelihood of one observation);
    - one feature: the data with the fitted mean `model.predict(x)` in red, and a band of
      `+- 2 sigma` around it when the model has a `predict_distribution(x)` method returning
      `{"mean", "sigma"}`;
    - several features: observed `y` against the predicted mean, with the line `y = prediction`
      in red.

    The axes are labelled with the names of the columns where they are known: the feature by
    the model's `feature_names`, `y` (or the sample) by `target_name`. The y-range is the data's
    (see `follow_data`), not the band's.

    Args:
        model: A built `keras_mle.MaximumLikelihoodModel`.
        x: Inputs (for a model of a sample: the sample), checked by `model.check_data`.
        y: Targets, or `None` for a model of a sample. Defaults to `None`.
        sample_weight: Per-sample weights, used by the histogram of a sample. Defaults to `None`.
        title: Text after the model's class name in the title. Defaults to `None` (no title).
        max_points: At most this many data points are drawn (a fixed random subset).
            Defaults to `2000`.
        target_name: The name of `y` (for a model of a sample: of the sample), which labels its
            axis. Defaults to `None` (`"y"`, or the model's `x_name` for a sample).

    Returns:
        The RGBA image, 480 x 320 pixels.
    """
    if len(x) > max_points:
        keep = np.sort(np.random.default_rng(0).choice(len(x), max_points, replace=False))
        x = x[keep]
        y = None if y is None else y[keep]
        sample_weight = None if sample_weight is None else sample_weight[keep]
    figure, ax = new_figure(FIT_FIGSIZE, FIT_DPI)
    draw_fit(ax, model, x, y, sample_weight, target_name=target_name)
    if title:
        ax.set_title(f"{type(model).__name__}, {title}")
    figure.tight_layout()
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba()).copy()


def draw_fit(ax, model, x, y=None, sample_weight=None, *, target_name=None):
    """Draws `render_fit`'s picture of the model's fit on the matplotlib `Axes` `ax`.

    Args:
        ax: The `Axes` to draw on.
        model: A built `keras_mle.MaximumLikelihoodModel`.
        x: Inputs (for a model of a sample: the sample), as the model checked them.
        y: Targets, or `None` for a model of a sample. Defaults to `None`.
        sample_weight: Per-sample weights of a sample's histogram. Defaults to `None`.
        target_name: The name of `y` (or of the sample). Defaults to `None`.

    Returns:
        `ax`.
    """
    if not model.takes_targets:
        _draw_density(ax, model, x, sample_weight, target_name or model.x_name)
    elif x.ndim == 1 or x.shape[1] == 1:
        _draw_mean(ax, model, x, y, feature_label(model), target_name or "y")
    else:
        _draw_observed_against_predicted(ax, model, x, y, target_name or "y")
    ax.legend(loc="best", fontsize="small")
    return ax


def feature_label(model, default="x") -> str:
    """The name of a one-feature model's feature (its `feature_names`), or `default`."""
    names = getattr(model, "feature_names", None)
    return str(names[0]) if names is not None and len(names) == 1 else default


def follow_data(ax, values, *curves, margin: float = Y_MARGIN):
    """Sets the y-range of `ax` to that of `values` and the `curves`, padded by `margin` of it.

    Only the finite values count: a band (`mean +- 2 sigma`) drawn on `ax` is cut where it
    leaves that range, instead of setting it.

    Returns:
        `(low, high)`, the limits set.
    """
    finite = [np.ravel(np.asarray(v, np.float64)) for v in (values, *curves)]
    finite = np.concatenate([v[np.isfinite(v)] for v in finite])
    if finite.size == 0:
        return ax.get_ylim()
    low, high = float(finite.min()), float(finite.max())
    pad = margin * (high - low) if high > low else max(abs(low), 1.0) * margin
    ax.set_ylim(low - pad, high + pad)
    return low - pad, high + pad


def _draw_density(ax, model, x, sample_weight, name):
    samples = np.ravel(x)
    ax.hist(samples, bins=30, weights=sample_weight, density=True, alpha=0.5, label="data")
    grid = np.linspace(samples.min(), samples.max(), 200)
    loss = model.per_sample_loss(grid.reshape(-1, *np.shape(x)[1:]))
    values = ", ".join(f"{k}={float(v):.4g}" for k, v in list(model.parameter_logs().items())[:4])
    ax.plot(grid, np.exp(-loss), FIT_COLOR, label=f"fit: {values}")
    ax.set_xlabel(name)
    ax.set_ylabel("density")


def _draw_mean(ax, model, x, y, x_label, y_label):
    column = np.ravel(x)
    grid = np.linspace(column.min(), column.max(), 100).astype(column.dtype)
    grid_x = grid.reshape(-1, *x.shape[1:])
    distribution = None
    predict_distribution = getattr(model, "predict_distribution", None)
    if callable(predict_distribution):
        distribution = predict_distribution(grid_x, batch_size=len(grid), verbose=0)
    if isinstance(distribution, dict) and {"mean", "sigma"} <= set(distribution):
        mean = np.ravel(distribution["mean"])
        sigma = np.ravel(distribution["sigma"])
    else:
        mean = np.ravel(model.predict(grid_x, batch_size=len(grid), verbose=0))
        sigma = None
    ax.plot(column, y, DATA_COLOR + ".", markersize=3, label="data")
    if sigma is not None:
        ax.fill_between(
            grid,
            mean - 2 * sigma,
            mean + 2 * sigma,
            color=FIT_COLOR,
            alpha=0.15,
            linewidth=0,
            label="fit +- 2 sigma",
        )
    ax.plot(grid, mean, FIT_COLOR, label="fit")
    follow_data(ax, y, mean)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)


def _draw_observed_against_predicted(ax, model, x, y, y_label):
    predicted = np.ravel(model.predict(x, batch_size=min(len(x), 4096), verbose=0))
    ax.plot(predicted, y, DATA_COLOR + ".", markersize=3, label="data")
    low, high = float(min(predicted.min(), y.min())), float(max(predicted.max(), y.max()))
    ax.plot([low, high], [low, high], FIT_COLOR, label=f"{y_label} = prediction")
    ax.set_xlabel(f"predicted {y_label}")
    ax.set_ylabel(f"observed {y_label}")


# -------------------------------------------------------------------- the demo's figures
def line_fit(ax, x, y, params, label="fit"):
    """Data with the fitted line `y = m x + b`.

    Args:
        ax: The matplotlib `Axes` to draw on.
        x: Feature values, shape `(N,)`.
        y: Targets, shape `(N,)`.
        params: Parameters with a slope `m` (its first component is used) and an intercept `b`.
        label: Legend label of the line, before its equation. Defaults to `"fit"`.
    """
    ax.plot(x, y, "b.", label="data")
    grid = np.linspace(min(x.min(), -0.15), max(x.max(), 1.15), 50)
    m = float(np.ravel(params["m"])[0])
    b = float(params["b"])
    ax.plot(grid, m * grid + b, "r", label=f"{label}: y = {m:.3f} x + {b:.3f}")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend()


def gaussian_fit(ax, samples, params, seed=0):
    """Histogram of the data against samples drawn from the fitted Gaussian, with its density.

    Args:
        ax: The matplotlib `Axes` to draw on.
        samples: The sample, shape `(N,)`.
        params: Parameters `mu` and `sigma` of the Gaussian.
        seed: Seed of the draws from the fit. Defaults to `0`.
    """
    mu, sigma = float(params["mu"]), float(params["sigma"])
    drawn = np.random.default_rng(seed).normal(mu, sigma, size=len(samples))
    bins = np.histogram_bin_edges(np.concatenate([samples, drawn]), bins=30)
    ax.hist(samples, bins=bins, alpha=0.5, density=True, label="data")
    ax.hist(drawn, bins=bins, alpha=0.5, density=True, label="samples from the fit")
    grid = np.linspace(bins[0], bins[-1], 200)
    density = np.exp(-0.5 * ((grid - mu) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    ax.plot(grid, density, "k", label=f"N({mu:.3f}, {sigma:.3f}^2)")
    ax.set_xlabel("value")
    ax.set_ylabel("density")
    ax.legend()


def mse_and_loglik(ax, x, y, sigma=None):
    """MSE and log-likelihood of `y = m x + b` against `m` (b at its OLS value).

    Args:
        ax: The matplotlib `Axes` to draw on (the log-likelihood goes on a twin y axis).
        x: Feature values, shape `(N,)`.
        y: Targets, shape `(N,)`.
        sigma: Noise level of the log-likelihood. Defaults to `None` (its MLE, from OLS).
    """
    ols = closed_form.ols(x, y)
    m_hat, b_hat = float(ols["m"][0]), float(ols["b"])
    sigma = float(ols["sigma"]) if sigma is None else sigma
    grid = np.linspace(m_hat - 1.0, m_hat + 1.0, 201)
    residuals = y[None, :] - grid[:, None] * x[None, :] - b_hat
    mse = np.mean(residuals**2, axis=1)
    loglik = -0.5 * len(x) * np.log(2 * np.pi * sigma**2) - np.sum(residuals**2, 1) / (2 * sigma**2)
    ax.plot(grid, mse, "b", label="MSE")
    ax.set_xlabel("m")
    ax.set_ylabel("MSE", color="b")
    twin = ax.twinx()
    twin.plot(grid, loglik, "r", label="log-likelihood")
    twin.set_ylabel("log-likelihood", color="r")
    ax.axvline(grid[np.argmin(mse)], color="b", linestyle="--")
    twin.axvline(grid[np.argmax(loglik)], color="r", linestyle=":")
    ax.set_title(f"argmin MSE = argmax log-likelihood = {grid[np.argmin(mse)]:.2f}")


def loss_curves(ax, runs, ylabel):
    """Loss per optimizer step for every mode, on a log scale.

    Args:
        ax: The matplotlib `Axes` to draw on.
        runs: Objects with `mode`, `steps` and `history["loss"]` (the demo's runs).
        ylabel: Label of the y axis.
    """
    for run in runs:
        ax.plot(run.steps, run.history["loss"], label=run.mode)
    ax.set_yscale("log")
    ax.set_xlabel("epoch (full-batch optimizer step)")
    ax.set_ylabel(ylabel)
    ax.legend()


def interval_fit(ax, x, y, grid, mean, sigma, level=0.95, max_points=2000):
    """Data with a fitted mean curve and its central interval `mean -/+ z sigma`.

    Args:
        ax: The matplotlib `Axes` to draw on.
        x: Feature values, shape `(N,)`.
        y: Targets, shape `(N,)`.
        grid: Sorted feature values of the curves, shape `(G,)`.
        mean: Fitted mean on `grid`, shape `(G,)`.
        sigma: Fitted standard deviation on `grid`, shape `(G,)`.
        level: Probability of the interval, `z = Phi^-1((1 + level) / 2)`. Defaults to `0.95`.
        max_points: At most this many data points are drawn (a fixed random subset).
            Defaults to `2000`.
    """
    x, y = np.ravel(x), np.ravel(y)
    if len(x) > max_points:
        keep = np.random.default_rng(0).choice(len(x), max_points, replace=False)
        x, y = x[keep], y[keep]
    z = float(distributions.normal_ppf(0.5 + 0.5 * level))
    ax.plot(x, y, DATA_COLOR + ".", markersize=2, alpha=0.4, label="data")
    ax.fill_between(
        grid,
        mean - z * sigma,
        mean + z * sigma,
        color=FIT_COLOR,
        alpha=0.15,
        linewidth=0,
        label=f"{level:.0%} interval",
    )
    ax.plot(grid, mean, FIT_COLOR, label="fitted mean")
    follow_data(ax, y, mean)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend(loc="best", fontsize="small")


def sigma_curves(ax, grid, fitted, true):
    """The true noise level `sigma(x)` against the fitted one.

    Args:
        ax: The matplotlib `Axes` to draw on.
        grid: Sorted feature values, shape `(G,)`.
        fitted: Fitted `sigma` on `grid`, shape `(G,)`.
        true: True `sigma` on `grid`, shape `(G,)`.
    """
    ax.plot(grid, true, "k--", label="true sigma(x)")
    ax.plot(grid, fitted, FIT_COLOR, label="fitted sigma(x)")
    ax.set_ylim(bottom=0.0)
    ax.set_xlabel("x")
    ax.set_ylabel("sigma")
    ax.legend(loc="best", fontsize="small")


def demo_plots(results: dict, folder: str) -> list[str]:
    """Writes the demo's PNG plots into `folder`; returns their paths.

    Args:
        results: `keras_mle.demo.run`'s results: experiment name -> `(experiment, runs)`, for the
            experiments `"line"`, `"gaussian"` and `"gaussian_regression"`, and optionally
            `"gaussian_network"` -> `(experiment, keras_mle.demo.NetworkRun)`.
        folder: An existing folder.

    Returns:
        The paths of `line_fit.png`, `line_loss.png`, `gaussian_fit.png`, `gaussian_loss.png`,
        `mse_vs_loglik.png` and, with `"gaussian_network"`, `gaussian_network.png` (the data,
        the fitted mean and its 95% interval; the true and fitted `sigma(x)`).
    """
    paths = []

    def save(figure, name):
        path = os.path.join(folder, name)
        figure.tight_layout()
        figure.savefig(path, dpi=90)
        paths.append(path)

    experiment, runs = results["line"]
    figure, ax = new_figure()
    line_fit(ax, experiment.x, experiment.y, runs[0].model.params, label=runs[0].mode)
    save(figure, "line_fit.png")
    figure, ax = new_figure()
    loss_curves(ax, runs, "MSE")
    save(figure, "line_loss.png")

    experiment, runs = results["gaussian"]
    figure, ax = new_figure()
    gaussian_fit(ax, experiment.x, runs[0].model.params)
    save(figure, "gaussian_fit.png")
    figure, ax = new_figure()
    loss_curves(ax, runs, "NLL per sample")
    save(figure, "gaussian_loss.png")

    experiment, runs = results["gaussian_regression"]
    figure, ax = new_figure()
    mse_and_loglik(ax, experiment.x, experiment.y)
    save(figure, "mse_vs_loglik.png")

    if "gaussian_network" in results:
        _, run = results["gaussian_network"]
        figure = Figure(figsize=(11, 4), dpi=100)
        FigureCanvasAgg(figure)
        left, right = figure.subplots(1, 2)
        interval_fit(left, run.x, run.y, run.grid, run.mean, run.sigma, level=run.level)
        left.set_title(f"{run.level:.0%} coverage of held-out data: {run.coverage:.1%}")
        sigma_curves(right, run.grid, run.sigma, run.true_sigma)
        right.set_title(f"largest relative error on [0.05, 0.95]: {run.max_sigma_error:.1%}")
        save(figure, "gaussian_network.png")
    return paths
