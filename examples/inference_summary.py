"""Statsmodels-style answers from Keras-trained models: the documented workflow, end to end.

1. `model.adapt(x, y)`: fix a float64 centring and whitening of the data (saved with the model),
   so the optimizer works on a problem whose Hessian is close to the identity.
2. `model.fit(...)`: plain SGD then converges in a few steps, whatever the units of the data.
3. `keras_mle.inference(model, x, y)`: estimates, standard errors, tests, intervals, AIC/BIC,
   in the data's own units, with a warning when the fit has not converged.
4. `keras_mle.likelihood_ratio_test(full, restricted, x, y)` for nested models.

Run it with `python examples/inference_summary.py`.
"""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_mle  # noqa: E402


def dose_response(n=80, seed=0):
    """A response to doses in the hundreds: far too badly scaled for plain SGD without adapt."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(100.0, 900.0, n)
    y = 3.0 + 0.02 * x + rng.normal(0.0, 2.0, n)
    return x, y


def fit(model, x, y=None, *, learning_rate, epochs):
    """The documented workflow: adapt, compile with plain SGD, full-batch fit."""
    model.adapt(x, y)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate))
    model.fit(x, y, batch_size=len(x), epochs=epochs, shuffle=False, verbose=0)
    return model


def main(verbose=True):
    x, y = dose_response()
    say = print if verbose else (lambda *args, **kwargs: None)

    # Least squares: OLS conventions (s^2 = RSS / (n - p), t tests), as statsmodels.OLS.
    line = fit(keras_mle.LinearRegression(), x, y, learning_rate=0.5, epochs=3)
    ols = keras_mle.inference(line, x, y)
    say(ols.summary(), "\n")

    # The same line by maximum likelihood: MLE conventions (inverse observed information, z).
    # SGD needs learning_rate < 2 (1 - R^2) here (see MaximumLikelihoodModel.adapt).
    gaussian = fit(keras_mle.GaussianRegression(), x, y, learning_rate=0.1, epochs=150)
    mle = keras_mle.inference(gaussian, x, y)
    say(mle.summary(), "\n")
    say("95% intervals (MLE):", {k: np.round(v, 5).tolist() for k, v in mle.conf_int().items()})
    say(
        "OLS variant of the same model:",
        keras_mle.inference(gaussian, x, y, convention="ols").stderr,
    )

    # Is there a slope? The restricted model is the sample model of y alone.
    intercept_only = fit(keras_mle.GaussianMLE(), y, learning_rate=0.5, epochs=5)
    test = keras_mle.likelihood_ratio_test(gaussian, intercept_only, x, y)
    say("\n" + str(test))

    # A sample centred at 1e6: float32 cannot even hold its spread, yet adapt + fit get it.
    samples = 1e6 + np.random.default_rng(1).normal(0.0, 0.01, 1000)
    sample_model = fit(
        keras_mle.GaussianMLE(initial_mu=1.4, initial_sigma=1.3),
        samples,
        learning_rate=0.5,
        epochs=40,
    )
    sample = keras_mle.inference(sample_model, samples)
    say(
        f"\nsample at 1e6: mu = {sample.params['mu']:.10f} (mean {np.mean(samples):.10f}), "
        f"sigma = {sample.params['sigma']:.8f} (std {np.std(samples):.8f}), "
        f"stderr(mu) = {sample.stderr['mu']:.3g}"
    )

    # Not silently wrong: the same line without adapt, after a few Adam steps.
    rough = keras_mle.GaussianRegression()
    rough.compile(optimizer=keras.optimizers.Adam(0.1))
    rough.fit(x, y, batch_size=len(x), epochs=5, verbose=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        unconverged = keras_mle.inference(rough, x, y)
    say(f"\nwithout adapt, 5 Adam steps: converged={unconverged.converged}, warning:")
    say(" ", caught[-1].message if caught else "none")
    return {"ols": ols, "mle": mle, "lr_test": test, "sample": sample, "rough": unconverged}


if __name__ == "__main__":
    main()
