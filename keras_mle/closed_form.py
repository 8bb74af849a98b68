"""Closed-form estimates: the numbers every gradient fit is checked against.

All computed in float64 with NumPy, whatever the dtype of the data.
"""

from __future__ import annotations

import numpy as np

from keras_mle import data as data_lib

__all__ = ["ols", "gaussian_mle"]


def ols(x, y, sample_weight=None) -> dict:
    """Ordinary (or weighted) least squares for `y = x @ m + b`.

    Solved with a QR-based least-squares solve of the centred design, in float64.

    Args:
        x: Features, shape `(N,)` or `(N, k)`.
        y: Targets, shape `(N,)`.
        sample_weight: Optional weights `w_i >= 0`. Defaults to `None` (all 1).

    Returns:
        `{"m": (k,), "b": (), "sigma": (), "sigma_unbiased": (), "rss": ()}` where
        `sigma = sqrt(RSS / n)` is the Gaussian MLE of the noise level (`n = sum(w)`) and
        `sigma_unbiased = sqrt(RSS / (n - k - 1))` the OLS convention.
    """
    x, y = data_lib.check_xy(x, y, dtype=np.float64)
    if y is None:
        raise ValueError("y is required: ols fits targets y given x.")
    w = data_lib.check_sample_weight(sample_weight, len(x), dtype=np.float64)
    w = np.ones_like(y) if w is None else w
    x = x.reshape(len(x), -1)
    n = w.sum()
    x_mean = w @ x / n
    y_mean = w @ y / n
    root_w = np.sqrt(w)[:, None]
    m, *_ = np.linalg.lstsq(root_w * (x - x_mean), root_w[:, 0] * (y - y_mean), rcond=None)
    b = y_mean - x_mean @ m
    residuals = y - x @ m - b
    rss = float(w @ residuals**2)
    dof = n - x.shape[1] - 1
    return {
        "m": m,
        "b": np.float64(b),
        "sigma": np.float64(np.sqrt(rss / n)),
        "sigma_unbiased": np.float64(np.sqrt(rss / dof)) if dof > 0 else np.float64(np.nan),
        "rss": np.float64(rss),
    }


def gaussian_mle(samples, sample_weight=None) -> dict:
    """MLE of `mu` and `sigma` of a Gaussian sample: the mean and the divisor-`n` std.

    Returns:
        `{"mu": (), "sigma": ()}` in float64.
    """
    x = data_lib.check_array("samples", samples, dtype=np.float64, ndim=(1,))
    w = data_lib.check_sample_weight(sample_weight, len(x), dtype=np.float64)
    w = np.ones_like(x) if w is None else w
    data_lib.check_not_constant("samples", x[w > 0])
    mu = w @ x / w.sum()
    sigma = np.sqrt(w @ (x - mu) ** 2 / w.sum())
    return {"mu": np.float64(mu), "sigma": np.float64(sigma)}
