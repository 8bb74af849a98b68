"""Poisson regression with a log link, written as a user's own `keras_mle` model.

The model is `y_i ~ Poisson(rate_i)` with `log(rate_i) = x_i . m + b`, so the per-sample negative
log-likelihood is

```python
nll = rate - y * log(rate) + log(y!)        # log(y!) = lgamma(y + 1)
```

Subclassing `keras_mle.MaximumLikelihoodModel` takes three methods: `build` declares the
parameters, `mean` gives the mean prediction and `sample_loss` the formula, both as functions of
the parameters in the user's units, which the base class feeds (so `predict` is right after
`adapt` too). `fit`, `evaluate`,
`predict`, `.keras` saving, `model.params` and `keras_mle.loops.train` then come for free.

Run it with `python examples/poisson_regression.py`.
"""

from __future__ import annotations

import os
import sys
import tempfile

import keras
import numpy as np
import tensorflow as tf

import keras_mle


@keras.saving.register_keras_serializable(package="keras_mle_examples")
class PoissonRegression(keras_mle.MaximumLikelihoodModel):
    """`y ~ Poisson(exp(x . m + b))` for `x` of shape `(N,)` or `(N, k)`."""

    #: What `adapt` may do with each parameter: it whitens the features, so the slopes and the
    #: intercept map back to the user's units (the counts themselves are left as they are).
    parameter_roles = {"m": "slope", "b": "intercept"}

    def build(self, input_shape):
        features = 1 if len(input_shape) == 1 else input_shape[-1]
        self.add_parameter("m", shape=(features,), per_feature=True)  # labelled m[income], ...
        self.add_parameter("b")

    def log_rate(self, params, x):
        x = tf.cast(x, params["m"].dtype)
        if x.shape.rank == 1:
            return x * params["m"][0] + params["b"]
        return tf.linalg.matvec(x, params["m"]) + params["b"]

    def mean(self, params, x):
        return tf.exp(self.log_rate(params, x))

    def sample_loss(self, params, x, y):
        log_rate = self.log_rate(params, x)
        return tf.exp(log_rate) - y * log_rate + tf.math.lgamma(y + 1.0)


def simulate(m=(0.5, -0.3), b=1.0, *, n=500, seed=0):
    """Counts `y` drawn from the model at features `x ~ U(-1, 1)^k`, as float32 arrays."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(n, len(m)))
    y = rng.poisson(np.exp(x @ np.asarray(m) + b))
    return x.astype(np.float32), y.astype(np.float32)


def main(out_dir=None, *, epochs=60, verbose=1):
    """Fits, saves, reloads and trains the model through a custom loop; returns the results."""
    x, y = simulate()
    model = PoissonRegression()
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    model.fit(x, y, batch_size=len(x), epochs=epochs, shuffle=False, verbose=0)

    out_dir = out_dir or tempfile.mkdtemp()
    path = os.path.join(out_dir, "poisson.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)

    looped = PoissonRegression()
    keras_mle.loops.train(
        looped,
        x,
        y,
        epochs=epochs,
        batch_size=len(x),
        optimizer=keras.optimizers.SGD(0.5),
        mode="function",
        verbose=0,
    )
    if verbose:
        print("truth:  m = [0.5, -0.3], b = 1.0")
        for label, fitted in (("fit()", model), ("reload", reloaded), ("loop", looped)):
            params = fitted.params
            print(f"{label:7} m = {np.round(params['m'], 5)}, b = {params['b']:.5f}")
    return {"x": x, "y": y, "fit": model, "reloaded": reloaded, "loop": looped, "path": path}


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
