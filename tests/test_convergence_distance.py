"""How far a fit is from its optimum, in standard errors, must be right far from it too.

Under OLS conventions the residual sum of squares is quadratic, so the Newton step is the
exact distance to the optimum; it is measured in the standard errors at that optimum
(statsmodels' `bse`), not in ones whose `s^2` the misfit inflates.
"""

import keras
import numpy as np
import pytest
import statsmodels.api as sm

import keras_mle

# float64 derivatives and a 2x2 solve against statsmodels' QR: 1e-8 relative.
RTOL = 1e-8


def macro_like(n=120, seed=3):
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.normal(100.0, 20.0, n), rng.normal(5.0, 2.0, n)])
    y = 0.9 * x[:, 0] - 3.0 * x[:, 1] + 10.0 + rng.normal(0.0, 2.0, n)
    return x, y


@pytest.mark.parametrize("standard_errors_off", [3.0, 40.0])
def test_the_distance_is_the_exact_step_in_the_optimums_standard_errors(standard_errors_off):
    x, y = macro_like()
    ols = sm.OLS(y, sm.add_constant(x)).fit()
    model = keras_mle.LinearRegression(dtype="float64")
    model.build((None, 2))
    off = ols.params + standard_errors_off * ols.bse * np.array([1.0, -1.0, 0.5])
    model.set_params({"b": off[0], "m": off[1:]})
    with pytest.warns(keras_mle.InferenceWarning, match="standard errors away"):
        result = keras_mle.inference(model, x, y)
    expected = np.max(np.abs(off - ols.params) / ols.bse)
    np.testing.assert_allclose(result.distance_to_optimum, expected, rtol=RTOL)
    assert not result.converged


def test_at_the_optimum_the_distance_is_nil():
    x, y = macro_like()
    model = keras_mle.LinearRegression(dtype="float64")
    model.adapt(x, y)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    model.fit(x, y, batch_size=len(x), epochs=3, shuffle=False, verbose=0)
    result = keras_mle.inference(model, x, y)
    assert result.converged and result.distance_to_optimum < 1e-6
