"""Heteroscedastic regression `y ~ N(mu(x), sigma(x)^2)` with neural networks for both."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keras_mle import data as data_lib
from keras_mle import distributions, losses
from keras_mle import metrics as metrics_lib
from keras_mle.models import arguments
from keras_mle.models.base import MaximumLikelihoodModel

__all__ = ["GaussianNetwork"]

_NO_NAMED_PARAMETERS = (
    "{name} has no named parameters (its weights are those of its networks): {what} needs the "
    "named parameters of add_parameter. For the uncertainty of its predictions use "
    "predict_distribution, prediction_interval and sample."
)


@keras.saving.register_keras_serializable(package="keras_mle")
class GaussianNetwork(MaximumLikelihoodModel):
    """`y ~ N(mu(x), sigma(x)^2)`: a network's mean and noise level, learned jointly by NLL.

    Mathematical details, with `f` the backbone (or `f_mu`, `f_sigma` the two networks):

    ```python
    mu = f(x) @ w_mu + b_mu                                  # a linear mean head
    sigma = softplus(f(x) @ w_s + b_s) + scale_floor         # a positive scale head
    loss = 0.5 * log(2 * pi) + log(sigma) + 0.5 * ((y - mu) / sigma) ** 2
    ```

    `sigma >= scale_floor > 0` whatever the weights, so the NLL is finite for finite inputs.
    Training is the base class's step (sample weights, the divergence guard, mixed precision,
    `tf.distribute`, `keras_mle.loops`); `call(x)` (hence `predict` and the compiled metrics)
    is the mean, and `keras_mle.metrics.GaussianMetric`s among the compiled metrics see the
    mean and `sigma`. The backbone must map a batch to `(batch, features)` (end an image
    network with `Flatten` or a global pooling). The inputs are whatever the networks take: a
    feature matrix, images or sequences (arrays of any rank), or a dict of arrays for a
    functional network with named inputs, in memory or from a `tf.data.Dataset`. The
    statistics hooks that need named parameters (`keras_mle.inference`, `score`,
    `observed_information`, `refine`) and `adapt` raise `NotImplementedError`;
    `per_sample_loss` works.

    Example:

    ```python
    backbone = keras.Sequential([keras.layers.Dense(64, activation="relu")])
    model = GaussianNetwork(backbone)
    model.compile(optimizer="adam", metrics=["mae", keras_mle.metrics.IntervalCoverage()])
    model.fit(x, y, epochs=200, validation_split=0.2)
    low, high = model.prediction_interval(x_test, level=0.95)
    ```

    Args:
        backbone: A Keras layer or model shared by both heads. Give it, or `mean` and `scale`.
        mean: The network of the mean's head (with `scale`, instead of `backbone`).
        scale: The network of the scale's head (with `mean`).
        scale_floor: Smallest `sigma`, > 0, in the units of `y`. Defaults to
            `keras_mle.losses.SCALE_FLOOR` (1e-6); raise it for targets whose noise could
            collapse on a few repeated values.
        **kwargs: `feature_names` and the arguments of `keras.Model` (`name`, `dtype`).

    Raises:
        TypeError: if a network is not a Keras layer.
        ValueError: for a bad combination of networks, a bad `scale_floor`, or `fixed`.
    """

    input_ndim = None

    def __init__(
        self, backbone=None, *, mean=None, scale=None, scale_floor=losses.SCALE_FLOOR, **kwargs
    ):
        if backbone is not None and (mean is not None or scale is not None):
            raise ValueError(
                "backbone: give either one backbone shared by both heads, or mean= and "
                "scale= networks, not both."
            )
        if backbone is None and (mean is None or scale is None):
            raise ValueError(
                "backbone is required: GaussianNetwork(backbone), or GaussianNetwork(mean=..., "
                "scale=...) with both networks."
            )
        for argument, network in (("backbone", backbone), ("mean", mean), ("scale", scale)):
            if network is not None and not isinstance(network, keras.layers.Layer):
                raise TypeError(
                    f"{argument} must be a Keras layer or model, got {type(network).__name__}."
                )
        if mean is not None and mean is scale:
            raise ValueError("mean and scale are the same network: pass it as backbone.")
        _, scale_floor = losses.check_scale("softplus", scale_floor)
        if kwargs.get("fixed"):
            raise ValueError("fixed: GaussianNetwork has no named parameters to fix.")
        if kwargs.get("adaptation"):
            raise ValueError("adaptation: GaussianNetwork does not support adapt().")
        kwargs.pop("fixed", None)
        kwargs.pop("adaptation", None)
        super().__init__(**kwargs)
        self.backbone = backbone
        self.mean_network = mean
        self.scale_network = scale
        self.scale_floor = scale_floor
        self.mean_head = keras.layers.Dense(1, name="mean_head", dtype=self.dtype_policy)
        self.scale_head = keras.layers.Dense(1, name="scale_head", dtype=self.dtype_policy)
        self._gaussian_metrics = _MetricGroup()
        self._distribution_function = None

    # ---------------------------------------------------------------- the network
    def build(self, input_shape):
        if isinstance(input_shape, dict):  # named inputs
            inputs = {
                key: keras.KerasTensor(tuple(shape), dtype=self.compute_dtype, name=key)
                for key, shape in input_shape.items()
            }
        else:
            input_shape = tuple(input_shape)
            if len(input_shape) == 1:  # one feature as a vector: a column, as `_inputs` feeds it
                input_shape = (*input_shape, 1)
            inputs = keras.KerasTensor(input_shape, dtype=self.compute_dtype)
        if self.backbone is not None:
            features = self._features(self.backbone, "backbone", inputs)
            self.mean_head(features)
            self.scale_head(features)
        else:
            self.mean_head(self._features(self.mean_network, "mean", inputs))
            self.scale_head(self._features(self.scale_network, "scale", inputs))
        self.built = True

    @staticmethod
    def _features(network, argument, inputs):
        features = network(inputs)
        if not isinstance(features, keras.KerasTensor) or len(features.shape) != 2:
            shape = getattr(features, "shape", type(features).__name__)
            given = tf.nest.map_structure(lambda t: tuple(t.shape), inputs)
            raise ValueError(
                f"{argument} must map a batch to (batch, features), got {shape} for inputs "
                f"{given}: end it with Flatten() or a global pooling layer."
            )
        return features

    @staticmethod
    def _inputs(x):
        """`x` as the networks take it: one feature given as a vector `(B,)` becomes `(B, 1)`."""
        shape = None if isinstance(x, dict) else getattr(x, "shape", None)
        if shape is None or tf.TensorShape(shape).rank != 1:
            return x
        return tf.expand_dims(x, -1)

    def mean_and_sigma(self, x):
        """`(mu, sigma)` for the inputs `x`, each of shape `(B,)`, in the likelihood dtype."""
        dtype = self.likelihood_dtype
        x = self._inputs(x)
        if self.backbone is not None:
            features = self.backbone(x)
            mean_features = scale_features = features
        else:
            mean_features, scale_features = self.mean_network(x), self.scale_network(x)
        mean = tf.cast(self.mean_head(mean_features)[:, 0], dtype)
        raw = tf.cast(self.scale_head(scale_features)[:, 0], dtype)
        return mean, losses.softplus_scale(raw, self.scale_floor)

    def call(self, x):
        """The mean `mu(x)`, shape `(B,)`."""
        x = self._inputs(x)
        if self.backbone is not None:
            features = self.backbone(x)
        else:
            features = self.mean_network(x)
        return tf.cast(self.mean_head(features)[:, 0], self.likelihood_dtype)

    def sample_loss(self, params, x, y):
        """The Gaussian NLL of `y` under the network's `mu(x)`, `sigma(x)` (`params` is empty)."""
        del params  # The trainable variables are the networks' weights.
        mean, sigma = self.mean_and_sigma(x)
        return losses.gaussian_nll(y, tf.cast(mean, y.dtype), tf.cast(sigma, y.dtype))

    # ---------------------------------------------------------------- predictions
    def predict_distribution(self, x, batch_size=None):
        """Mean and standard deviation of `y` given `x`: `{"mean": (N,), "sigma": (N,)}`.

        Args:
            x: Inputs, checked as `predict` checks them, or a batched `tf.data.Dataset` of
                inputs (or of `(x, ...)` tuples).
            batch_size: Rows per compiled call, for arrays. Defaults to `256`.

        Returns:
            A dict of NumPy arrays in the likelihood dtype.
        """
        batch_size = data_lib.check_optional_positive_int("batch_size", batch_size)
        if isinstance(x, tf.data.Dataset):
            dataset = x.map(lambda *e: keras.utils.unpack_x_y_sample_weight(e)[0])
            shape = arguments.spec_shape(arguments.x_spec(self, dataset.element_spec))
            self.check_input_shape(shape)
            self._build_from_shape(shape)
        else:
            x = self.check_inputs(x)
            if not isinstance(x, dict) and x.ndim == 1:
                x = x[:, None]  # (before the compiled call relaxes its rank)
            dataset = tf.data.Dataset.from_tensor_slices(x).batch(batch_size or 256)
        if self._distribution_function is None:
            self._distribution_function = tf.function(self.mean_and_sigma, reduce_retracing=True)
        means, sigmas = [], []
        for batch in dataset:
            mean, sigma = self._distribution_function(batch)
            means.append(mean.numpy())
            sigmas.append(sigma.numpy())
        return {"mean": np.concatenate(means), "sigma": np.concatenate(sigmas)}

    def prediction_interval(self, x, level=0.95, batch_size=None):
        """The central interval of probability `level` of `y` given `x`: `(low, high)`.

        `mu -/+ z sigma` with `z = Phi^-1((1 + level) / 2)`: it describes new observations at
        `x` as the model sees them, and leaves out the uncertainty of the fitted weights.

        Args:
            x: Inputs, as for `predict_distribution`.
            level: Probability in (0, 1). Defaults to `0.95`.
            batch_size: As for `predict_distribution`.

        Returns:
            `(low, high)`, two arrays of shape `(N,)`.
        """
        level = metrics_lib.check_level(level)
        z = float(distributions.normal_ppf(0.5 + 0.5 * level))
        out = self.predict_distribution(x, batch_size=batch_size)
        half = z * out["sigma"]
        return out["mean"] - half, out["mean"] + half

    def sample(self, x, n, seed=None, batch_size=None):
        """`n` draws of `y` given each row of `x`, shape `(n, N)`.

        Args:
            x: Inputs, as for `predict_distribution`.
            n: Number of draws per row, > 0.
            seed: Seed of the NumPy generator (`numpy.random.default_rng`), or `None`.
            batch_size: As for `predict_distribution`.
        """
        n = data_lib.check_positive_int("n", n)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise ValueError(f"seed must be an integer or None, got {seed!r}.")
        out = self.predict_distribution(x, batch_size=batch_size)
        rng = np.random.default_rng(seed)
        noise = rng.standard_normal((n, len(out["mean"])))
        return (out["mean"] + out["sigma"] * noise).astype(out["mean"].dtype)

    # ---------------------------------------------------------------- metrics
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, weighted_metrics=None, **kw):
        """`MaximumLikelihoodModel.compile`; `GaussianMetric`s see the mean and `sigma`.

        Other metrics (`"mae"`, ...) are Keras' compiled metrics on the mean, as in the base
        class. `GaussianMetric`s in `metrics` are unweighted and in `weighted_metrics` weighted
        by the sample weights, as Keras weighs its own.
        """
        plain, gaussian = _split_metrics("metrics", metrics)
        plain_weighted, gaussian_weighted = _split_metrics("weighted_metrics", weighted_metrics)
        names = [m.name for m in [*gaussian, *gaussian_weighted]]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"metrics: the metric name(s) {repeated} repeat; rename them.")
        super().compile(
            optimizer=optimizer,
            loss=loss,
            metrics=plain,
            weighted_metrics=plain_weighted,
            **kw,
        )
        self._gaussian_metrics = _MetricGroup(gaussian, gaussian_weighted)
        self._compiled_gaussian = {
            "metrics": [keras.saving.serialize_keras_object(m) for m in gaussian],
            "weighted_metrics": [keras.saving.serialize_keras_object(m) for m in gaussian_weighted],
        }

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is None:
            return None
        for key, extra in getattr(self, "_compiled_gaussian", {}).items():
            if extra:
                config[key] = [*(config.get(key) or []), *extra]
        return config

    @property
    def metrics(self):
        group = getattr(self, "_gaussian_metrics", None)
        return [*super().metrics, *(group.all() if group is not None else [])]

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Keras' compiled metrics on the mean `y_pred`; `GaussianMetric`s on `(mean, sigma)`."""
        group = self._gaussian_metrics
        if group.all():
            # `y_pred` is `call(x)`: the mean. The metrics see the one from the same pass.
            mean, sigma = self.mean_and_sigma(x)
            y_pred = mean[:, None]
            both = tf.stack([mean, sigma], axis=-1)
            for metric in group.unweighted:
                metric.update_state(y, both)
            for metric in group.weighted:
                metric.update_state(y, both, sample_weight=sample_weight)
        return super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    # ---------------------------------------------------------------- statistics hooks
    def likelihood_derivatives(self, *args, **kwargs):
        """Not available: see the class docstring."""
        raise NotImplementedError(
            _NO_NAMED_PARAMETERS.format(
                name=type(self).__name__,
                what="keras_mle.inference (and score, observed_information, refine)",
            )
        )

    def refine(self, *args, **kwargs):
        """Not available: see the class docstring."""
        raise NotImplementedError(
            _NO_NAMED_PARAMETERS.format(name=type(self).__name__, what="refine")
        )

    def adapt(self, *args, **kwargs):
        """Not available: normalise the inputs with a layer in the network instead."""
        raise NotImplementedError(
            f"{type(self).__name__} does not support adapt(): its parameters are network "
            "weights; put a keras.layers.Normalization (adapted to x) first in the network, and "
            "scale y before fitting."
        )

    # ---------------------------------------------------------------- saving
    def get_config(self):
        config = super().get_config()
        serialize = keras.saving.serialize_keras_object
        config.update(
            {
                "backbone": None if self.backbone is None else serialize(self.backbone),
                "mean": None if self.mean_network is None else serialize(self.mean_network),
                "scale": None if self.scale_network is None else serialize(self.scale_network),
                "scale_floor": self.scale_floor,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("backbone", "mean", "scale"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


class _MetricGroup:
    """The `GaussianMetric`s of a compiled `GaussianNetwork` (kept out of Keras' tracking).

    They are created by `compile`, after the model is built, when Keras no longer tracks new
    state; `GaussianNetwork.metrics` lists them, so Keras resets and reports them.
    """

    def __init__(self, unweighted=(), weighted=()):
        self.unweighted = list(unweighted)
        self.weighted = list(weighted)

    def all(self):
        return [*self.unweighted, *self.weighted]


def _split_metrics(argument, metrics):
    """`(other metrics or None, GaussianMetrics)` of a `compile` argument (a list, or `None`)."""
    if metrics is None:
        return None, []
    if not isinstance(metrics, (list, tuple)):
        raise ValueError(
            f"{argument} must be a list of metrics for GaussianNetwork, got {type(metrics)}."
        )
    metrics = [
        keras.saving.deserialize_keras_object(m) if _is_gaussian_config(m) else m for m in metrics
    ]
    gaussian = [m for m in metrics if isinstance(m, metrics_lib.GaussianMetric)]
    plain = [m for m in metrics if not isinstance(m, metrics_lib.GaussianMetric)]
    return plain or None, gaussian


def _is_gaussian_config(value):
    # A GaussianMetric as `get_compile_config` saved it (a `.keras` file being loaded).
    return isinstance(value, dict) and str(value.get("registered_name", "")).startswith(
        "keras_mle>"
    )
