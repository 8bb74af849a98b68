"""Spending against income, whose noise grows with income: a heteroscedastic regression.

`y ~ N(x . m + b, exp(x . g + c)^2)`: the mean and the log of the noise level are both linear
in the features. The recipe that converges from the default start, without tuning:

1. `model.adapt(x, y)`: float64 centring and whitening (incomes in dollars, spending in
   thousands, are no obstacle);
2. 300 full-batch steps of `keras.optimizers.Adam(0.05)` (plain SGD diverges here);
3. `model.refine(x, y)`: float64 Newton steps to the optimum.

Then `keras_mle.inference` gives the estimates and standard errors in dollars, and
`keras_mle.likelihood_ratio_test` against `GaussianRegression` tests constant variance.

Run it with `python examples/heteroscedastic_linear.py` (`--n 5000` for more data).
"""

from __future__ import annotations

import argparse
import math
import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_mle  # noqa: E402
from keras_mle.models.heteroscedastic_regression import HeteroscedasticRegression  # noqa: E402


def incomes(n=1000, seed=0):
    """Incomes in dollars (median 40,000) and spending; the noise SD runs from ~300 to ~6,000."""
    rng = np.random.default_rng(seed)
    income = rng.lognormal(math.log(40_000.0), 0.6, n)
    log_sigma = math.log(300.0) + math.log(20.0) * (income - 5_000.0) / 150_000.0
    spending = 2_000.0 + 0.6 * income + np.exp(log_sigma) * rng.normal(size=n)
    return income[:, None], spending


def fit(model, x, y, *, steps=300, learning_rate=0.05):
    """adapt, full-batch Adam for `steps` steps (one compiled call), then Newton refinement."""
    model.adapt(x, y)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), jit_compile=False)
    batches = keras_mle.data.epoch_dataset(
        *model.check_data(x, y), batch_size=len(x), repeats=steps
    )
    model.fit(batches, epochs=1, steps_per_epoch=1, shuffle=False, verbose=0)
    with warnings.catch_warnings():
        # float32 variables: refine stops ~1e-5 standard errors from the float64 optimum.
        warnings.simplefilter("ignore", keras_mle.InferenceWarning)
        model.refine(x, y, tol=1e-4)
    return model


def main(n=1000, seed=0, verbose=True):
    say = print if verbose else (lambda *args, **kwargs: None)
    x, y = incomes(n, seed)
    keras.utils.set_random_seed(seed)

    model = fit(HeteroscedasticRegression(feature_names=["income"]), x, y)
    result = keras_mle.inference(model, x, y)
    say(result.summary(), "\n")

    constant = keras_mle.GaussianRegression(feature_names=["income"]).adapt(x, y)
    constant.set_params(constant.closed_form(x, y))
    test = keras_mle.likelihood_ratio_test(model, constant, x, y)
    say("Constant variance (GaussianRegression) against log-linear variance:")
    say(test, "\n")

    sigma = model.predict_distribution(np.array([[20_000.0], [80_000.0]]), verbose=0)["sigma"]
    say(f"Noise SD at incomes of $20,000 and $80,000: {sigma[0]:,.0f} and {sigma[1]:,.0f}")
    return result, test


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="rows of data (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    arguments = parser.parse_args()
    main(arguments.n, arguments.seed)
