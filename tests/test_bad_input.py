"""Every entry point refuses bad input before any work, naming the argument.

`ValueError` for bad values and shapes, `TypeError` for data that is not numeric.
"""

import keras
import numpy as np
import pytest

import keras_mle
from keras_mle import closed_form, data, loops

N = 20


def _line():
    x, y = data.noisy_line(n=N, seed=0)
    return x, y, np.ones(N, np.float32)


def _with(array, index, value):
    array = np.array(array, dtype=np.float64 if np.isscalar(value) else object)
    array[index] = value
    return array


def _xy_cases():
    x, y, w = _line()
    yield "nan-x", (_with(x, 3, np.nan), y, None), ValueError, r"^x contains 1 NaN or Inf"
    yield "inf-x", (_with(x, 0, np.inf), y, None), ValueError, r"^x contains 1 NaN or Inf"
    yield "nan-y", (x, _with(y, 5, np.nan), None), ValueError, r"^y contains 1 NaN or Inf"
    yield "inf-y", (x, _with(y, 5, -np.inf), None), ValueError, r"^y contains 1 NaN or Inf"
    yield (
        "nan-weight",
        (x, y, _with(w, 1, np.nan)),
        ValueError,
        r"^sample_weight contains 1 NaN or Inf",
    )
    yield "inf-weight", (x, y, _with(w, 1, np.inf)), ValueError, r"^sample_weight contains 1 NaN"
    yield "empty", (np.array([]), np.array([]), None), ValueError, r"^x is empty"
    yield "empty-y", (x, np.array([]), None), ValueError, r"^y is empty"
    yield "lengths", (x, y[:-1], None), ValueError, r"^x and y have different lengths: 20 and 19"
    yield "y-3-columns", (x, np.tile(y[:, None], 3), None), ValueError, r"^y must have shape \(N,\)"
    yield "x-3d", (x.reshape(N, 1, 1), y, None), ValueError, r"^x must have 1 or 2 dimensions"
    yield "string-x", (np.array(["a"] * N), y, None), TypeError, r"^x must be numeric"
    yield "object-y", (x, np.array([None] * N), None), TypeError, r"^y must be numeric"
    yield "ragged-x", ([[1.0], [1.0, 2.0]], y[:2], None), TypeError, r"^x must be a numeric array"
    yield "negative-weight", (x, y, _with(w, 2, -1.0)), ValueError, r"^sample_weight must be >= 0"
    yield "zero-weights", (x, y, np.zeros(N)), ValueError, r"^sample_weight is zero everywhere"
    yield "weight-length", (x, y, w[:-2]), ValueError, r"^sample_weight has length 18"
    yield "string-weight", (x, y, np.array(["1"] * N)), TypeError, r"^sample_weight must be numeric"
    yield "y-missing", (x, None, None), ValueError, r"^y is required"


XY_CASES = [pytest.param(*case[1:], id=case[0]) for case in _xy_cases()]


def _fit(cls, **kwargs):
    def run(x, y, w):
        model = cls(**kwargs)
        good_x = data.noisy_line(n=4)[0]
        model(good_x[:2])
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        before = model.get_weights()
        try:
            model.fit(x, y, sample_weight=w, batch_size=N, epochs=1, verbose=0)
        finally:
            _assert_untouched(model, before)

    return run


def _evaluate(x, y, w):
    model = keras_mle.LinearRegression()
    model(data.noisy_line(n=4)[0][:2])
    model.compile(optimizer="sgd")
    model.evaluate(x, y, sample_weight=w, verbose=0)


def _train(mode):
    def run(x, y, w):
        model = keras_mle.GaussianRegression()
        model(data.noisy_line(n=4)[0][:2])
        before = model.get_weights()
        optimizer = keras.optimizers.SGD(0.1)
        try:
            loops.train(
                model,
                x,
                y,
                sample_weight=w,
                epochs=1,
                batch_size=N,
                optimizer=optimizer,
                mode=mode,
                verbose=0,
            )
        finally:
            _assert_untouched(model, before)
            assert int(optimizer.iterations) == 0

    return run


def _ols(x, y, w):
    closed_form.ols(x, y, sample_weight=w)


def _validation(x, y, w):
    good_x, good_y, _ = _line()
    model = keras_mle.LinearRegression()
    model(good_x[:2])
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    before = model.get_weights()
    validation = (x, y) if w is None else (x, y, w)
    try:
        model.fit(good_x, good_y, epochs=1, verbose=0, validation_data=validation)
    finally:
        _assert_untouched(model, before)


def _assert_untouched(model, before):
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        assert int(optimizer.iterations) == 0


XY_ENTRY_POINTS = {
    "LinearRegression.fit": _fit(keras_mle.LinearRegression),
    "GaussianRegression.fit": _fit(keras_mle.GaussianRegression),
    "evaluate": _evaluate,
    "loops.train-eager": _train("eager"),
    "loops.train-xla": _train("xla"),
    "closed_form.ols": _ols,
}


@pytest.mark.parametrize("entry", list(XY_ENTRY_POINTS))
@pytest.mark.parametrize("args, error, match", XY_CASES)
def test_xy_entry_points_refuse(entry, args, error, match):
    with pytest.raises(error, match=match):
        XY_ENTRY_POINTS[entry](*args)


@pytest.mark.parametrize(
    "args, error, match",
    [p for p in XY_CASES if p.id in {"nan-y", "empty", "lengths", "negative-weight", "y-missing"}],
)
def test_validation_data_is_checked_and_named(args, error, match):
    with pytest.raises(error, match="^validation_data: " + match.lstrip("^")):
        _validation(*args)


def test_unbuilt_model_stays_unbuilt_on_bad_input():
    x, y, _ = _line()
    model = keras_mle.LinearRegression()
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="^x contains"):
        model.fit(_with(x, 0, np.nan), y, verbose=0)
    assert not model.built


def test_feature_count_must_match_the_built_model():
    x, y, _ = _line()
    model = keras_mle.LinearRegression()
    model(x[:2])
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match=r"^x has 3 feature\(s\), but the model was built for 1"):
        model.fit(np.tile(x[:, None], 3), y, verbose=0)
    with pytest.raises(ValueError, match=r"^x has 3 feature\(s\)"):
        loops.train(model, np.tile(x[:, None], 3), y, epochs=1, batch_size=N, optimizer="sgd")


# ---------------------------------------------------------------- predict


@pytest.mark.parametrize(
    "x, error, match",
    [
        pytest.param(_with(np.ones(4), 1, np.nan), ValueError, "^x contains 1 NaN", id="nan"),
        pytest.param(np.array([]), ValueError, "^x is empty", id="empty"),
        pytest.param(np.array(["a", "b"]), TypeError, "^x must be numeric", id="string"),
        pytest.param(np.ones((2, 1, 1)), ValueError, "^x must have 1 or 2 dim", id="3d"),
    ],
)
def test_predict_refuses(x, error, match):
    model = keras_mle.GaussianRegression()
    model(np.ones(2, np.float32))
    with pytest.raises(error, match=match):
        model.predict(x, verbose=0)
    with pytest.raises(error, match=match.replace("^x", "^samples")):
        keras_mle.GaussianMLE().predict(x, verbose=0)


# ---------------------------------------------------------------- GaussianMLE


def _sample_cases():
    s = data.gaussian_sample(n=N, seed=0)
    yield "nan", (_with(s, 0, np.nan), None, None), ValueError, r"^samples contains 1 NaN or Inf"
    yield "inf", (_with(s, 0, np.inf), None, None), ValueError, r"^samples contains 1 NaN or Inf"
    yield "empty", (np.array([]), None, None), ValueError, r"^samples is empty"
    yield "string", (np.array(["x"] * N), None, None), TypeError, r"^samples must be numeric"
    yield "constant", (np.full(N, 2.5), None, None), ValueError, r"^samples are constant"
    yield "one-sample", (np.array([1.0]), None, None), ValueError, r"^samples are constant"
    yield "y-given", (s, s, None), ValueError, r"^y must be None: GaussianMLE fits a sample"
    yield "2-columns", (np.stack([s, s], 1), None, None), ValueError, r"^samples must be 1-D"
    yield "nan-weight", (s, None, _with(np.ones(N), 0, np.nan)), ValueError, r"^sample_weight"
    yield "negative-weight", (s, None, -np.ones(N)), ValueError, r"^sample_weight must be >= 0"
    yield "weight-length", (s, None, np.ones(N + 1)), ValueError, r"^sample_weight has length 21"


SAMPLE_CASES = [pytest.param(*case[1:], id=case[0]) for case in _sample_cases()]


def _gaussian_fit(samples, y, w):
    model = keras_mle.GaussianMLE(initial_mu=1.4, initial_sigma=1.3)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    before = model.get_weights()
    try:
        model.fit(samples, y, sample_weight=w, epochs=1, verbose=0)
    finally:
        _assert_untouched(model, before)


def _gaussian_evaluate(samples, y, w):
    model = keras_mle.GaussianMLE()
    model.compile(optimizer="sgd")
    model.evaluate(samples, y, sample_weight=w, verbose=0)


def _gaussian_train(samples, y, w):
    model = keras_mle.GaussianMLE(initial_mu=1.4, initial_sigma=1.3)
    before = model.get_weights()
    try:
        loops.train(
            model, samples, y, sample_weight=w, epochs=1, batch_size=N, optimizer="sgd", verbose=0
        )
    finally:
        _assert_untouched(model, before)


def _gaussian_closed_form(samples, y, w):
    closed_form.gaussian_mle(samples, sample_weight=w)


SAMPLE_ENTRY_POINTS = {
    "fit": _gaussian_fit,
    "evaluate": _gaussian_evaluate,
    "loops.train": _gaussian_train,
    "closed_form.gaussian_mle": _gaussian_closed_form,
}


@pytest.mark.parametrize(
    "entry, args, error, match",
    [
        pytest.param(entry, *case.values, id=f"{case.id}-{entry}")
        for case in SAMPLE_CASES
        for entry in SAMPLE_ENTRY_POINTS
        # closed_form.gaussian_mle has no y argument to misuse.
        if not (entry == "closed_form.gaussian_mle" and case.id == "y-given")
    ],
)
def test_gaussian_mle_entry_points_refuse(entry, args, error, match):
    if entry == "closed_form.gaussian_mle" and "1-D" in match:
        match = r"^samples must have 1 dimensions"
    with pytest.raises(error, match=match):
        SAMPLE_ENTRY_POINTS[entry](*args)


# ---------------------------------------------------------------- initial values


@pytest.mark.parametrize(
    "make, error, match",
    [
        pytest.param(
            lambda: keras_mle.GaussianMLE(initial_sigma=0), ValueError, "^initial_sigma", id="mle-0"
        ),
        pytest.param(
            lambda: keras_mle.GaussianMLE(initial_sigma=-1.0),
            ValueError,
            "^initial_sigma",
            id="mle-neg",
        ),
        pytest.param(
            lambda: keras_mle.GaussianMLE(initial_sigma=np.nan),
            ValueError,
            "^initial_sigma",
            id="nan",
        ),
        pytest.param(
            lambda: keras_mle.GaussianMLE(initial_sigma=np.inf),
            ValueError,
            "^initial_sigma",
            id="inf",
        ),
        pytest.param(
            lambda: keras_mle.GaussianMLE(initial_sigma="big"),
            TypeError,
            "^initial_sigma",
            id="str",
        ),
        pytest.param(
            lambda: keras_mle.GaussianMLE(initial_mu=np.inf), ValueError, "^initial_mu", id="mu-inf"
        ),
        pytest.param(
            lambda: keras_mle.GaussianMLE(initial_mu="zero"), TypeError, "^initial_mu", id="mu-str"
        ),
        pytest.param(
            lambda: keras_mle.GaussianRegression(initial_sigma=-1),
            ValueError,
            "^initial_sigma",
            id="reg-neg",
        ),
        pytest.param(
            lambda: keras_mle.GaussianRegression(initial_sigma=0.0),
            ValueError,
            "^initial_sigma",
            id="reg-0",
        ),
    ],
)
def test_bad_initial_values(make, error, match):
    with pytest.raises(error, match=match + ".*(> 0|finite|number)"):
        make()


def test_add_parameter_refuses_non_positive_initial_value():
    class Model(keras_mle.MaximumLikelihoodModel):
        def build(self, input_shape):
            self.add_parameter("scale", initializer=-2.0, positive=True)

    with pytest.raises(ValueError, match=r"^scale must be a finite number > 0, got -2.0"):
        Model()(np.ones(2, np.float32))


# ---------------------------------------------------------------- data helpers


@pytest.mark.parametrize(
    "call, error, match",
    [
        pytest.param(lambda: data.noisy_line(n=0), ValueError, "^n must be a positive", id="n0"),
        pytest.param(lambda: data.noisy_line(n=2.5), ValueError, "^n must be a positive", id="n"),
        pytest.param(lambda: data.noisy_line(n=True), ValueError, "^n must be a positive", id="b"),
        pytest.param(
            lambda: data.noisy_line(noise=-0.1),
            ValueError,
            "^noise must be a finite number >= 0",
            id="z",
        ),
        pytest.param(lambda: data.noisy_line(m=np.nan), ValueError, "^m must be finite", id="m"),
        pytest.param(
            lambda: data.noisy_line(b=np.inf), ValueError, "^b must be finite", id="b-inf"
        ),
        pytest.param(lambda: data.noisy_line(m="one"), TypeError, "^m must be a number", id="m-s"),
        pytest.param(
            lambda: data.gaussian_sample(sigma=0),
            ValueError,
            "^sigma must be a finite number > 0",
            id="sigma0",
        ),
        pytest.param(
            lambda: data.gaussian_sample(sigma=-1),
            ValueError,
            "^sigma must be a finite number > 0",
            id="sigma-",
        ),
        pytest.param(
            lambda: data.gaussian_sample(mu=np.nan), ValueError, "^mu must be finite", id="mu"
        ),
        pytest.param(lambda: data.gaussian_sample(n=-5), ValueError, "^n must be a pos", id="n-"),
        pytest.param(
            lambda: data.stack_batches(np.ones(4), batch_size=0),
            ValueError,
            "^batch_size must be a positive",
            id="batch0",
        ),
        pytest.param(
            lambda: data.stack_batches(np.array([1.0, np.nan]), batch_size=1),
            ValueError,
            "^x contains 1 NaN or Inf",
            id="stack-nan-x",
        ),
        pytest.param(
            lambda: data.epoch_dataset(np.ones(3), np.array([1, np.inf, 2]), batch_size=2),
            ValueError,
            "^y contains 1 NaN or Inf",
            id="epoch-inf-y",
        ),
        pytest.param(
            lambda: data.epoch_dataset(np.ones(2), np.ones(2), np.array([1, -1]), batch_size=2),
            ValueError,
            "^sample_weight must be >= 0",
            id="epoch-negative-w",
        ),
        pytest.param(
            lambda: data.epoch_dataset(np.ones(4), batch_size=2, repeats=0),
            ValueError,
            "^repeats must be a positive",
            id="repeats0",
        ),
    ],
)
def test_data_helpers_refuse(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_check_array_refuses_none():
    with pytest.raises(TypeError, match="^x is required, got None"):
        data.check_array("x", None)
