"""Every entry point refuses bad input before any work, naming the argument.

`ValueError` for bad values and shapes, `TypeError` for data that is not numeric.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mle
from keras_mle import callbacks as mle_callbacks
from keras_mle import checkpoint, closed_form, data, distributions, loops
from keras_mle.refine import refine

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


def test_gaussian_mle_evaluates_a_constant_sample():
    # NLL of N(mu=2, sigma=0.5) at x = 3: log(sigma) + log(2 pi) / 2 + ((x - mu) / sigma)^2 / 2.
    model = keras_mle.GaussianMLE(initial_mu=2.0, initial_sigma=0.5, dtype="float64")
    model.compile(optimizer="sgd")
    loss = model.evaluate(np.full(4, 3.0), verbose=0)
    expected = np.log(0.5) + 0.5 * np.log(2 * np.pi) + 0.5 * (1.0 / 0.5) ** 2
    np.testing.assert_allclose(loss, expected, rtol=1e-12)


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
        # closed_form.gaussian_mle has no y argument to misuse; a constant sample has no MLE,
        # but evaluate only scores it (test_gaussian_mle_evaluates_a_constant_sample).
        if not (entry == "closed_form.gaussian_mle" and case.id == "y-given")
        and not (entry == "evaluate" and case.id in ("constant", "one-sample"))
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


# ---------------------------------------------------------------- set_params


@pytest.mark.parametrize(
    "params, match",
    [
        pytest.param(
            {"slope": 1.0},
            r"^params: unknown parameter\(s\) \['slope'\]; have \['m', 'b'\]",
            id="unknown-name",
        ),
        pytest.param({"b": np.nan}, r"^params\['b'\] must be finite, got nan", id="nan"),
        pytest.param({"m": [np.inf]}, r"^params\['m'\] must be finite, got \[inf\]", id="inf"),
    ],
)
def test_set_params_refuses_and_changes_nothing(params, match):
    model = keras_mle.LinearRegression()
    model(data.noisy_line(n=4)[0][:2])
    before = model.get_weights()
    with pytest.raises(ValueError, match=match):
        model.set_params(params)
    _assert_untouched(model, before)


# ---------------------------------------------------------------- adapt

_RAMP = np.arange(10.0)


@pytest.mark.parametrize(
    "make, x, y, error, match",
    [
        pytest.param(
            keras_mle.LinearRegression,
            np.column_stack([_RAMP, np.ones(10)]),
            _RAMP,
            ValueError,
            r"^x: column\(s\) \[1\] are constant or linear combinations of the others",
            id="constant-column",
        ),
        pytest.param(
            keras_mle.LinearRegression,
            np.column_stack([_RAMP, 2.0 * _RAMP + 1.0]),
            _RAMP,
            ValueError,
            r"^x: column\(s\) \[1\] are constant or linear combinations of the others",
            id="collinear-columns",
        ),
        pytest.param(
            keras_mle.GaussianMLE,
            np.full(5, 3.0),
            None,
            ValueError,
            r"^samples are constant: the likelihood grows without bound",
            id="constant-sample",
        ),
        pytest.param(
            keras_mle.GaussianMLE,
            np.array([1.0, np.nan, 2.0]),
            None,
            ValueError,
            r"^samples contains 1 NaN or Inf",
            id="nan-sample",
        ),
        pytest.param(
            keras_mle.LinearRegression,
            _RAMP,
            None,
            ValueError,
            r"^y is required: LinearRegression fits targets y given x",
            id="y-missing",
        ),
        pytest.param(
            keras_mle.LinearRegression,
            _RAMP,
            _RAMP[:-1],
            ValueError,
            r"^x and y have different lengths: 10 and 9",
            id="lengths",
        ),
        pytest.param(
            keras_mle.GaussianMLE,
            _RAMP,
            _RAMP,
            ValueError,
            r"^y must be None: GaussianMLE fits a sample",
            id="y-given-to-a-sample-model",
        ),
    ],
)
def test_adapt_refuses_before_adapting(make, x, y, error, match):
    model = make()
    with pytest.raises(error, match=match):
        model.adapt(x, y)
    assert model.adaptation is None


def test_adapt_refuses_a_feature_count_other_than_the_built_models():
    x, y, _ = _line()
    model = keras_mle.LinearRegression()
    model(x[:2])
    with pytest.raises(ValueError, match=r"^x has 3 feature\(s\), but the model was built for 1"):
        model.adapt(np.tile(x[:, None], 3), y)
    assert model.adaptation is None


# ---------------------------------------------------------------- callbacks' arguments


@pytest.mark.parametrize(
    "make, match",
    [
        pytest.param(
            lambda: mle_callbacks.ConvergenceStopping(parameter_tolerance=None),
            r"^Give parameter_tolerance or gradient_tolerance",
            id="no-tolerance",
        ),
        pytest.param(
            lambda: mle_callbacks.ConvergenceStopping(gradient_tolerance=1e-6),
            r"^gradient_tolerance needs data=\(x, y\)",
            id="gradient-tolerance-without-data",
        ),
        pytest.param(
            lambda: mle_callbacks.ConvergenceStopping(
                (np.ones(3),), gradient_tolerance=1e-6, gradient_from_logs=True
            ),
            r"^Give data or gradient_from_logs=True, not both",
            id="gradient-from-data-and-logs",
        ),
        pytest.param(
            lambda: mle_callbacks.ConvergenceStopping((np.ones(3),), gradient_tolerance=-1.0),
            r"^gradient_tolerance must be a finite number > 0, got -1.0",
            id="negative-gradient-tolerance",
        ),
        pytest.param(
            lambda: mle_callbacks.ConvergenceStopping(parameter_tolerance=np.nan),
            r"^parameter_tolerance must be a finite number > 0, got nan",
            id="nan-parameter-tolerance",
        ),
        pytest.param(
            lambda: mle_callbacks.ConvergenceStopping(patience=0),
            r"^patience must be a positive integer, got 0",
            id="patience-0",
        ),
        pytest.param(
            lambda: mle_callbacks.ConvergenceStopping(patience=1.5),
            r"^patience must be a positive integer, got 1.5",
            id="fractional-patience",
        ),
        pytest.param(
            lambda: mle_callbacks.ParameterTensorBoard("logs", image_every=-1),
            r"^image_every must be an integer >= 0, got -1",
            id="negative-image-every",
        ),
        pytest.param(
            lambda: mle_callbacks.ParameterTensorBoard("logs", closed_form="ols"),
            r"^closed_form must be a dict, 'auto' or None, got 'ols'",
            id="closed-form-string",
        ),
        pytest.param(
            lambda: checkpoint.BackupAndRestore("backup", save_every=0),
            r"^save_every must be a positive integer, got 0",
            id="save-every-0",
        ),
        pytest.param(
            lambda: checkpoint.BackupAndRestore("backup", save_every=1.5),
            r"^save_every must be a positive integer, got 1.5",
            id="fractional-save-every",
        ),
        pytest.param(
            lambda: checkpoint.ModelCheckpoint("m.keras", save_freq=10),
            r"^ModelCheckpoint only supports save_freq='epoch', got save_freq=10",
            id="save-freq-batches",
        ),
        pytest.param(
            lambda: checkpoint.ModelCheckpoint("m.h5"),
            r"^ModelCheckpoint's filepath must end in '.keras' for a whole model",
            id="model-file-suffix",
        ),
        pytest.param(
            lambda: checkpoint.ModelCheckpoint("m.keras", save_weights_only=True),
            r"^ModelCheckpoint's filepath must end in '.weights.h5' for save_weights_only",
            id="weights-file-suffix",
        ),
        pytest.param(
            lambda: checkpoint.ModelCheckpoint("m.keras", mode="best"),
            r"^mode must be 'auto', 'min' or 'max', got 'best'",
            id="unknown-mode",
        ),
    ],
)
def test_callback_constructors_refuse(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_model_checkpoint_refuses_a_folder_as_filepath(tmp_path):
    (tmp_path / "best.keras").mkdir()
    with pytest.raises(ValueError, match=r"^ModelCheckpoint's filepath must be a file path, got"):
        checkpoint.ModelCheckpoint(tmp_path / "best.keras")


def _fit_with(callback, epochs=1):
    x, y, _ = _line()
    model = keras_mle.LinearRegression()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.fit(x, y, epochs=epochs, batch_size=N, verbose=0, callbacks=[callback])
    return model


def test_parameter_tensorboard_data_are_checked_at_train_begin(tmp_path):
    x, y, _ = _line()
    board = mle_callbacks.ParameterTensorBoard(tmp_path / "logs", (_with(x, 0, np.nan), y))
    with pytest.raises(ValueError, match=r"^x contains 1 NaN or Inf"):
        _fit_with(board)


def test_convergence_stopping_data_are_checked_at_train_begin():
    x, y, _ = _line()
    stopping = mle_callbacks.ConvergenceStopping(
        (x, y[:-1]), gradient_tolerance=1e-3, parameter_tolerance=None
    )
    with pytest.raises(ValueError, match=r"^x and y have different lengths: 20 and 19"):
        _fit_with(stopping)


def test_a_closed_form_naming_an_unknown_parameter_is_refused(tmp_path):
    x, y, _ = _line()
    board = mle_callbacks.ParameterTensorBoard(tmp_path / "logs", (x, y), closed_form={"slope": 1})
    with pytest.raises(ValueError, match=r"closed_form\['slope'\]"):
        _fit_with(board)


def test_model_checkpoint_placeholder_missing_from_the_logs(tmp_path):
    callback = checkpoint.ModelCheckpoint(tmp_path / "{epoch}-{val_mae:.3f}.keras")
    with pytest.raises(KeyError, match=r"ModelCheckpoint could not fill filepath=.* no 'val_mae'"):
        _fit_with(callback)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- save_model_atomic


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        pytest.param("m.h5", {}, r"^filepath must end in '.keras', got", id="h5-suffix"),
        pytest.param(
            "m.keras",
            {"metadata": {"epoch": 1}},
            r"^metadata can only be stored in a .weights.h5 file",
            id="metadata-in-a-keras-file",
        ),
        pytest.param(
            "m.weights.h5",
            {"weights_only": False},
            r"^filepath must end in '.keras', got",
            id="weights-name-for-a-whole-model",
        ),
    ],
)
def test_save_model_atomic_refuses_before_writing(tmp_path, name, kwargs, match):
    model = keras_mle.LinearRegression()
    model(data.noisy_line(n=4)[0][:2])
    with pytest.raises(ValueError, match=match):
        checkpoint.save_model_atomic(model, tmp_path / name, **kwargs)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- inference


@pytest.fixture(scope="module")
def ols_fit():
    """A float64 LinearRegression and a GaussianRegression at the OLS fit of the line."""
    x, y, _ = _line()
    exact = closed_form.ols(x, y)
    models = {}
    for cls, names in (
        (keras_mle.LinearRegression, ("m", "b")),
        (keras_mle.GaussianRegression, ("m", "b", "sigma")),
    ):
        model = cls(dtype="float64")
        model(x[:2])
        model.set_params({name: exact[name] for name in names})
        models[cls.__name__] = model
    return x, y, models


@pytest.fixture(scope="module")
def sample_fit():
    samples = data.gaussian_sample(n=50, seed=0)
    exact = closed_form.gaussian_mle(samples)
    model = keras_mle.GaussianMLE(dtype="float64")
    model(samples[:2])
    model.set_params({"mu": exact["mu"], "sigma": exact["sigma"]})
    return samples, model


_GROUPS = np.arange(N) % 4


@pytest.mark.parametrize(
    "model_name, kwargs, error, match",
    [
        pytest.param(
            "LinearRegression",
            {"convention": "bayes"},
            ValueError,
            r"^convention must be one of \('auto', 'ols', 'mle'\), got 'bayes'",
            id="unknown-convention",
        ),
        pytest.param(
            "LinearRegression",
            {"convention": "mle"},
            ValueError,
            r"^LinearRegression minimises squared error and has no noise parameter",
            id="mle-convention-for-squared-error",
        ),
        pytest.param(
            "LinearRegression",
            {"tol": 0},
            ValueError,
            r"^tol must be a number > 0, got 0",
            id="tol-0",
        ),
        pytest.param(
            "LinearRegression",
            {"cov_type": "HC4"},
            ValueError,
            r"^cov_type must be one of \('nonrobust', 'HC0', 'HC1', 'HC2', 'HC3', 'cluster'\)",
            id="unknown-cov-type",
        ),
        pytest.param(
            "LinearRegression",
            {"cov_type": "cluster"},
            ValueError,
            r"^groups is required with cov_type='cluster'",
            id="cluster-without-groups",
        ),
        pytest.param(
            "LinearRegression",
            {"cov_type": "HC0", "groups": _GROUPS},
            ValueError,
            r"^groups is only used with cov_type='cluster', not 'HC0'",
            id="groups-without-cluster",
        ),
        pytest.param(
            "LinearRegression",
            {"cov_type": "cluster", "groups": _GROUPS[:-1]},
            ValueError,
            r"^groups must have one label per row, shape \(20,\), got shape \(19,\)",
            id="groups-length",
        ),
        pytest.param(
            "LinearRegression",
            {"cov_type": "cluster", "groups": np.zeros(N)},
            ValueError,
            r"^groups: cov_type='cluster' needs at least 2 groups",
            id="one-group",
        ),
        pytest.param(
            "LinearRegression",
            {"cov_type": "cluster", "groups": np.r_[_GROUPS[:-1], np.nan]},
            ValueError,
            r"^groups contains NaN or Inf labels",
            id="nan-group-label",
        ),
        pytest.param(
            "GaussianRegression",
            {"cov_type": "HC2"},
            ValueError,
            r"^cov_type='HC2' needs leverages .* GaussianRegression under MLE conventions",
            id="hc2-under-mle",
        ),
        pytest.param(
            "LinearRegression",
            {"sample_weight": -np.ones(N)},
            ValueError,
            r"^sample_weight must be >= 0; got 20 negative",
            id="negative-weights",
        ),
        pytest.param(
            "LinearRegression",
            {"x": np.ones((N, 2))},
            ValueError,
            r"^x has 2 feature\(s\), but the model was built for 1",
            id="feature-count",
        ),
        pytest.param(
            "LinearRegression",
            {"x": _with(_line()[0], 3, np.nan)},
            ValueError,
            r"^x contains 1 NaN or Inf",
            id="nan-x",
        ),
        pytest.param(
            "LinearRegression",
            {"y": _line()[1][:-1]},
            ValueError,
            r"^x and y have different lengths: 20 and 19",
            id="lengths",
        ),
        pytest.param(
            "LinearRegression",
            {"y": None},
            ValueError,
            r"^y is required: LinearRegression fits targets",
            id="y-missing",
        ),
    ],
)
def test_inference_refuses(ols_fit, model_name, kwargs, error, match):
    x, y, models = ols_fit
    arguments = {"x": x, "y": y, **kwargs}
    with pytest.raises(error, match=match):
        keras_mle.inference(models[model_name], arguments.pop("x"), arguments.pop("y"), **arguments)


@pytest.mark.parametrize(
    "model, match",
    [
        pytest.param(
            keras.Sequential(),
            r"^model must be a keras_mle model, got Sequential",
            id="keras-model",
        ),
        pytest.param(
            keras_mle.LinearRegression(),
            r"^model is not built: fit it \(or call it on a batch\) first",
            id="unbuilt-model",
        ),
    ],
)
def test_inference_refuses_the_model(model, match):
    x, y, _ = _line()
    error = TypeError if isinstance(model, keras.Sequential) else ValueError
    with pytest.raises(error, match=match):
        keras_mle.inference(model, x, y)


@pytest.mark.parametrize(
    "call, match",
    [
        pytest.param(
            lambda r: r.conf_int(1.5), r"^level must be in \(0, 1\), got 1.5", id="level-1.5"
        ),
        pytest.param(
            lambda r: r.conf_int(method="bootstrap"),
            r"^method must be 'wald' or 'profile', got 'bootstrap'",
            id="unknown-method",
        ),
        pytest.param(
            lambda r: r.wald_test(np.eye(2)),
            r"^R must have shape \(r, 3\), one column per parameter",
            id="R-shape",
        ),
        pytest.param(
            lambda r: r.wald_test([0.0, 0.0, 1.0]),
            r"^R involves parameter\(s\) without a standard error .*\['sigma'\]",
            id="R-on-sigma-under-ols",
        ),
        pytest.param(
            lambda r: r.wald_test([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]]),
            r"^R has linearly dependent rows \(rank < 2\)",
            id="R-dependent-rows",
        ),
        pytest.param(
            lambda r: r.wald_test([1.0, 0.0, 0.0], q=[1.0, 2.0]),
            r"^q must be a finite number or have shape \(1,\), got \(2,\)",
            id="q-shape",
        ),
        pytest.param(
            lambda r: r.wald_test([np.nan, 0.0, 0.0]), r"^R contains NaN or Inf", id="R-nan"
        ),
        pytest.param(
            lambda r: r.get_prediction(np.ones((2, 3))),
            r"^x_new: x has 3 feature\(s\), but the model was built for 1",
            id="x-new-feature-count",
        ),
        pytest.param(
            lambda r: r.get_prediction(np.array([np.nan, 1.0])),
            r"^x_new: x contains 1 NaN or Inf",
            id="x-new-nan",
        ),
        pytest.param(
            lambda r: r.get_prediction(np.ones(2)).conf_int(alpha=1.5),
            r"^alpha must be in \(0, 1\), got 1.5",
            id="alpha-1.5",
        ),
    ],
)
def test_inference_result_methods_refuse(ols_fit, call, match):
    x, y, models = ols_fit
    result = keras_mle.inference(models["GaussianRegression"], x, y, convention="ols")
    with pytest.raises(ValueError, match=match):
        call(result)


@pytest.mark.parametrize(
    "call, match",
    [
        pytest.param(
            lambda m, s: keras_mle.inference(m, s, cov_type="HC0").conf_int(method="profile"),
            r"^method='profile' uses the likelihood, .* does not combine with cov_type='HC0'",
            id="profile-with-robust-covariance",
        ),
        pytest.param(
            lambda m, s: keras_mle.inference(m, s).conf_int(0.0, method="profile"),
            r"^level must be in \(0, 1\), got 0.0",
            id="profile-level-0",
        ),
        pytest.param(
            lambda m, s: keras_mle.inference(m, s).rsquared,
            r"^GaussianMLE is not a Gaussian linear model",
            id="rsquared-of-a-sample-model",
        ),
        pytest.param(
            lambda m, s: keras_mle.inference(m, s, s),
            r"^y must be None: GaussianMLE fits a sample",
            id="y-given-to-a-sample-model",
        ),
        pytest.param(
            lambda m, s: keras_mle.likelihood_ratio_test(m, m, s),
            r"^full has 2 free parameters and restricted 2: not nested that way round; pass df",
            id="lrt-not-nested",
        ),
        pytest.param(
            lambda m, s: keras_mle.likelihood_ratio_test(m, m, s, df=0),
            r"^df must be a positive integer, got 0",
            id="lrt-df-0",
        ),
        pytest.param(
            lambda m, s: refine(m, s, max_steps=0),
            r"^max_steps must be a positive integer, got 0",
            id="refine-max-steps-0",
        ),
        pytest.param(
            lambda m, s: refine(m, s, tol=-1.0),
            r"^tol must be a number > 0, got -1.0",
            id="refine-negative-tol",
        ),
        pytest.param(
            lambda m, s: refine(m, _with(s, 0, np.inf)),
            r"^samples contains 1 NaN or Inf",
            id="refine-inf-sample",
        ),
        pytest.param(
            lambda m, s: refine(keras_mle.LinearRegression(dtype="float64"), s, s),
            r"^model is not built",
            id="refine-unbuilt-model",
        ),
    ],
)
def test_sample_inference_refuses(sample_fit, call, match):
    samples, model = sample_fit
    with pytest.raises(ValueError, match=match):
        call(model, samples)


@pytest.mark.parametrize(
    "call, match",
    [
        pytest.param(
            lambda: distributions.normal_ppf(1.0),
            r"^q must be a probability in \(0, 1\), got 1.0",
            id="q-1",
        ),
        pytest.param(lambda: distributions.t_ppf(0.9, 0), r"^df must be > 0, got 0", id="t-df-0"),
        pytest.param(
            lambda: distributions.chi2_sf(1.0, np.nan),
            r"^df must be > 0, got nan",
            id="chi2-df-nan",
        ),
    ],
)
def test_distributions_refuse(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------- files


@pytest.mark.parametrize(
    "files, kwargs, match",
    [
        pytest.param({}, {}, r"^pattern: no file matches", id="no-file-matches"),
        pytest.param({"a.csv": ""}, {}, r"a.csv: empty file, expected a header line", id="empty"),
        pytest.param({"a.csv": "a,y\n"}, {}, r"\*.csv: no data rows", id="header-only"),
        pytest.param(
            {"1.csv": "a,y\n1,2\n", "2.csv": "y,a\n1,2\n"},
            {},
            r"2.csv: its header differs",
            id="headers-differ",
        ),
        pytest.param(
            {"a.csv": "a,a\n1,2\n"}, {"y": None}, r"duplicate column name\(s\) \['a'\]", id="dup"
        ),
        pytest.param(
            {"a.csv": "a,y\n1,2\n"},
            {"sample_weight": "w"},
            r"^column\(s\) \['w'\] not found in .*a.csv \(columns: \['a', 'y'\]\)",
            id="weight-column-missing",
        ),
    ],
)
def test_csv_dataset_refuses_bad_files(tmp_path, files, kwargs, match):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    arguments = {"x": ["a"], "y": "y", "batch_size": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        data.csv_dataset(str(tmp_path / "*.csv"), **arguments)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        pytest.param(
            {"rows_per_shard": 0}, r"^rows_per_shard must be a positive integer", id="rows-0"
        ),
        pytest.param(
            {"dtype": "int8"}, r"^dtype must be float32 or float64, got 'int8'", id="int8"
        ),
        pytest.param({"y": np.ones(N - 1)}, r"^x and y have different lengths", id="lengths"),
        pytest.param(
            {"sample_weight": -np.ones(N)}, r"^sample_weight must be >= 0", id="negative-weights"
        ),
    ],
)
def test_write_shards_refuses_before_writing(tmp_path, kwargs, match):
    x, y, _ = _line()
    arguments = {"y": y, **kwargs}
    with pytest.raises(ValueError, match=match):
        data.write_shards(tmp_path / "s", x, **arguments)
    assert list(tmp_path.iterdir()) == []


def test_shard_dataset_refuses_a_missing_manifest(tmp_path):
    with pytest.raises(ValueError, match=r"^manifest: .*none.json' is not a shard manifest"):
        data.shard_dataset(tmp_path / "none.json", batch_size=2)


def test_shard_dataset_refuses_batch_size_0(tmp_path):
    x, y, _ = _line()
    manifest = data.write_shards(tmp_path / "s", x, y)
    with pytest.raises(ValueError, match=r"^batch_size must be a positive integer, got 0"):
        data.shard_dataset(manifest, batch_size=0)


# ---------------------------------------------------------------- set_params: values


def _built_line():
    model = keras_mle.LinearRegression()
    model(data.noisy_line(n=4)[0][:2])
    return model


@pytest.mark.parametrize(
    "make, params, error, match",
    [
        pytest.param(
            keras_mle.GaussianMLE,
            {"sigma": -1.0},
            ValueError,
            r"^params\['sigma'\] must be > 0 \('sigma' is positive",
            id="negative-sigma",
        ),
        pytest.param(
            keras_mle.GaussianMLE,
            {"sigma": 0.0},
            ValueError,
            r"^params\['sigma'\] must be > 0",
            id="zero-sigma",
        ),
        pytest.param(
            keras_mle.GaussianMLE,
            {"mu": np.inf},
            ValueError,
            r"^params\['mu'\] must be finite, got inf",
            id="inf-mu",
        ),
        pytest.param(
            _built_line,
            {"m": [1.0, 2.0]},
            ValueError,
            r"^params\['m'\] has shape \(2,\), but 'm' has shape \(1,\)",
            id="wrong-shape",
        ),
        pytest.param(
            _built_line,
            {"b": "one"},
            TypeError,
            r"^params\['b'\] must be a number or an array of numbers, got 'one'",
            id="string-value",
        ),
        pytest.param(
            _built_line,
            [1.0],
            TypeError,
            r"^params must be a dict \{parameter name: value\}, got list",
            id="not-a-dict",
        ),
        pytest.param(
            keras_mle.LinearRegression,
            {"b": 1.0},
            ValueError,
            r"^params: LinearRegression is not built yet, .* fit it, call model.build",
            id="unbuilt",
        ),
    ],
)
def test_set_params_refuses_bad_values(make, params, error, match):
    model = make()
    before = model.get_weights()
    with pytest.raises(error, match=match):
        model.set_params(params)
    _assert_untouched(model, before)


# ---------------------------------------------------------------- callbacks argument


def _callbacks_entry(entry, callbacks):
    x, y, _ = _line()
    model = _built_line()
    optimizer = keras.optimizers.SGD(0.1)
    model.compile(optimizer=optimizer)
    before = model.get_weights()
    try:
        if entry == "fit":
            model.fit(x, y, epochs=1, verbose=0, callbacks=callbacks)
        elif entry == "evaluate":
            model.evaluate(x, y, verbose=0, callbacks=callbacks)
        elif entry == "predict":
            model.predict(x, verbose=0, callbacks=callbacks)
        else:
            loops.train(
                model, x, y, epochs=1, batch_size=N, optimizer=optimizer, callbacks=callbacks
            )
    finally:
        _assert_untouched(model, before)
        assert int(optimizer.iterations) == 0


@pytest.mark.parametrize(
    "callbacks, match",
    [
        pytest.param(
            keras.callbacks.History(),
            r"^callbacks must be a list of keras.callbacks.Callback objects, got History "
            r"\(wrap it in a list",
            id="not-a-list",
        ),
        pytest.param(
            [keras.callbacks.History(), "history"],
            r"^callbacks\[1\] must be a keras.callbacks.Callback, got str",
            id="not-a-callback",
        ),
    ],
)
@pytest.mark.parametrize("entry", ["fit", "evaluate", "predict", "loops.train"])
def test_callbacks_must_be_a_list_of_callbacks(entry, callbacks, match):
    with pytest.raises(TypeError, match=match):
        _callbacks_entry(entry, callbacks)


# ---------------------------------------------------------------- loops.train: model, optimizer


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        pytest.param(
            {"optimizer": None}, TypeError, r"^optimizer is required: pass a keras", id="no-opt"
        ),
        pytest.param(
            {"optimizer": "nope"},
            ValueError,
            r"^optimizer must be a keras.optimizers.Optimizer or the name of one .*'nope'",
            id="unknown-optimizer",
        ),
        pytest.param(
            {"model": keras.Sequential()},
            TypeError,
            r"^model must be a keras_mle model \(a keras_mle.MaximumLikelihoodModel\), got "
            r"Sequential",
            id="keras-model",
        ),
        pytest.param(
            {"shuffle": "yes"},
            ValueError,
            r"^shuffle must be True, False or 'batch' \(the order of whole batches\), got 'yes'",
            id="shuffle",
        ),
    ],
)
def test_loops_train_refuses_the_model_and_optimizer(kwargs, error, match):
    x, y, _ = _line()
    model = keras_mle.LinearRegression()
    arguments = {"model": model, "epochs": 1, "batch_size": 5, "optimizer": "sgd", **kwargs}
    with pytest.raises(error, match=match):
        loops.train(arguments.pop("model"), x, y, verbose=0, **arguments)
    assert not model.built and getattr(model, "optimizer", None) is None


# ---------------------------------------------------------------- fit: shuffle, validation


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        pytest.param(
            {"shuffle": "yes"},
            ValueError,
            r"^shuffle must be True, False or 'batch' \(the order of whole batches\), got 'yes'",
            id="yes",
        ),
        pytest.param(
            {"shuffle": 3},
            TypeError,
            r"^shuffle must be True, False or 'batch' \(the order of whole batches\), got 3",
            id="batch",
        ),
        pytest.param(
            {"validation_split": 0.2, "validation_data": "both"},
            ValueError,
            r"^validation_split=0.2 and validation_data are both given: Keras would use "
            r"validation_data and silently ignore validation_split; this package refuses",
            id="split-and-data",
        ),
    ],
)
def test_fit_refuses_ambiguous_arguments(kwargs, error, match):
    x, y, _ = _line()
    if kwargs.get("validation_data") == "both":
        kwargs = {**kwargs, "validation_data": (x, y)}
    model = keras_mle.LinearRegression()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    with pytest.raises(error, match=match):
        model.fit(x, y, epochs=1, verbose=0, **kwargs)
    assert not model.built


# ---------------------------------------------------------------- models' dtype


@pytest.mark.parametrize("dtype", ["int32", "bool", "float16", "bfloat16"])
@pytest.mark.parametrize(
    "cls", [keras_mle.GaussianMLE, keras_mle.LinearRegression, keras_mle.GaussianRegression]
)
def test_models_refuse_a_dtype_that_is_not_float32_or_float64(cls, dtype):
    match = r"^dtype must be 'float32', 'float64' or a mixed precision policy"
    if dtype in ("float16", "bfloat16"):
        match += rf".*use the mixed policy 'mixed_{dtype}'"
    with pytest.raises(ValueError, match=match):
        cls(dtype=dtype)


def test_models_take_float32_float64_and_mixed_policies():
    for dtype in ("float32", "float64", "mixed_float16", "mixed_bfloat16"):
        assert keras_mle.GaussianMLE(dtype=dtype).built
    with pytest.raises(ValueError, match=r"^dtype: Cannot convert 'half'"):
        keras_mle.LinearRegression(dtype="half")


# ---------------------------------------------------------------- streams: first batch


class _XBatches(keras.utils.PyDataset):
    """Two batches of `(x, y)` (or `x` alone) with `features` columns."""

    def __init__(self, features=1, with_y=True, batches=2):
        super().__init__()
        self.features, self.with_y, self.batches = features, with_y, batches

    def __len__(self):
        return self.batches

    def __getitem__(self, index):
        x = np.ones((10, self.features), np.float32)
        return (x, np.arange(10.0, dtype=np.float32)) if self.with_y else x


def _generator(features=1, with_y=True):
    for _ in range(2):
        x = np.ones((10, features), np.float32)
        yield (x, np.arange(10.0, dtype=np.float32)) if with_y else (x,)


def _stream_cases():
    x, y, _ = _line()
    tf_data = tf.data.Dataset
    feature = r"^x has 3 feature\(s\), but the model was built for 1"
    no_y = r"^y is required: LinearRegression fits targets y given x, so each element .* must be "
    no_y += r"\(x, y\) or \(x, y, sample_weight\)"
    yield "generator-3-features", lambda: _generator(3), ValueError, feature
    yield "pydataset-3-features", lambda: _XBatches(3), ValueError, feature
    yield "dataset-x-only", lambda: tf_data.from_tensor_slices(x).batch(5), ValueError, no_y
    yield "pydataset-x-only", lambda: _XBatches(with_y=False), ValueError, no_y
    yield "generator-x-only", lambda: _generator(with_y=False), ValueError, no_y
    strings = np.array(["a"] * N)
    yield (
        "dataset-strings",
        lambda: tf_data.from_tensor_slices((strings, y)).batch(5),
        TypeError,
        r"^x must be numeric, got batches of dtype string",
    )
    yield (
        "dataset-empty",
        lambda: tf_data.from_tensor_slices((x[:0], y[:0])).batch(5),
        ValueError,
        r"^x: the dataset is empty \(its cardinality is 0\)",
    )
    yield (
        "pydataset-empty",
        lambda: _XBatches(batches=0),
        ValueError,
        r"^x: the PyDataset is empty \(len 0\)",
    )


STREAM_CASES = [pytest.param(*case[1:], id=case[0]) for case in _stream_cases()]


@pytest.mark.parametrize("make, error, match", STREAM_CASES)
def test_a_stream_is_checked_before_any_step(make, error, match):
    model = _built_line()
    optimizer = keras.optimizers.SGD(0.1)
    model.compile(optimizer=optimizer)
    before = model.get_weights()
    with pytest.raises(error, match=match):
        model.fit(make(), epochs=1, verbose=0)
    _assert_untouched(model, before)
    assert int(optimizer.iterations) == 0


# ---------------------------------------------------------------- files, folders, values


def test_save_model_atomic_refuses_a_folder_and_a_file_in_the_way(tmp_path):
    model = _built_line()
    (tmp_path / "folder.keras").mkdir()
    with pytest.raises(ValueError, match=r"^filepath: .*folder.keras' is an existing folder"):
        checkpoint.save_model_atomic(model, tmp_path / "folder.keras")
    (tmp_path / "file").write_text("kept")
    with pytest.raises(ValueError, match=r"^filepath: the folder of .* cannot be created: .*file"):
        checkpoint.save_model_atomic(model, tmp_path / "file" / "m.keras")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder.keras"]
    assert list((tmp_path / "folder.keras").iterdir()) == []


def test_save_model_atomic_refuses_a_non_finite_state_and_keeps_the_file(tmp_path):
    model = _built_line()
    path = checkpoint.save_model_atomic(model, tmp_path / "m.keras")
    saved = (tmp_path / "m.keras").read_bytes()
    model.set_params({"b": 1.0})
    model.weights[-1].assign(np.nan)
    with pytest.raises(ValueError, match=r"^model: its state is not finite \(NaN or Inf in .*b\)"):
        checkpoint.save_model_atomic(model, path)
    assert (tmp_path / "m.keras").read_bytes() == saved
    assert [p.name for p in tmp_path.iterdir()] == ["m.keras"]


@pytest.mark.parametrize(
    "make, error, match",
    [
        pytest.param(
            lambda p: checkpoint.ModelCheckpoint(p / "m.keras", initial_value_threshold="low"),
            TypeError,
            r"^initial_value_threshold must be a number, got 'low'",
            id="threshold-string",
        ),
        pytest.param(
            lambda p: checkpoint.ModelCheckpoint(p / "m.keras", monitor=None),
            TypeError,
            r"^monitor must be the name of a logged value, got None",
            id="monitor-none",
        ),
        pytest.param(
            lambda p: checkpoint.ModelCheckpoint(3),
            TypeError,
            r"^filepath must be a non-empty path \(str or os.PathLike\), got 3",
            id="filepath-int",
        ),
        pytest.param(
            lambda p: checkpoint.BackupAndRestore(None),
            TypeError,
            r"^backup_dir must be a non-empty path \(str or os.PathLike\), got None",
            id="backup-dir-none",
        ),
        pytest.param(
            lambda p: checkpoint.BackupAndRestore(p / "a_file"),
            ValueError,
            r"^backup_dir: .*a_file' is a file, not a folder",
            id="backup-dir-is-a-file",
        ),
        pytest.param(
            lambda p: mle_callbacks.ParameterTensorBoard(p / "a_file"),
            ValueError,
            r"^log_dir: .*a_file' is a file, not a folder",
            id="log-dir-is-a-file",
        ),
        pytest.param(
            lambda p: mle_callbacks.ParameterTensorBoard(p, run="a_file"),
            ValueError,
            r"^log_dir: .*a_file' is a file, not a folder",
            id="run-folder-is-a-file",
        ),
        pytest.param(
            lambda p: loops.train(
                keras_mle.LinearRegression(),
                *_line()[:2],
                epochs=1,
                batch_size=N,
                optimizer="sgd",
                checkpoint_dir=p / "a_file" / "backup",
            ),
            ValueError,
            r"^checkpoint_dir: .*backup' is a file, not a folder \(.*a_file' is a file\)",
            id="checkpoint-dir-under-a-file",
        ),
    ],
)
def test_paths_and_values_of_callbacks_are_named(tmp_path, make, error, match):
    (tmp_path / "a_file").write_text("kept")
    with pytest.raises(error, match=match):
        make(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["a_file"]


def test_a_backup_dir_replaced_by_a_file_is_refused_before_any_step(tmp_path):
    backup = checkpoint.BackupAndRestore(tmp_path / "backup")
    (tmp_path / "backup").write_text("kept")
    x, y, _ = _line()
    model = keras_mle.LinearRegression()
    optimizer = keras.optimizers.SGD(0.1)
    model.compile(optimizer=optimizer)
    with pytest.raises(ValueError, match=r"^backup_dir: .*backup' is a file, not a folder"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[backup])
    assert int(optimizer.iterations) == 0
    assert (tmp_path / "backup").read_text() == "kept"


# ---------------------------------------------------------------- inference: models, R, q


@pytest.mark.parametrize("which", ["full", "restricted"])
def test_likelihood_ratio_test_refuses_an_object_that_is_not_a_model(ols_fit, which):
    x, y, models = ols_fit
    pair = {"full": models["GaussianRegression"], "restricted": models["LinearRegression"]}
    pair[which] = object()
    with pytest.raises(TypeError, match=rf"^{which} must be a fitted keras_mle model, got object"):
        keras_mle.likelihood_ratio_test(pair["full"], pair["restricted"], x, y)


@pytest.mark.parametrize(
    "call, match",
    [
        pytest.param(
            lambda r: r.wald_test("m = 0"),
            r"^R must be a \(3,\) row or an \(r, 3\) matrix of numbers, got 'm = 0'",
            id="R-string",
        ),
        pytest.param(
            lambda r: r.wald_test([1.0, 0.0, 0.0], q="zero"),
            r"^q must be a number or \(1,\) numbers, got 'zero'",
            id="q-string",
        ),
    ],
)
def test_wald_test_refuses_text(ols_fit, call, match):
    x, y, models = ols_fit
    result = keras_mle.inference(models["GaussianRegression"], x, y, convention="ols")
    with pytest.raises(TypeError, match=match):
        call(result)


# ---------------------------------------------------------------- csv cells, read in tf.data


@pytest.mark.parametrize(
    "text, match",
    [
        pytest.param(
            "a,y\n1,2\noops,3\n",
            r"bad.csv line 3, column \\'a\\': \\'oops\\' is not a number",
            id="text",
        ),
        pytest.param(
            "a,y\n1,2\nnan,3\n",
            r"column\W+a\W+has a missing or NaN value in .*bad.csv \(pass missing=",
            id="nan",
        ),
    ],
)
def test_a_bad_csv_cell_stops_reading_naming_file_line_and_column(tmp_path, text, match):
    (tmp_path / "bad.csv").write_text(text)
    dataset = data.csv_dataset(str(tmp_path / "bad.csv"), x=["a"], y="y", batch_size=2)
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        list(dataset)


def test_a_generator_into_an_unbuilt_model_is_told_to_build_it():
    model = keras_mle.LinearRegression()
    optimizer = keras.optimizers.SGD(0.1)
    model.compile(optimizer=optimizer)
    with pytest.raises(ValueError, match=r"^x: LinearRegression is not built, and a generator's"):
        model.fit(_generator(), epochs=1, verbose=0)
    assert int(optimizer.iterations) == 0
