"""The articles' data sets: a noisy line (the first article) and a Gaussian sample (the second)."""

from __future__ import annotations

import numpy as np

from keras_mle.data.validation import check_finite_scalar, check_positive_int, check_positive_scalar

__all__ = ["noisy_line", "gaussian_sample"]


def noisy_line(
    m: float = 1.0,
    b: float = 2.0,
    *,
    n: int = 100,
    noise: float = 0.15,
    seed: int | None = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Points along `y = m * x + b` with Gaussian noise in `y`.

    `x` is uniform on [0, 1) and the noise has standard deviation `noise`, as in the first article.

    Args:
        m: Slope. Defaults to `1.0`.
        b: Intercept. Defaults to `2.0`.
        n: Number of points. Defaults to `100`.
        noise: Standard deviation of the noise added to `y`. Defaults to `0.15`.
        seed: Seed of the NumPy generator. Defaults to `0`.

    Returns:
        `(x, y)`, two float32 arrays of shape `(n,)`.
    """
    check_positive_int("n", n)
    check_finite_scalar("m", m)
    check_finite_scalar("b", b)
    check_positive_scalar("noise", noise, allow_zero=True)
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=n)
    y = m * x + b + rng.normal(scale=noise, size=n)
    return x.astype(np.float32), y.astype(np.float32)


def gaussian_sample(
    mu: float = 2.0,
    sigma: float = 1.0,
    *,
    n: int = 1000,
    seed: int | None = 0,
) -> np.ndarray:
    """A sample of `n` draws from `N(mu, sigma^2)`, as in the second article.

    Args:
        mu: Mean. Defaults to `2.0`.
        sigma: Standard deviation, > 0. Defaults to `1.0`.
        n: Sample size. Defaults to `1000`.
        seed: Seed of the NumPy generator. Defaults to `0`.

    Returns:
        A float32 array of shape `(n,)`.
    """
    check_positive_int("n", n)
    check_finite_scalar("mu", mu)
    check_positive_scalar("sigma", sigma)
    rng = np.random.default_rng(seed)
    return rng.normal(loc=mu, scale=sigma, size=n).astype(np.float32)
