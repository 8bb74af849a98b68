"""The articles' plots, drawn with matplotlib (Agg backend, PNG files)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from keras_mle import closed_form  # noqa: E402


def line_fit(ax, x, y, params, label="fit"):
    """Data with the fitted line `y = m x + b`."""
    ax.plot(x, y, "b.", label="data")
    grid = np.linspace(min(x.min(), -0.15), max(x.max(), 1.15), 50)
    m = float(np.ravel(params["m"])[0])
    b = float(params["b"])
    ax.plot(grid, m * grid + b, "r", label=f"{label}: y = {m:.3f} x + {b:.3f}")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend()


def gaussian_fit(ax, samples, params, seed=0):
    """Histogram of the data against samples drawn from the fitted Gaussian, with its density."""
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
    """MSE and log-likelihood of `y = m x + b` against `m` (b at its OLS value)."""
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
    """Loss per optimizer step for every mode."""
    for run in runs:
        ax.plot(run.steps, run.history["loss"], label=run.mode)
    ax.set_yscale("log")
    ax.set_xlabel("epoch (full-batch optimizer step)")
    ax.set_ylabel(ylabel)
    ax.legend()


def demo_plots(results: dict, folder: str) -> list[str]:
    """Writes the demo's PNG plots; returns their paths."""
    paths = []

    def save(fig, name):
        path = os.path.join(folder, name)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)

    experiment, runs = results["line"]
    fig, ax = plt.subplots(figsize=(6, 4))
    line_fit(ax, experiment.x, experiment.y, runs[0].model.params, label=runs[0].mode)
    save(fig, "line_fit.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    loss_curves(ax, runs, "MSE")
    save(fig, "line_loss.png")

    experiment, runs = results["gaussian"]
    fig, ax = plt.subplots(figsize=(6, 4))
    gaussian_fit(ax, experiment.x, runs[0].model.params)
    save(fig, "gaussian_fit.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    loss_curves(ax, runs, "NLL per sample")
    save(fig, "gaussian_loss.png")

    experiment, runs = results["gaussian_regression"]
    fig, ax = plt.subplots(figsize=(6, 4))
    mse_and_loglik(ax, experiment.x, experiment.y)
    save(fig, "mse_vs_loglik.png")
    return paths
