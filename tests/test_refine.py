"""Newton refinement (`keras_mle.inference.refine`) against statsmodels' Logit.

Both sides reach the optimum of the same float64 likelihood with Newton's method to ~1e-14, so
the estimates agree to ~1e-12; `RTOL = 1e-8` is the precision promised.
"""

import warnings

import numpy as np
import pytest
import statsmodels.api as sm
import tensorflow as tf

import keras_mle
from keras_mle import newton
from keras_mle.inference import InferenceWarning, RefineReport, refine

RTOL = 1e-8


class Logistic(keras_mle.MaximumLikelihoodModel):
    """Bernoulli regression `P(y = 1) = sigmoid(x * m + b)`, written with the base class."""

    def build(self, input_shape):
        self.add_parameter("m", shape=(1,))
        self.add_parameter("b")

    def mean(self, params, x):
        return tf.sigmoid(tf.cast(x, params["m"].dtype) * params["m"][0] + params["b"])

    def sample_loss(self, params, x, y):
        eta = tf.cast(x, params["m"].dtype) * params["m"][0] + params["b"]
        return tf.math.softplus(eta) - y * eta


@pytest.fixture(scope="module")
def near_500():
    """x near 500: an unscaled feature that first-order optimizers struggle with."""
    rng = np.random.default_rng(8)
    x = 500.0 + 5.0 * rng.normal(size=200)
    y = (rng.uniform(size=200) < 1 / (1 + np.exp(-0.4 * (x - 500.0)))).astype(np.float64)
    return x, y


def test_refine_from_a_poor_start_matches_statsmodels_logit(near_500):
    x, y = near_500
    model = Logistic(dtype="float64")
    model(x[:2])
    model.set_params({"m": [0.01], "b": 3.0})  # eta ~ 8: every prediction near 1
    with pytest.warns(InferenceWarning, match="Not converged"):
        assert not keras_mle.inference(model, x, y).converged
    report = refine(model, x, y, max_steps=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tol=1e-14 sits at rounding level for its check
        reference = sm.Logit(y, sm.add_constant(x)).fit(method="newton", tol=1e-14, disp=0)
    assert report.converged and 1 <= report.steps <= 20
    assert report.distance_to_optimum <= 1e-10 and report.gradient_norm < 1e-6
    np.testing.assert_allclose(
        [model.params["b"], model.params["m"][0]], reference.params, rtol=RTOL
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", InferenceWarning)
        result = keras_mle.inference(model, x, y)
    assert result.converged
    np.testing.assert_allclose(result.llf, reference.llf, rtol=1e-12)
    assert "converged after" in str(report)
    assert keras_mle.inference.refine is refine  # also reachable from the function


def test_refine_reports_and_warns_when_out_of_steps(near_500):
    x, y = near_500
    model = Logistic(dtype="float64")
    model(x[:2])
    model.set_params({"m": [0.01], "b": 3.0})
    with pytest.warns(InferenceWarning, match="NOT converged after 1 Newton step"):
        report = refine(model, x, y, max_steps=1)
    assert not report.converged and report.steps == 1 and report.distance_to_optimum > 1e-10


def test_refine_bad_arguments(near_500):
    x, y = near_500
    model = Logistic(dtype="float64")
    with pytest.raises(ValueError, match="not built"):
        refine(model, x, y)
    model(x[:2])
    with pytest.raises(ValueError, match="max_steps"):
        refine(model, x, y, max_steps=0)
    with pytest.raises(ValueError, match="tol must be"):
        refine(model, x, y, tol=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        refine(model, np.r_[x[:-1], np.nan], y)
    with pytest.raises(TypeError, match="keras_mle model"):
        refine(object(), x, y)


# ---------------------------------------------------------------------------- keras_mle.newton
def test_newton_direction_solves_and_floors_an_indefinite_information():
    # [[4, 1], [1, 3]]^-1 = [[3, -1], [-1, 4]] / 11, so the direction for s = (1, 2) is (1, 7) / 11.
    direction = newton.newton_direction(np.array([[4.0, 1.0], [1.0, 3.0]]), np.array([1.0, 2.0]))
    np.testing.assert_allclose(direction, [1 / 11, 7 / 11], rtol=1e-14)
    # Indefinite diag(2, -4): its eigenvalues' absolute values, so s = (2, 4) gives (1, 1).
    direction = newton.newton_direction(np.diag([2.0, -4.0]), np.array([2.0, 4.0]))
    np.testing.assert_allclose(direction, [1.0, 1.0], rtol=1e-14)


def rosenbrock(point):
    """`f = (1 - a)^2 + 100 (b - a^2)^2`, minimum 0 at (1, 1), indefinite Hessian in places."""
    a, b = point
    loss = (1 - a) ** 2 + 100 * (b - a**2) ** 2
    gradient = np.array([-2 * (1 - a) - 400 * a * (b - a**2), 200 * (b - a**2)])
    hessian = np.array([[2 - 400 * (b - 3 * a**2), -400 * a], [-400 * a, 200.0]])
    return newton.Evaluation(loss, -gradient, hessian)


def test_minimize_reaches_the_rosenbrock_minimum_from_the_classic_start():
    start = np.array([-1.2, 1.0])
    minimum = newton.minimize(rosenbrock, start, rosenbrock(start), max_steps=100, tol=1e-12)
    assert minimum.converged and 1 <= minimum.steps <= 100
    np.testing.assert_allclose(minimum.point, [1.0, 1.0], rtol=1e-12)
    assert minimum.evaluation.loss < 1e-20


def test_minimize_halves_steps_that_leave_the_domain():
    # f(t) = t - log t: minimum at t = 1; from t = 3 the full step (-6) lands at t = -3, outside.
    def evaluate(point):
        (t,) = point
        if t <= 0:
            return None
        return newton.Evaluation(t - np.log(t), np.array([1 / t - 1]), np.array([[1 / t**2]]))

    start = np.array([3.0])
    accepted = newton.damped_step(evaluate, start, evaluate(start), np.array([-6.0]))
    np.testing.assert_allclose(accepted[0], [1.5], rtol=0)  # -3 and 0 refused, then 1.5
    minimum = newton.minimize(
        evaluate, start, evaluate(start), max_steps=50, tol=1e-12, scale=np.ones(1)
    )
    assert minimum.converged
    np.testing.assert_allclose(minimum.point, [1.0], rtol=1e-12)


def test_newton_refine_is_what_refine_and_model_refine_run(near_500):
    x, y = near_500
    reports, estimates = [], []
    for run in (refine, newton.refine, lambda model, *data: model.refine(*data)):
        model = Logistic(dtype="float64")
        model(x[:2])
        model.set_params({"m": [0.01], "b": 3.0})
        reports.append(run(model, x, y))
        estimates.append([model.params["b"], model.params["m"][0]])
    assert reports[0] == reports[1] == reports[2] and reports[0].converged
    np.testing.assert_array_equal(estimates[0], estimates[1])
    np.testing.assert_array_equal(estimates[0], estimates[2])
    assert keras_mle.RefineReport is RefineReport is newton.RefineReport
