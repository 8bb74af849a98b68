"""Closed-form estimates: the numbers every gradient fit is checked against.

All computed in float64 with NumPy, whatever the dtype of the data. An answer is returned only
where it exists and float64 holds it: too few rows or collinear columns (not identifiable), and
an estimate beyond float64's range (overflow) or below its normal numbers (underflow), raise a
`ValueError` that says which.
"""

from __future__ import annotations

import numpy as np

from keras_mle import data as data_lib

__all__ = ["RANK_TOLERANCE", "ols", "gaussian_mle", "collinear_columns"]

#: A centred column whose QR diagonal is this small relative to its norm is constant, or a
#: linear combination of the columns before it: its slope is not identifiable. (A degree-10
#: polynomial design like NIST's Filip keeps 6.6e-8, far above it; a duplicated column ~1e-16.)
RANK_TOLERANCE = 1e-12


def ols(x, y, sample_weight=None) -> dict:
    """Ordinary (or weighted) least squares for `y = x @ m + b`.

    Solved with a least-squares solve of the centred design, in float64. The columns of `x`, `y`
    and the weights are first divided by powers of two near their largest magnitudes (exact),
    so that no intermediate sum overflows or underflows; the answer is scaled back.

    Args:
        x: Features, shape `(N,)` or `(N, k)`.
        y: Targets, shape `(N,)`.
        sample_weight: Optional weights `w_i >= 0`. Defaults to `None` (all 1).

    Returns:
        `{"m": (k,), "b": (), "sigma": (), "sigma_unbiased": (), "rss": ()}` where
        `sigma = sqrt(RSS / n)` is the Gaussian MLE of the noise level (`n = sum(w)`) and
        `sigma_unbiased = sqrt(RSS / (n - k - 1))` the OLS convention (NaN when `n <= k + 1`).

    Raises:
        ValueError: as `keras_mle.data.check_xy` and `check_sample_weight`; if fewer rows have a
            positive weight than there are parameters (`k + 1`), if columns of `x` are constant
            or collinear (`collinear_columns`), or if an estimate overflows or underflows.
    """
    x_given = x
    x, y = data_lib.check_xy(x, y, dtype=np.float64)
    if y is None:
        raise ValueError("y is required: ols fits targets y given x.")
    w = data_lib.check_sample_weight(
        sample_weight, len(x), dtype=np.float64, aligned_with=("x", x_given)
    )
    w = np.ones_like(y) if w is None else w
    x = x.reshape(len(x), -1)
    _check_enough_rows(int(np.count_nonzero(w > 0)), x.shape[1])
    x_exponent, y_exponent, w_exponent = _exponent(x), _exponent(y), _exponent(w)
    xs, ys, ws = np.ldexp(x, -x_exponent), np.ldexp(y, -y_exponent), np.ldexp(w, -w_exponent)
    n_scaled = ws.sum()
    x_mean = ws @ xs / n_scaled
    y_mean = ws @ ys / n_scaled
    root_w = np.sqrt(ws)[:, None]
    design = root_w * (xs - x_mean)
    bad = collinear_columns(design)
    if bad:
        raise ValueError(f"x: {bad}, so the slopes are not identifiable: drop or combine them.")
    m_scaled, *_ = np.linalg.lstsq(design, root_w[:, 0] * (ys - y_mean), rcond=None)
    b_scaled = y_mean - x_mean @ m_scaled
    rss_scaled = ws @ (ys - xs @ m_scaled - b_scaled) ** 2
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        n = np.ldexp(n_scaled, w_exponent)
        rss = np.ldexp(rss_scaled, w_exponent + 2 * y_exponent)
        dof = n - x.shape[1] - 1
        answer = {
            "m": np.ldexp(m_scaled, y_exponent - x_exponent),
            "b": np.ldexp(b_scaled, y_exponent),
            "sigma": np.ldexp(np.sqrt(rss_scaled / n_scaled), y_exponent),
            "sigma_unbiased": np.sqrt(rss / dof) if dof > 0 else np.float64(np.nan),
            "rss": rss,
        }
    scaled = {"m": m_scaled, "b": b_scaled, "sigma": rss_scaled, "rss": rss_scaled}
    _check_representable("ols", answer, scaled, "x or y")
    answer["m"] = np.asarray(answer["m"], np.float64)
    return {name: answer[name] if name == "m" else np.float64(answer[name]) for name in answer}


def gaussian_mle(samples, sample_weight=None) -> dict:
    """MLE of `mu` and `sigma` of a Gaussian sample: the mean and the divisor-`n` std.

    Computed on the sample divided by a power of two near its largest magnitude (exact), so a
    sample near 1e200 or 1e-200 gets its `sigma`, not `inf` or `0` from squaring.

    Returns:
        `{"mu": (), "sigma": ()}` in float64.

    Raises:
        ValueError: if the sample is constant (`check_not_constant`), or `sigma` underflows.
    """
    x_given = samples
    x = data_lib.check_array("samples", samples, dtype=np.float64, ndim=(1,))
    w = data_lib.check_sample_weight(
        sample_weight, len(x), dtype=np.float64, aligned_with=("samples", x_given)
    )
    w = np.ones_like(x) if w is None else w
    data_lib.check_not_constant("samples", x[w > 0])
    x_exponent, w_exponent = _exponent(x), _exponent(w)
    xs, ws = np.ldexp(x, -x_exponent), np.ldexp(w, -w_exponent)
    mu_scaled = ws @ xs / ws.sum()
    sigma_scaled = np.sqrt(ws @ (xs - mu_scaled) ** 2 / ws.sum())
    with np.errstate(under="ignore"):
        answer = {
            "mu": np.ldexp(mu_scaled, x_exponent),
            "sigma": np.ldexp(sigma_scaled, x_exponent),
        }
    _check_representable(
        "gaussian_mle", answer, {"mu": mu_scaled, "sigma": sigma_scaled}, "the samples"
    )
    return {name: np.float64(value) for name, value in answer.items()}


def collinear_columns(design: np.ndarray) -> str:
    """Which columns of a centred `(N, k)` design are constant or collinear, in words, or `""`.

    Column `j` is collinear when its QR diagonal is at most `RANK_TOLERANCE` of its norm: it is
    (to rounding) a combination of the columns before it, which are named.
    """
    norms = np.linalg.norm(design, axis=0)
    diagonal = np.abs(np.diag(np.linalg.qr(design, mode="r")))
    problems, kept = [], []
    for j in range(design.shape[1]):
        if norms[j] == 0:
            problems.append(f"column {j} is constant")
        elif diagonal[j] <= RANK_TOLERANCE * norms[j]:
            coefficients, *_ = np.linalg.lstsq(design[:, kept], design[:, j], rcond=None)
            share = np.abs(coefficients) * norms[kept]
            others = [kept[i] for i in np.flatnonzero(share > 1e-8 * norms[j])]
            problems.append(f"column {j} is a linear combination of column(s) {others}")
        else:
            kept.append(j)
    return "; ".join(problems)


def _check_enough_rows(rows: int, k: int) -> None:
    if rows < k + 1:
        raise ValueError(
            f"x: {rows} row(s) with a positive weight cannot identify the {k + 1} parameters "
            f"of y = x @ m + b ({k} slope(s) and the intercept): give at least {k + 1} rows."
        )


def _exponent(values: np.ndarray):
    """Per column (for 2-D values) the power of two `e` with `max |v| < 2**e`; 0 for zeros."""
    largest = np.max(np.abs(values), axis=0)
    _, exponent = np.frexp(largest)
    return np.where(largest > 0, exponent, 0)


def _check_representable(function: str, answer: dict, scaled: dict, data: str) -> None:
    """Raises unless every estimate is finite and, where its scaled value is not 0, normal."""
    tiny = np.finfo(np.float64).tiny
    for name, value in answer.items():
        value = np.asarray(value)
        if not np.all(np.isfinite(value)) and name in scaled:
            raise ValueError(
                f"{function}: {name} overflows float64 (it exceeds "
                f"{np.finfo(np.float64).max:.3g}): rescale {data} to units near 1 and convert "
                "the estimate back."
            )
        nonzero = np.asarray(scaled.get(name, 0.0)) != 0
        if np.any(nonzero & (np.abs(value) < tiny)):
            raise ValueError(
                f"{function}: {name} underflows float64 (it is below {tiny:.3g}, where float64 "
                f"loses precision): rescale {data} to units near 1 and convert the estimate back."
            )
