"""Per-observation derivatives and the sandwich covariances of `keras_mle.inference`.

Everything here is float64 and in the user's units. A model's per-sample loss `l_i(theta)` (its
`sample_loss`, mapped through `adapt` as `likelihood_derivatives` maps it) is differentiated
with respect to the user's flattened parameters `theta` directly, so no Jacobian of `adapt` is
needed afterwards. With frequency weights `w_i`, the total loss is `L = sum_i w_i l_i`, its
Hessian `H`, and the covariances are

```python
bread = H^-1                                      # user units
meat  = sum_i w_i a_i g_i g_i^T                   # g_i = d l_i / d theta; a_i = 1 (HC0, HC1)
cov   = c * bread @ meat @ bread                  # c = 1, or n / (n - k) for HC1
a_i   = 1 / (1 - h_i)  (HC2),  1 / (1 - h_i)^2  (HC3),  h_i = d_i^T (X'WX)^-1 d_i
meat  = sum_g u_g u_g^T,  u_g = sum_{i in g} w_i g_i                          # cluster
c     = G / (G - 1) * (n - 1) / (n - k)                                       # cluster
```

`n` is the sum of the weights, `k` the number of parameters in the covariance, `G` the number of
groups (with a positive weight). A weight counts as that many identical rows: these are the
numbers statsmodels gives for the data with each row repeated `w_i` times. `H` and `g_i` may be
those of an NLL or of a sum of squared errors: the sandwich is unchanged by a constant factor on
the loss, so for least squares it is White's `(X'X)^-1 X' diag(e^2) X (X'X)^-1`.

The leverage `h_i` needs the design `d_i = d mu_i / d theta` of a least-squares model
(`sample_loss_kind == "squared_error"`, `l_i = (y_i - mu_i)^2`). It is read off the loss itself:
`e_i = y_i - mu_i = (1/2) d l_i / d y_i` and `d_i = -(1/2) d^2 l_i / d y_i d theta`, exactly
(automatic differentiation, no finite differences).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

__all__ = [
    "COV_TYPES",
    "per_sample_gradients",
    "least_squares_terms",
    "robust_covariance",
    "check_groups",
]

COV_TYPES = ("nonrobust", "HC0", "HC1", "HC2", "HC3", "cluster")


def _loss_function(model, x):
    """`f(theta, y)`: the per-sample losses in user units at flat user-unit parameters `theta`."""
    names = model.parameter_names
    shapes = [tuple(np.shape(value)) for value in model.params.values()]
    sizes = [int(np.prod(shape)) for shape in shapes]
    x_t = tf.constant(np.asarray(x, np.float64))

    def losses(theta, y):
        pieces = tf.split(theta, sizes)
        user = {n: tf.reshape(v, s) for n, v, s in zip(names, pieces, shapes, strict=True)}
        working = user
        if model.adaptation is not None:
            working = model.adaptation.to_working(user, model.parameter_roles)
        x_w, y_w = model.working_data(x_t, y, dtype=tf.float64)
        return model.user_losses(model.sample_loss(working, x_w, y_w))

    return losses, sum(sizes)


def per_sample_gradients(model, x, y, theta, columns=None) -> np.ndarray:
    """`g_i = d l_i / d theta` at the flat user-unit parameters `theta`, shape `(n, p)`.

    Forward-mode differentiation, one pass per parameter component.

    Args:
        model: A built `keras_mle.MaximumLikelihoodModel`.
        x, y: Float64 data as `model.check_data(..., dtype=np.float64)` returns them.
        theta: The user's parameters, flattened in `model.parameter_names` order.
        columns: Indices of the components to differentiate with respect to (the free ones),
            in the order of the result's columns. Defaults to `None` (all).
    """
    f, p = _loss_function(model, x)
    theta = tf.constant(np.asarray(theta, np.float64))
    y_t = None if y is None else tf.constant(np.reshape(y, -1).astype(np.float64))
    results = []
    for k in range(p) if columns is None else columns:
        with tf.autodiff.ForwardAccumulator(theta, tf.one_hot(k, p, dtype=tf.float64)) as acc:
            losses = f(theta, y_t)
        results.append(acc.jvp(losses))
    if not results:
        return np.zeros((len(x), 0))
    return tf.stack(results, axis=1).numpy()


def least_squares_terms(model, x, y, theta, columns=None) -> tuple[np.ndarray, np.ndarray]:
    """`(e, D)` of a least-squares model: residuals `y - mu` and design `d mu / d theta`.

    Args:
        model: A model with `sample_loss_kind == "squared_error"`.
        x, y: Float64 data (`y` of shape `(n,)`).
        theta: The user's parameters, flattened in `model.parameter_names` order.
        columns: Indices of the components `D` covers (the free ones), in that order.
            Defaults to `None` (all).

    Returns:
        `e` of shape `(n,)` and `D` of shape `(n, p)` (or `(n, len(columns))`), in user units;
        the mean is `y - e`.
    """
    if model.sample_loss_kind != "squared_error":
        raise ValueError(f"{type(model).__name__} is not a least-squares model.")
    f, p = _loss_function(model, x)
    theta = tf.constant(np.asarray(theta, np.float64))
    y_t = tf.constant(np.reshape(y, -1).astype(np.float64))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(y_t)
        total = tf.reduce_sum(f(theta, y_t))
        sums = []
        for k in range(p) if columns is None else columns:
            with tf.autodiff.ForwardAccumulator(theta, tf.one_hot(k, p, dtype=tf.float64)) as acc:
                losses = f(theta, y_t)
            sums.append(tf.reduce_sum(acc.jvp(losses)))
    residuals = 0.5 * tape.gradient(total, y_t).numpy()
    design = np.zeros((len(residuals), 0))
    if sums:
        design = np.stack([-0.5 * tape.gradient(s, y_t).numpy() for s in sums], axis=1)
    return residuals, design


def check_groups(groups, n: int) -> np.ndarray:
    """`groups` as integer codes `0..G-1`, one per row; a `ValueError` naming `groups` if bad."""
    if groups is None:
        raise ValueError("groups is required with cov_type='cluster': one group label per row.")
    array = np.asarray(groups)
    if array.ndim != 1 or len(array) != n:
        raise ValueError(
            f"groups must have one label per row, shape ({n},), got shape {array.shape}."
        )
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ValueError("groups contains NaN or Inf labels.")
    if array.dtype.kind not in "biufUSO":
        raise ValueError(f"groups must hold integer or string labels, got dtype {array.dtype}.")
    _, codes = np.unique(array, return_inverse=True)
    return codes.reshape(-1)


def robust_covariance(
    cov_type: str,
    bread: np.ndarray,
    gradients: np.ndarray,
    weights: np.ndarray,
    *,
    leverage: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, int | None]:
    """The sandwich covariance of the module docstring.

    Args:
        cov_type: `"HC0"`, `"HC1"`, `"HC2"`, `"HC3"` or `"cluster"`.
        bread: `H^-1`, the inverse Hessian of the total loss in user units, `(p, p)`.
        gradients: `g_i`, `(n, p)`.
        weights: Frequency weights `w_i`, `(n,)`.
        leverage: `h_i`, `(n,)`; required for HC2 and HC3.
        groups: Integer group codes from `check_groups`; required for `"cluster"`.

    Returns:
        `(cov, n_groups)`; `n_groups` is `None` unless `cov_type == "cluster"`.
    """
    nobs = float(np.sum(weights))
    k = bread.shape[0]
    if not nobs > k:
        raise ValueError(
            f"cov_type={cov_type!r} needs more observations than parameters: n={nobs:g}, k={k}."
        )
    n_groups = None
    if cov_type == "cluster":
        used = weights > 0
        codes = np.unique(groups[used], return_inverse=True)[1].reshape(-1)
        n_groups = int(codes.max()) + 1
        if n_groups < 2:
            raise ValueError("groups: cov_type='cluster' needs at least 2 groups.")
        sums = np.zeros((n_groups, k))
        np.add.at(sums, codes, weights[used, None] * gradients[used])
        meat = sums.T @ sums
        factor = n_groups / (n_groups - 1.0) * (nobs - 1.0) / (nobs - k)
    else:
        scale = weights.astype(np.float64)
        if cov_type in ("HC2", "HC3"):
            room = 1.0 - leverage
            if np.any(room[weights > 0] <= 1e-12):
                row = int(np.argmin(np.where(weights > 0, room, np.inf)))
                raise ValueError(
                    f"cov_type={cov_type!r}: row {row} has leverage 1 (it alone determines a "
                    "coefficient), so its residual is 0 and HC2/HC3 are undefined; use HC0 or HC1."
                )
            scale = scale / (room if cov_type == "HC2" else room**2)
        meat = (gradients * scale[:, None]).T @ gradients
        factor = nobs / (nobs - k) if cov_type == "HC1" else 1.0
    cov = factor * bread @ meat @ bread
    return 0.5 * (cov + cov.T), n_groups
