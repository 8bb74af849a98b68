"""The text table of `InferenceResult.summary`, in the spirit of statsmodels' (formatting only).

It reads the result's public numbers (`params`, `stderr`, `tvalues`, `pvalues`, `conf_int`, the
header's statistics, its notes and warnings) and computes nothing of its own.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np

from keras_mle import parameters

__all__ = ["summary_table"]


def summary_table(result, level: float = 0.95) -> str:
    """`InferenceResult.summary`: a text table in the spirit of statsmodels' `summary()`."""
    name_width = max([10, *(len(name) + 1 for name in result.param_names)])
    width = 68 + name_width
    stat = "t" if result.convention == "ols" else "z"
    df = result.df_resid if result.df_inference is None else result.df_inference
    dist = f"OLS (t, df={df:g})" if result.convention == "ols" else "MLE (normal z)"
    status = "yes" if result.converged else "NO"
    if math.isfinite(result.distance_to_optimum):
        status += f" ({result.distance_to_optimum:.1e} se)"
    left = [
        ("Convention:", dist),
        ("No. observations:", f"{result.nobs:g}"),
        ("Df residuals:", f"{result.df_resid:g}"),
        ("Residual SD:", "-" if result.sigma is None else f"{result.sigma:#.6g}"),
        ("Covariance:", result.cov_type),
    ]
    right = [
        ("Log-likelihood:", f"{result.loglik:#.6g}"),
        ("AIC:", f"{result.aic:#.6g}"),
        ("BIC:", f"{result.bic:#.6g}"),
        ("Converged:", status),
        ("Df model:", f"{result.df_model:g}"),
    ]
    lower, upper = (0.5 * (1 - level), 0.5 * (1 + level))
    lines = [
        "=" * width,
        f"keras_mle inference: {result.model_name}".center(width),
        "=" * width,
    ]
    for (lk, lv), (rk, rv) in zip(left, right, strict=True):
        lines.append(f"{lk:<18}{lv:>20}   {rk:<17}{rv:>20}")
    header = (
        f"{'':<{name_width}}{'coef':>13}{'std err':>13}{stat:>10}{f'P>|{stat}|':>8}"
        f"{f'[{lower:.3g}':>12}{f'{upper:.3g}]':>12}"
    )
    lines += ["=" * width, header, "-" * width]
    flat = parameters.flatten(result.params)
    columns = [
        parameters.flatten(tree)
        for tree in (result.stderr, result.tvalues, result.pvalues, *_conf_bounds(result, level))
    ]
    fixed = set(result.fixed)
    for i, name in enumerate(result.param_names):
        se, t, p, lo, hi = (column[i] for column in columns)
        if name in fixed:
            lines.append(f"{name:<{name_width}}{_fmt(flat[i]):>13}{'(fixed)':>13}")
            continue
        lines.append(
            f"{name:<{name_width}}{_fmt(flat[i]):>13}{_fmt(se):>13}{_fmt_stat(t):>10}"
            f"{_fmt_p(p):>8}{_fmt(lo, 5):>12}{_fmt(hi, 5):>12}"
        )
    lines.append("=" * width)
    notes = [_covariance_note(result, stat)]
    if fixed:
        notes.append(
            f"Held fixed, not estimated: {', '.join(result.fixed)}; they have no standard "
            "error and are not counted in Df residuals, AIC or BIC."
        )
    notes += result.warnings
    lines.append("Notes:")
    for i, note in enumerate(notes, 1):
        lines += textwrap.wrap(f"[{i}] {note}", width, subsequent_indent="    ")
    return "\n".join(lines)


def _covariance_note(result, stat):
    if result.cov_type == "nonrobust":
        return "Standard errors from the observed information (float64 Hessian of the total " + (
            "sum of squared errors; s^2 = RSS / (n - p))." if stat == "t" else "NLL)."
        )
    if result.cov_type == "cluster":
        kind = f"cluster-robust over {result.n_groups} groups (CRV1, G/(G-1) (n-1)/(n-k))"
    else:
        kind = f"heteroscedasticity-robust ({result.cov_type} sandwich)"
    note = f"Standard errors {kind}."
    if stat == "t" and any(np.isnan(np.asarray(v)).all() for v in result.stderr.values()):
        note += " The robust covariance covers the coefficients; sigma has none."
    return note


def _conf_bounds(result, level):
    intervals = result.conf_int(level)
    return (
        {name: value[..., 0] for name, value in intervals.items()},
        {name: value[..., 1] for name, value in intervals.items()},
    )


def _fmt(value, digits=6):
    return "nan" if not np.isfinite(value) else f"{value:#.{digits}g}"


def _fmt_stat(value):
    if not np.isfinite(value):
        return "nan"
    return f"{value:.3f}" if abs(value) < 1e5 else f"{value:.3e}"


def _fmt_p(value):
    return "nan" if not np.isfinite(value) else f"{value:.3f}"
