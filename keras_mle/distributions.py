"""The reference distributions of `keras_mle.inference`: thin wrappers over `scipy.stats`.

Each function takes a number or an array (broadcast like NumPy) and returns a NumPy `float64`
for a scalar input, an array otherwise. Arguments outside a distribution's domain raise a
`ValueError` instead of returning NaN: a NaN statistic (`t`, `z`, `x`) is passed through as NaN,
since inference reports NaN when it has no standard error.

```python
normal_sf(z)      # P(Z > z), Z ~ N(0, 1)
normal_ppf(q)     # the q quantile of N(0, 1)
t_sf(t, df)       # P(T > t), T ~ Student's t with df degrees of freedom
t_ppf(q, df)      # the q quantile of Student's t
chi2_sf(x, df)    # P(X > x), X ~ chi-square with df degrees of freedom
chi2_ppf(q, df)   # the q quantile of the chi-square
f_sf(x, dfn, dfd) # P(F > x), F ~ Fisher's F with dfn and dfd degrees of freedom
```
"""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["normal_sf", "normal_ppf", "t_sf", "t_ppf", "chi2_sf", "chi2_ppf", "f_sf"]


def normal_sf(z):
    """`P(Z > z)` for a standard normal `Z`."""
    return _result(stats.norm.sf(_values("z", z)))


def normal_ppf(q):
    """The `q` quantile of the standard normal, `0 < q < 1`."""
    return _result(stats.norm.ppf(_probabilities(q)))


def t_sf(t, df):
    """`P(T > t)` for Student's t with `df > 0` degrees of freedom (`np.inf`: the normal)."""
    return _result(stats.t.sf(_values("t", t), _degrees_of_freedom(df)))


def t_ppf(q, df):
    """The `q` quantile of Student's t with `df > 0` degrees of freedom, `0 < q < 1`."""
    return _result(stats.t.ppf(_probabilities(q), _degrees_of_freedom(df)))


def chi2_sf(x, df):
    """`P(X > x)` for a chi-square variable with `df > 0` degrees of freedom."""
    return _result(stats.chi2.sf(_values("x", x), _degrees_of_freedom(df)))


def chi2_ppf(q, df):
    """The `q` quantile of the chi-square with `df > 0` degrees of freedom, `0 < q < 1`."""
    return _result(stats.chi2.ppf(_probabilities(q), _degrees_of_freedom(df)))


def f_sf(x, dfn, dfd):
    """`P(F > x)` for Fisher's F with `dfn > 0` and `dfd > 0` degrees of freedom."""
    return _result(
        stats.f.sf(
            _values("x", x), _degrees_of_freedom(dfn, "dfn"), _degrees_of_freedom(dfd, "dfd")
        )
    )


def _values(name, value):
    try:
        array = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number or an array of numbers, got {value!r}.") from None
    return array


def _probabilities(q):
    array = _values("q", q)
    if not np.all((array > 0.0) & (array < 1.0)):
        raise ValueError(f"q must be a probability in (0, 1), got {q!r}.")
    return array


def _degrees_of_freedom(df, name="df"):
    array = _values(name, df)
    if not np.all(array > 0.0):  # also refuses NaN
        raise ValueError(f"{name} must be > 0, got {df!r}.")
    return array


def _result(value):
    value = np.asarray(value, np.float64)
    return np.float64(value) if value.ndim == 0 else value
