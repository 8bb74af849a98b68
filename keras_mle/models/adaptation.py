"""`Adaptation`: the float64 affine map between the user's units and a well-conditioned space.

`model.adapt(x, y)` (see `MaximumLikelihoodModel.adapt`) fixes one of these from the data, as
`keras.layers.Normalization.adapt` fixes a mean and a variance. The model's variables then live
in the *working* space, where the optimizer sees a Hessian close to the identity; every number a
user reads (`model.params`, `predict`, the loss, `keras_mle.inference`) is mapped back.

Mathematical details (a regression, `takes_targets=True`):

```python
z = (x - x_shift) @ x_matrix      # centred and whitened features: z.T @ z / n = I
t = (y - y_shift) / y_scale       # centred and scaled targets
```

The linear-Gaussian model `y ~ N(x @ m + b, sigma^2)` is, in these coordinates, the same model
`t ~ N(z @ theta + c, sigma_t^2)` with

```python
m = y_scale * x_matrix @ theta
b = y_shift + y_scale * c - x_shift @ m
sigma = y_scale * sigma_t
```

`x_matrix` is `sqrt(n) * R^-1` from the QR factorization `x - x_shift = Q R` (computed in float64),
so the squared-error Hessian in `(theta, c)` is exactly `2 I`: plain SGD with learning rate 0.5
solves least squares in one step, however badly scaled or correlated the columns of `x` are.

For a model of a sample (`GaussianMLE`, `takes_targets=False`) the sample plays the part of `y`:
`t = (x - y_shift) / y_scale`, `mu = y_shift + y_scale * mu_t`, `sigma = y_scale * sigma_t`.

The per-sample losses change by known amounts, which is how the loss is reported in user units:

```python
squared_error_user = y_scale ** 2 * squared_error_t
nll_user = nll_t + log(y_scale)          # the Jacobian of y -> t
```

Each parameter of an adaptable model declares its role (`parameter_roles`): `"slope"` (`m`),
`"intercept"` (`b`, `mu`) or `"scale"` (`sigma`).

Fixed parameters (`fixed=` of the models) must stay fixed *working* coordinates, or training
would move them: whitening mixes the slopes (`m = y_scale * x_matrix @ theta`), and centring
makes the intercept depend on them (`b = ... - x_shift @ m`). So `from_data` whitens only the
free columns (`fixed_columns`: a fixed column is left as it is, `x_matrix` holding 1 on its
diagonal and 0 elsewhere in its row and column, so that `m_j = y_scale * theta_j`), and leaves
`x` uncentred when the intercept is fixed (`center=False`: `b = y_shift + y_scale * c`).
`fixed_to_working` maps fixed values and refuses an adaptation without that structure.

Data read in batches (`model.adapt(dataset)`) give the same adaptation through `DataMoments`,
which accumulates the counts, means and centred cross-products in one float64 pass, and
`Adaptation.from_moments`. The cross-products are kept as the R factor of a QR (`R^T R` is the
centred Gram matrix), never as the Gram matrix itself, so the whitening is as accurate as the
QR of the whole centred matrix that `from_data` takes, whatever the condition of `x`.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from keras_mle import data as data_lib

__all__ = ["Adaptation", "DataMoments", "ROLES"]

ROLES = ("slope", "intercept", "scale")

# A centred column whose QR diagonal is this small relative to its norm is constant, or a linear
# combination of the others: its slope is not identifiable and whitening would divide by ~0.
_RANK_TOLERANCE = 1e-12


class Adaptation:
    """A fixed affine change of coordinates, held in float64.

    Args:
        y_shift: Centre of the targets (of the sample, for a model of a sample).
        y_scale: Scale of the targets, > 0.
        x_shift: Centre of each feature, shape `(k,)`; `None` for a model of a sample.
        x_matrix: Whitening matrix, shape `(k, k)`; `None` for a model of a sample.
    """

    def __init__(self, y_shift, y_scale, x_shift=None, x_matrix=None):
        self.y_shift = float(y_shift)
        self.y_scale = float(y_scale)
        if not (math.isfinite(self.y_shift) and math.isfinite(self.y_scale) and self.y_scale > 0):
            raise ValueError(f"adaptation: bad y_shift/y_scale {y_shift!r}, {y_scale!r}.")
        if (x_shift is None) != (x_matrix is None):
            raise ValueError("adaptation: give both x_shift and x_matrix, or neither.")
        self.x_shift = None if x_shift is None else np.asarray(x_shift, np.float64).reshape(-1)
        self.x_matrix = None if x_matrix is None else np.asarray(x_matrix, np.float64)
        if self.x_matrix is not None:
            k = len(self.x_shift)
            if self.x_matrix.shape != (k, k):
                raise ValueError(f"adaptation: x_matrix must have shape ({k}, {k}).")

    @property
    def has_features(self) -> bool:
        """Whether the features `x` are transformed (a regression) or only the sample/targets."""
        return self.x_shift is not None

    # ---------------------------------------------------------------- from data
    @classmethod
    def from_data(
        cls,
        x,
        y=None,
        *,
        scale_targets: bool = True,
        fixed_columns=None,
        center: bool = True,
        weights=None,
    ) -> Adaptation:
        """Centring and whitening of `x` and centring and scaling of `y`, from float64 data.

        With frequency `weights`, the means, the whitening and the scale are the weighted ones
        (`from_moments` of the weighted `DataMoments`): the weighted least-squares Hessian is
        then `2 I` in the working space, as the unweighted one is without weights.

        Args:
            x: Features, shape `(N,)` or `(N, k)`; or, when `y` is `None`, a 1-D sample.
            y: Targets, shape `(N,)`, or `None` for a model of a sample.
            scale_targets: Centre and scale `y`. `False` leaves the targets as they are
                (`y_shift = 0`, `y_scale = 1`), for likelihoods that are not location-scale
                families in `y` (0/1 or count targets). Defaults to `True`.
            fixed_columns: Boolean mask over the features whose slopes are fixed: those columns
                are neither whitened nor mixed into the others. Defaults to `None` (none).
            center: Centre the features. `False` when the intercept is fixed. Defaults to
                `True`.
            weights: Frequency weights `(N,)` (checked, `>= 0`), or `None` for ones. Defaults
                to `None`.

        Raises:
            ValueError: if a free feature is constant or the free features are collinear (no
                whitening exists, and neither do unique least-squares slopes), or the sample is
                constant.
        """
        x = np.asarray(x, np.float64)
        if weights is not None:
            moments = (
                DataMoments().update(y=x.reshape(-1), weights=weights)
                if y is None
                else DataMoments().update(x, y, weights)
            )
            return cls.from_moments(
                moments, scale_targets=scale_targets, fixed_columns=fixed_columns, center=center
            )
        if y is None:
            sample = x.reshape(-1)
            data_lib.check_not_constant("samples", sample)
            return cls(y_shift=np.mean(sample), y_scale=float(np.std(sample)))
        y = np.asarray(y, np.float64).reshape(-1)
        n = len(x)
        x2 = x.reshape(n, -1)
        k = x2.shape[1]
        free = np.ones(k, bool)
        if fixed_columns is not None:
            free = ~np.asarray(fixed_columns, bool).reshape(-1)
            if free.shape != (k,):
                raise ValueError(f"fixed_columns must have {k} entries, got {len(free)}.")
        x_shift = x2.mean(axis=0) if center else np.zeros(k)
        x_matrix = np.eye(k)
        if free.any():
            r = np.linalg.qr(x2[:, free] - x_shift[free], mode="r")
            diagonal = np.diag(r)
            column_norms = np.linalg.norm(x2[:, free], axis=0)
            bad = np.flatnonzero(free)[np.abs(diagonal) <= _RANK_TOLERANCE * column_norms]
            if len(bad):
                raise ValueError(
                    f"x: column(s) {bad.tolist()} are constant or linear combinations of the "
                    "others, so the slopes are not identifiable and x cannot be whitened."
                )
            r = r * np.sign(diagonal)[:, None]  # a positive diagonal keeps z_j aligned with x_j
            x_matrix[np.ix_(free, free)] = np.triu(math.sqrt(n) * np.linalg.inv(r))
        y_scale = float(np.std(y)) if scale_targets else 1.0
        return cls(
            y_shift=np.mean(y) if scale_targets else 0.0,
            y_scale=y_scale if y_scale > 0 else 1.0,
            x_shift=x_shift,
            x_matrix=x_matrix,
        )

    @classmethod
    def from_moments(
        cls,
        moments: DataMoments,
        *,
        scale_targets: bool = True,
        fixed_columns=None,
        center: bool = True,
    ) -> Adaptation:
        """The adaptation `from_data` gives, from the `DataMoments` of the same rows.

        With unit weights this is `from_data` on the concatenated batches, to rounding (the QR
        of the stacked batch factors in place of the QR of the whole matrix: ~1e-14 relative for
        well-conditioned features). With weights, each row counts `w_i` times. The arguments
        and errors are those of `from_data`.

        Args:
            moments: The accumulated data (features and targets, or only targets for a model of
                a sample).
            scale_targets, fixed_columns, center: As for `from_data`.
        """
        if not moments.count > 0:
            raise ValueError("adapt: the data have no rows (with a positive weight).")
        n = moments.count
        if moments.x_mean is None:
            if moments.y_min == moments.y_max:
                data_lib.check_not_constant("samples", np.array([moments.y_min]))
            return cls(y_shift=moments.y_mean, y_scale=math.sqrt(moments.y_m2 / n))
        k = len(moments.x_mean)
        free = np.ones(k, bool)
        if fixed_columns is not None:
            free = ~np.asarray(fixed_columns, bool).reshape(-1)
            if free.shape != (k,):
                raise ValueError(f"fixed_columns must have {k} entries, got {len(free)}.")
        x_shift = moments.x_mean if center else np.zeros(k)
        # R^T R = sum_i w_i (x_i - x_shift)(x_i - x_shift)^T: the centred factor, or, without
        # centring, the factor of the centred rows stacked with sqrt(n) * mean.
        r = moments.x_factor
        if not center:
            r = _qr_r(np.vstack([r, math.sqrt(n) * moments.x_mean[None, :]]))
        x_matrix = np.eye(k)
        if free.any():
            # The factor of a subset of the columns: X[:, free] = Q R[:, free], and the QR of
            # that (k, k_free) block gives its own triangular factor.
            r = _qr_r(r[:, free]) if not free.all() else r
            r = _pad_rows(r, int(free.sum()))
            diagonal = np.diag(r)
            column_norms = np.sqrt(moments.x_sum_squares[free])
            bad = np.flatnonzero(free)[np.abs(diagonal) <= _RANK_TOLERANCE * column_norms]
            if len(bad):
                raise ValueError(
                    f"x: column(s) {bad.tolist()} are constant or linear combinations of the "
                    "others, so the slopes are not identifiable and x cannot be whitened."
                )
            r = r * np.sign(diagonal)[:, None]
            x_matrix[np.ix_(free, free)] = np.triu(math.sqrt(n) * np.linalg.inv(r))
        y_scale = math.sqrt(moments.y_m2 / n) if scale_targets else 1.0
        return cls(
            y_shift=moments.y_mean if scale_targets else 0.0,
            y_scale=y_scale if y_scale > 0 else 1.0,
            x_shift=x_shift,
            x_matrix=x_matrix,
        )

    def get_config(self) -> dict:
        """JSON-friendly values (Python floats round-trip float64 exactly)."""
        config = {"y_shift": self.y_shift, "y_scale": self.y_scale}
        if self.has_features:
            config["x_shift"] = self.x_shift.tolist()
            config["x_matrix"] = self.x_matrix.tolist()
        return config

    @classmethod
    def from_config(cls, config: dict) -> Adaptation:
        return cls(**config)

    # ---------------------------------------------------------------- data
    def transform(self, x, y=None, dtype=None):
        """`(z, t)` from `(x, y)` (for a model of a sample: `(t, None)` from the sample `x`).

        Computed in float64 and returned as `dtype` (default: the dtype of `x`); `y` may be
        `None`.
        """
        x = tf.convert_to_tensor(x)
        dtype = dtype or x.dtype
        if not self.has_features:
            return self._scale_targets(x, dtype), None
        x64 = tf.cast(x, tf.float64)
        if x.shape.rank == 1:
            z = (x64 - self.x_shift[0]) * self.x_matrix[0, 0]
        else:
            z = tf.linalg.matmul(x64 - self.x_shift, tf.constant(self.x_matrix))
        return tf.cast(z, dtype), None if y is None else self._scale_targets(y, dtype)

    def _scale_targets(self, y, dtype):
        t = (tf.cast(y, tf.float64) - self.y_shift) / self.y_scale
        return tf.cast(t, dtype)

    def loss_to_user(self, sample_losses, kind: str):
        """Per-sample working-space losses in user units (`kind`: "squared_error" or "nll")."""
        if kind == "squared_error":
            return sample_losses * tf.constant(self.y_scale**2, sample_losses.dtype)
        if kind == "nll":
            return sample_losses + tf.constant(math.log(self.y_scale), sample_losses.dtype)
        raise ValueError(f"kind must be 'squared_error' or 'nll', got {kind!r}.")

    def loss_factor(self, kind: str) -> float:
        """`d loss_user / d loss_working`: `y_scale ** 2` for squared error, 1 for an NLL."""
        if kind == "squared_error":
            return self.y_scale**2
        if kind == "nll":
            return 1.0
        raise ValueError(f"kind must be 'squared_error' or 'nll', got {kind!r}.")

    # ---------------------------------------------------------------- parameters
    def check_roles(self, roles: dict, names) -> None:
        """Raises unless every parameter has a role this adaptation can map."""
        missing = [name for name in names if name not in roles]
        if missing:
            raise NotImplementedError(
                f"adapt() needs a role for every parameter; none given for {missing} "
                f"(set parameter_roles, with roles from {ROLES})."
            )
        for name, role in roles.items():
            if role not in ROLES:
                raise ValueError(f"parameter_roles[{name!r}] must be one of {ROLES}, got {role!r}.")
            if role == "slope" and not self.has_features:
                raise ValueError(f"{name}: a slope needs features x to adapt to.")
        if sum(role == "slope" for role in roles.values()) > 1:
            raise NotImplementedError("adapt() supports one slope parameter (a vector).")

    def fixed_to_working(self, role: str, values, mask) -> np.ndarray:
        """Working values of fixed natural user values of a parameter with this `role`.

        Args:
            role: `"slope"`, `"intercept"` or `"scale"`.
            values: The parameter's user values (float64; only the fixed components are used).
            mask: Boolean mask of its fixed components.

        Returns:
            The working values, float64, shaped like `values` (meaningful where `mask` is set).

        Raises:
            ValueError: if this adaptation mixes the fixed components with free ones (an
                adaptation computed without them fixed): call `adapt` again.
        """
        values = np.asarray(values, np.float64)
        mask = np.asarray(mask, bool)
        redo = "call model.adapt() again, which holds fixed components out of the whitening."
        if role == "scale":
            return values / self.y_scale
        if role == "intercept":
            if self.has_features and np.any(self.x_shift != 0):
                raise ValueError(
                    "fixed: this adaptation centres x, which makes the intercept depend on the "
                    f"slopes, so a fixed intercept would move in training; {redo}"
                )
            return (values - self.y_shift) / self.y_scale
        if role == "slope":
            if not self.has_features:
                raise ValueError("fixed: a slope needs features x to adapt to.")
            flat = mask.reshape(-1)
            off = self.x_matrix - np.diag(np.diag(self.x_matrix))
            if np.any(off[flat, :] != 0) or np.any(off[:, flat] != 0):
                raise ValueError(
                    "fixed: this adaptation whitens fixed slope columns together with free "
                    f"ones, so the fixed slopes would move in training; {redo}"
                )
            scale = self.y_scale * np.diag(self.x_matrix).reshape(values.shape)
            return values / scale
        raise ValueError(f"role must be one of {ROLES}, got {role!r}.")

    def to_user(self, params: dict, roles: dict) -> dict:
        """Natural working-space values -> natural user-unit values (float64 tensors)."""
        params = {name: _float64(value) for name, value in params.items()}
        result = dict(params)
        slope = None
        for name, role in roles.items():
            if role == "slope":
                slope = self.y_scale * tf.linalg.matvec(tf.constant(self.x_matrix), params[name])
                result[name] = slope
        for name, role in roles.items():
            if role == "intercept":
                intercept = self.y_shift + self.y_scale * params[name]
                if slope is not None:
                    intercept -= tf.reduce_sum(tf.constant(self.x_shift) * slope)
                result[name] = intercept
            elif role == "scale":
                result[name] = self.y_scale * params[name]
        return result

    def to_working(self, params: dict, roles: dict) -> dict:
        """The inverse of `to_user` (float64 tensors)."""
        params = {name: _float64(value) for name, value in params.items()}
        result = dict(params)
        slope = None
        for name, role in roles.items():
            if role == "slope":
                slope = params[name]
                theta = tf.linalg.triangular_solve(
                    tf.constant(self.x_matrix), slope[:, None], lower=False
                )
                result[name] = theta[:, 0] / self.y_scale
        for name, role in roles.items():
            if role == "intercept":
                intercept = params[name] - self.y_shift
                if slope is not None:
                    intercept += tf.reduce_sum(tf.constant(self.x_shift) * slope)
                result[name] = intercept / self.y_scale
            elif role == "scale":
                result[name] = params[name] / self.y_scale
        return result


class DataMoments:
    """Weighted counts, means and centred cross-products of data read in batches, in float64.

    `update` folds in one batch; `Adaptation.from_moments` turns the result into an adaptation.
    The data are first shifted by the first batch's mean (so that a large offset costs no
    digits in the later means), then each batch is centred on its own mean and combined with
    what came before by the pairwise update of Chan, Golub and LeVeque,
    `M = M_a + M_b + (n_a n_b / n) d d^T` (`d` the difference of the means). For the features
    `M` is held as its triangular factor `R` (`R^T R = M`), combined by a QR of
    `[R_a; R_b; sqrt(n_a n_b / n) d^T]`: the factor of the stacked centred rows.

    Attributes:
        count: Sum of the weights (the number of rows, unweighted).
        rows: Number of rows read.
        x_mean: Weighted mean of each feature, `(k,)`, or `None` (no features).
        x_factor: Upper-triangular `R` with `R^T R = sum_i w_i (x_i - x_mean)(x_i - x_mean)^T`.
        x_sum_squares: `sum_i w_i x_i^2` per feature (uncentred).
        y_mean, y_m2: Weighted mean of the targets and `sum_i w_i (y_i - y_mean)^2`.
        y_min, y_max: Smallest and largest target (of rows with a positive weight).
    """

    def __init__(self):
        self.count = 0.0
        self.rows = 0
        self.x_factor = self.x_sum_squares = None
        self.y_m2 = 0.0
        self.y_min, self.y_max = math.inf, -math.inf
        # Means are kept as a reference shift (the first batch's mean) plus the mean of the
        # shifted data, which is of the size of the spread, not of the offset.
        self._x_ref = self._x_shifted = None
        self._y_ref = self._y_shifted = 0.0

    @property
    def x_mean(self):
        return None if self._x_ref is None else self._x_ref + self._x_shifted

    @property
    def y_mean(self) -> float:
        return self._y_ref + self._y_shifted

    def update(self, x=None, y=None, weights=None) -> DataMoments:
        """Folds in a batch: features `x` (`(B,)` or `(B, k)`, or `None`), targets `y` (`(B,)`,
        or `None`), weights `(B,)` (`None`: ones). Returns `self`."""
        parts = [np.asarray(a, np.float64) for a in (x, y) if a is not None]
        if not parts:
            raise ValueError("update needs x or y.")
        rows = len(parts[0])
        w = np.ones(rows) if weights is None else np.asarray(weights, np.float64).reshape(-1)
        self.rows += rows
        n_b = float(np.sum(w))
        if not n_b > 0:
            return self
        n_a, n = self.count, self.count + n_b
        if x is not None:
            x = np.asarray(x, np.float64).reshape(rows, -1)
            if self._x_ref is None:
                self._x_ref = (w @ x) / n_b
                self._x_shifted = np.zeros_like(self._x_ref)
                self.x_sum_squares = np.zeros_like(self._x_ref)
            shifted = x - self._x_ref
            mean_b = (w @ shifted) / n_b
            factor_b = _qr_r(np.sqrt(w)[:, None] * (shifted - mean_b))
            if self.x_factor is None:
                self.x_factor = factor_b
            else:
                joint = math.sqrt(n_a * n_b / n) * (mean_b - self._x_shifted)[None, :]
                self.x_factor = _qr_r(np.vstack([self.x_factor, factor_b, joint]))
            self._x_shifted = self._x_shifted + (mean_b - self._x_shifted) * (n_b / n)
            self.x_sum_squares = self.x_sum_squares + w @ x**2
        if y is not None:
            y = np.asarray(y, np.float64).reshape(-1)
            if not n_a:
                self._y_ref = float(w @ y) / n_b
            shifted = y - self._y_ref
            mean_b = float(w @ shifted) / n_b
            m2_b = float(w @ (shifted - mean_b) ** 2)
            d = mean_b - self._y_shifted
            self.y_m2 = self.y_m2 + m2_b + d * d * (n_a * n_b / n)
            self._y_shifted = self._y_shifted + d * (n_b / n)
            used = y[w > 0]
            self.y_min = min(self.y_min, float(np.min(used)))
            self.y_max = max(self.y_max, float(np.max(used)))
        self.count = n
        return self


def _qr_r(matrix):
    """The R factor of `matrix` (`(min(m, k), k)`), float64."""
    return np.linalg.qr(np.asarray(matrix, np.float64), mode="r")


def _pad_rows(r, k):
    """`r` with zero rows appended to `(k, k)` (fewer rows than columns: rank deficient)."""
    return r if len(r) >= k else np.vstack([r, np.zeros((k - len(r), r.shape[1]))])


def _float64(value):
    # tf.cast would convert a Python float to float32 first (0.1 -> 0.10000000149).
    return tf.cast(tf.convert_to_tensor(value, dtype_hint=tf.float64), tf.float64)
