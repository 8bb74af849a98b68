"""A user's own model, written as `examples/poisson_regression.py` writes one, after `adapt` and
without: `predict`, the compiled metrics and the coefficient names are right.

The mean prediction is a formula of the parameters in the user's units (`mean(params, x)`),
fed by the base class, so `adapt` (which stores working-space values in the variables) cannot
skew it; a model that overrides `call` instead is refused by `adapt`. The fitted values are
checked against statsmodels' Poisson GLM.
"""

import keras
import numpy as np
import pytest
import statsmodels.api as sm
import tensorflow as tf
from helpers import load_example

import keras_mle

# float64 Newton steps to the optimum against statsmodels' IRLS (tolerance 1e-8 or better).
TOL = 1e-8


def counts():
    example = load_example("poisson_regression")
    x, y = example.simulate(m=(0.5, -0.3), b=1.0, n=400, seed=1)
    x = x * np.array([1000.0, 0.01], np.float32)  # units far apart: what adapt is for
    return example, x.astype(np.float64), y.astype(np.float64)


@pytest.mark.parametrize("adapted", [False, True])
def test_a_users_model_predicts_statsmodels_fitted_values_after_adapt_and_without(adapted):
    example, x, y = counts()
    model = example.PoissonRegression(dtype="float64", feature_names=["income", "rate"])
    if adapted:
        model.adapt(x, y)
    # A tiny step: the fit only builds the model; float64 Newton steps (refine) then finish.
    model.compile(optimizer=keras.optimizers.SGD(1e-9), metrics=["mae"])
    model.fit(x, y, batch_size=len(x), epochs=2, shuffle=False, verbose=0)
    assert model.refine(x, y).converged
    fitted = sm.GLM(y, sm.add_constant(x), family=sm.families.Poisson()).fit(tol=1e-13)
    np.testing.assert_allclose(model.params["b"], fitted.params[0], rtol=TOL)
    np.testing.assert_allclose(model.params["m"], fitted.params[1:], rtol=TOL)
    predictions = model.predict(x, verbose=0)
    np.testing.assert_allclose(predictions, fitted.fittedvalues, rtol=TOL)
    mae = model.evaluate(x, y, verbose=0, return_dict=True)["mae"]
    np.testing.assert_allclose(mae, np.mean(np.abs(y - fitted.fittedvalues)), rtol=1e-6)
    assert model.param_names == ["m[income]", "m[rate]", "b"]


def test_adapt_refuses_a_model_that_overrides_call():
    class ReadsTheVariables(keras_mle.MaximumLikelihoodModel):
        parameter_roles = {"m": "slope", "b": "intercept"}

        def build(self, input_shape):
            self.add_parameter("m", shape=(input_shape[-1],))
            self.add_parameter("b")

        def call(self, x):  # the working-space values: wrong after adapt
            params = self.params_tensors()
            return tf.exp(tf.linalg.matvec(x, params["m"]) + params["b"])

        def sample_loss(self, params, x, y):
            log_rate = tf.linalg.matvec(x, params["m"]) + params["b"]
            return tf.exp(log_rate) - y * log_rate

    _, x, y = counts()
    model = ReadsTheVariables()
    with pytest.raises(NotImplementedError, match=r"overrides call\(\), which adapt\(\) cannot"):
        model.adapt(x, y)


def test_a_model_without_a_mean_says_how_to_write_one():
    class NoMean(keras_mle.MaximumLikelihoodModel):
        def build(self, input_shape):
            self.add_parameter("b")

        def sample_loss(self, params, x, y):
            return (y - params["b"]) ** 2

    model = NoMean()
    model.compile(optimizer="sgd")
    x, y = np.ones((4, 1), np.float32), np.ones(4, np.float32)
    model.fit(x, y, epochs=1, verbose=0)
    with pytest.raises(NotImplementedError, match=r"define mean\(self, params, x\)"):
        model.predict(x, verbose=0)


def test_per_feature_parameters_are_named_after_the_features_without_roles():
    class Named(keras_mle.MaximumLikelihoodModel):
        def build(self, input_shape):
            self.add_parameter("w", shape=(input_shape[-1],), per_feature=True)
            self.add_parameter("v", shape=(input_shape[-1],))

        def sample_loss(self, params, x, y):
            return (y - tf.linalg.matvec(x, params["w"] + params["v"])) ** 2

    model = Named(feature_names=["age", "income"])
    model.build((None, 2))
    assert model.param_names == ["w[age]", "w[income]", "v_0", "v_1"]
