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

from keras_mle import parameters

__all__ = [
    "COV_TYPES",
    "StreamedMeat",
    "check_cov_type",
    "check_groups",
    "embed",
    "least_squares_terms",
    "leverage_weights",
    "per_sample_gradients",
    "robust_covariance",
    "sandwich",
    "streamed_sandwich",
]

COV_TYPES = ("nonrobust", "HC0", "HC1", "HC2", "HC3", "cluster")


def _loss_function(model, x):
    """`f(theta, y)`: the per-sample losses in user units at flat user-unit parameters `theta`."""
    names = model.parameter_names
    shapes = [tuple(np.shape(value)) for value in model.params.values()]
    x_t = tf.constant(np.asarray(x, np.float64))

    def losses(theta, y):
        user = parameters.tf_unflatten(theta, names, shapes)
        working = user
        if model.adaptation is not None:
            working = model.adaptation.to_working(user, model.parameter_roles)
        x_w, y_w = model.working_data(x_t, y, dtype=tf.float64)
        return model.user_losses(model.sample_loss(working, x_w, y_w))

    return losses, parameters.size(dict(zip(names, shapes, strict=True)))


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
        scale = leverage_weights(cov_type, weights.astype(np.float64), leverage)
        meat = (gradients * scale[:, None]).T @ gradients
        factor = nobs / (nobs - k) if cov_type == "HC1" else 1.0
    cov = factor * bread @ meat @ bread
    return 0.5 * (cov + cov.T), n_groups


def leverage_weights(cov_type: str, weights: np.ndarray, leverage, *, first_row: int = 0):
    """`w_i a_i`: the weights times HC2's `1 / (1 - h_i)` or HC3's `1 / (1 - h_i)^2`.

    For another `cov_type` the weights themselves (`a_i = 1`; `leverage` is not read).

    Args:
        cov_type: One of `COV_TYPES`.
        weights: `w_i`, `(n,)`.
        leverage: `h_i`, `(n,)` (for HC2 and HC3).
        first_row: The number of the first row, for the error (a dataset's batch starts after
            the rows before it). Defaults to `0`.
    """
    if cov_type not in ("HC2", "HC3"):
        return weights
    room = 1.0 - leverage
    if np.any(room[weights > 0] <= 1e-12):
        row = first_row + int(np.argmin(np.where(weights > 0, room, np.inf)))
        raise ValueError(
            f"cov_type={cov_type!r}: row {row} has leverage 1 (it alone determines a "
            "coefficient), so its residual is 0 and HC2/HC3 are undefined; use HC0 or HC1."
        )
    return weights / (room if cov_type == "HC2" else room**2)


def check_cov_type(model, convention: str, cov_type: str, groups) -> None:
    """A `ValueError` unless `cov_type` (and `groups`) apply to `model` under `convention`."""
    if cov_type not in COV_TYPES:
        raise ValueError(f"cov_type must be one of {COV_TYPES}, got {cov_type!r}.")
    if groups is not None and cov_type != "cluster":
        raise ValueError(f"groups is only used with cov_type='cluster', not {cov_type!r}.")
    if cov_type in ("HC2", "HC3") and convention != "ols":
        name = type(model).__name__
        hint = (
            " Pass convention='ols': its least_squares_model() defines them."
            if model.least_squares_model() is not None
            else ""
        )
        raise ValueError(
            f"cov_type={cov_type!r} needs leverages (the hat matrix of a least-squares fit), "
            f"which {name} under MLE conventions does not define; use 'HC0' or 'HC1'.{hint}"
        )


def embed(matrix: np.ndarray, free, p: int) -> np.ndarray:
    """A `(p, p)` matrix holding `matrix` over the components `free`, NaN elsewhere."""
    full = np.full((p, p), np.nan)
    full[np.ix_(free, free)] = matrix
    return full


def sandwich(cov_type, model, data, theta, free, bread, *, least_squares: bool, groups=None):
    """The sandwich covariance of `cov_type` of a model on in-memory data, in user units.

    Args:
        cov_type: `"HC0"`..`"HC3"` or `"cluster"`.
        model: The model whose loss `bread` is the inverse Hessian of.
        data: Its float64 `(x, y, weights)`, as `model.check_data` returns them.
        theta: The user's parameters, flattened.
        free: Indices of the estimated components, those `bread` covers.
        bread: `H^-1` over them, in user units.
        least_squares: Whether `model` is a least-squares model (`g_i = -2 e_i d_i`, and the
            leverages of HC2 and HC3).
        groups: Integer group codes from `check_groups`, for `"cluster"`. Defaults to `None`.

    Returns:
        `(cov, n_groups)`: `cov` of shape `(len(theta),) * 2`, NaN off `free`.
    """
    x, y, weights = data
    gradients, design = _observation_gradients(model, x, y, theta, free, least_squares)
    leverage = None if design is None else _leverage(design, bread)
    cov, n_groups = robust_covariance(
        cov_type, bread, gradients, weights, leverage=leverage, groups=groups
    )
    return embed(cov, free, len(theta)), n_groups


class StreamedMeat:
    """The sandwich's middle, `sum_i w_i a_i g_i g_i^T`, added up batch by batch.

    `g_i` and `a_i` are those of the module docstring (`a_i = 1` for HC0/HC1; the leverage terms
    of HC2/HC3, which need `bread = H^-1` and so the Hessian of all the data first). An instance
    is the `on_batch` hook of `model.accumulate_derivatives`, so that HC0 and HC1 need one pass.

    Args:
        model: The model whose loss it is.
        cov_type: `"HC0"`..`"HC3"`.
        least_squares: Whether `model` is a least-squares model.
        bread: `H^-1` over the free components, for HC2 and HC3. Defaults to `None`.

    Attributes:
        matrix: The sum so far, `(k, k)`, or `None` before the first batch.
        rows: Rows read so far.
    """

    def __init__(self, model, cov_type: str, *, least_squares: bool, bread=None):
        self.model = model
        self.cov_type = cov_type
        self.least_squares = least_squares
        self.bread = bread
        self.matrix = None
        self.rows = 0

    def __call__(self, x, y, w, derivatives):
        self.add(x, y, w, derivatives.params, derivatives.free)

    def add(self, x, y, w, theta, free) -> None:
        """Adds one batch's `sum_i w_i a_i g_i g_i^T` at `theta`, over the components `free`."""
        gradients, design = _observation_gradients(
            self.model, x, y, theta, free, self.least_squares
        )
        leverage = None if self.bread is None else _leverage(design, self.bread)
        scale = leverage_weights(self.cov_type, w, leverage, first_row=self.rows)
        contribution = (gradients * scale[:, None]).T @ gradients
        self.matrix = contribution if self.matrix is None else self.matrix + contribution
        self.rows += len(x)


def streamed_sandwich(
    cov_type, model, dataset, theta, free, bread, nobs, *, least_squares: bool, meat=None
):
    """`sandwich` for a dataset: the meat from the first pass (HC0, HC1) or a second (HC2, HC3).

    Args:
        cov_type: `"HC0"`..`"HC3"`.
        model: The model whose loss `bread` is the inverse Hessian of.
        dataset: The batched `tf.data.Dataset` the derivatives were summed over.
        theta, free, bread, least_squares: As for `sandwich`.
        nobs: The sum of the weights.
        meat: The `StreamedMeat` filled during the first pass, or `None` to read the dataset
            again. Defaults to `None`.

    Returns:
        `(cov, None)`, `cov` as `sandwich`'s.
    """
    k = len(free)
    if not nobs > k:
        raise ValueError(
            f"cov_type={cov_type!r} needs more observations than parameters: n={nobs:g}, k={k}."
        )
    if meat is None:
        # The leverages need H^-1 of all the data: a second pass.
        meat = StreamedMeat(model, cov_type, least_squares=least_squares, bread=bread)
        for x, y, w in model.dataset_batches(dataset):
            if np.any(w > 0):
                meat.add(x, y, w, theta, free)
            else:
                meat.rows += len(x)
    factor = nobs / (nobs - k) if cov_type == "HC1" else 1.0
    cov = factor * bread @ meat.matrix @ bread
    return embed(0.5 * (cov + cov.T), free, len(theta)), None


def _observation_gradients(model, x, y, theta, free, least_squares):
    """`(g, D)`: the per-observation gradients over `free`, and a least-squares design or None."""
    if not least_squares:
        return per_sample_gradients(model, x, y, theta, columns=free), None
    residuals, design = least_squares_terms(model, x, y, theta, columns=free)
    return -2.0 * residuals[:, None] * design, design


def _leverage(design, bread):
    """`h_i = d_i^T (X'WX)^-1 d_i`: `bread = H^-1` with `H = 2 X'WX` for the sum of squares."""
    return 2.0 * np.einsum("ij,jk,ik->i", design, bread, design)
