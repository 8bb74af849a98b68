"""The checks of the trainer's arguments and of a dataset's element spec, before any work.

Every entry point that trains or evaluates (`fit`, `evaluate`, `predict`, the loops, the
multi-worker `fit`) checks its arguments here, so that one bad value gets one message however
it was passed.
"""

from __future__ import annotations

import dataclasses
import math
import typing

import keras
import numpy as np
import tensorflow as tf

from keras_mle import data as data_lib


def watches_batches(callbacks) -> bool:
    """Whether a callback acts between the batches of an epoch (so each must be its own call).

    Keras' `TensorBoard` overrides the batch hooks but, with `update_freq="epoch"`, logs
    nothing in them (a `profile_batch` then profiles the epoch's one call). Which way the
    epochs run changes only what batch hooks see: the rows' order and the steps are the same.
    """
    for callback in callbacks or []:
        if isinstance(callback, keras.callbacks.TensorBoard):
            if callback.update_freq == "epoch":
                continue
            return True
        for hook in BATCH_HOOKS:
            if getattr(type(callback), hook, None) is not getattr(keras.callbacks.Callback, hook):
                return True
    return False


def flat_targets(y):
    # (B, 1) targets against (B,) predictions would broadcast to (B, B): flatten them.
    if y is not None and len(y.shape) == 2 and y.shape[1] == 1:
        y = y[:, 0]
    return y


def x_spec(model, spec):
    """The inputs' part of a dataset's element spec: a `tf.TensorSpec`, or for a network a
    dict of them (named inputs)."""
    x_spec, _, _ = keras.utils.unpack_x_y_sample_weight(spec)
    named = (
        model.input_ndim is None
        and isinstance(x_spec, typing.Mapping)
        and len(x_spec) > 0
        and all(isinstance(s, tf.TensorSpec) for s in x_spec.values())
    )
    if not (isinstance(x_spec, tf.TensorSpec) or named):
        raise ValueError(
            f"{model.x_name}: {type(model).__name__} takes one input tensor, got {x_spec}."
        )
    return dict(x_spec) if named else x_spec


def spec_shape(x_spec, skip=0):
    """The shape of a batch of `x_spec` (a dict of them for named inputs), without the first
    `skip` dimensions (the batch stack of an `EpochBatches`)."""
    if isinstance(x_spec, typing.Mapping):
        return {key: spec_shape(s, skip) for key, s in x_spec.items()}
    return x_spec.shape[skip:]


def spec_example(x_spec, skip=0):
    """One row of zeros as a batch of `x_spec` (a dict of them for named inputs)."""
    if isinstance(x_spec, typing.Mapping):
        return {key: spec_example(s, skip) for key, s in x_spec.items()}
    return tf.zeros([1, *(d or 1 for d in x_spec.shape[skip + 1 :])], x_spec.dtype)


def spec_dtype(x_spec):
    return tf.nest.flatten(x_spec)[0].dtype


def check_dtype(dtype):
    """Raises a `ValueError` naming `dtype` unless the model's variables would be float32/64.

    `dtype` is a model's `dtype` argument (`None`: the global policy): `"float32"`,
    `"float64"`, or a mixed precision policy (`"mixed_float16"`, `"mixed_bfloat16"`), whose
    variables, and so the likelihood, stay in float32. Integer and bool dtypes cannot hold the
    parameters, and float16/bfloat16 variables lose the likelihood to rounding.
    """
    try:
        policy = keras.dtype_policies.get(dtype)
    except (TypeError, ValueError) as error:
        raise ValueError(f"dtype: {error}") from None
    if policy.variable_dtype not in ("float32", "float64"):
        name = getattr(policy, "name", dtype)
        hint = (
            f"; for half precision use the mixed policy 'mixed_{policy.variable_dtype}' "
            "(float32 variables, half-precision compute)"
            if policy.variable_dtype in ("float16", "bfloat16")
            else ""
        )
        raise ValueError(
            f"dtype must be 'float32', 'float64' or a mixed precision policy ('mixed_float16', "
            f"'mixed_bfloat16'), got {name!r}: the parameters and the likelihood need float32 "
            f"or float64 variables{hint}."
        )


def py_dataset_spec(model, dataset):
    """The element spec of a `keras.utils.PyDataset`, from its first batch (`dataset[0]`).

    A PyDataset is indexed, so reading batch 0 consumes nothing. Non-numeric parts get a
    `tf.string` spec, which the checks of `check_stream` then refuse naming the part.
    """
    if dataset.num_batches == 0:
        raise ValueError(
            f"{model.x_name}: the PyDataset is empty (len 0): there is no batch to fit or evaluate."
        )
    first = dataset[0]
    if isinstance(first, list):
        first = tuple(first)

    def spec_of(part):
        if part is None:
            return None
        try:
            array = np.asarray(part)
        except (TypeError, ValueError):
            return tf.TensorSpec(None, tf.string)
        dtype = tf.as_dtype(array.dtype) if array.dtype.kind in "biuf" else tf.string
        shape = (None, *array.shape[1:]) if array.ndim else ()
        return tf.TensorSpec(shape, dtype)

    return tf.nest.map_structure(spec_of, first)


def is_in_memory(x):
    return not isinstance(x, (tf.data.Dataset, keras.utils.PyDataset)) and not hasattr(
        x, "__next__"
    )


def check_callbacks(callbacks):
    """Raises a `TypeError` naming `callbacks` unless it is `None` or a list of callbacks."""
    if callbacks is None:
        return
    if not isinstance(callbacks, (list, tuple)):
        hint = (
            f" (wrap it in a list: callbacks=[{type(callbacks).__name__}(...)])"
            if isinstance(callbacks, keras.callbacks.Callback)
            else ""
        )
        raise TypeError(
            "callbacks must be a list of keras.callbacks.Callback objects, got "
            f"{type(callbacks).__name__}{hint}."
        )
    for index, callback in enumerate(callbacks):
        if not isinstance(callback, keras.callbacks.Callback):
            raise TypeError(
                f"callbacks[{index}] must be a keras.callbacks.Callback, got "
                f"{type(callback).__name__} {callback!r}."
            )


def check_initial_epoch(value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"initial_epoch must be an integer >= 0, got {value!r}.")
    return int(value)


def check_validation_split(value):
    number = data_lib.check_finite_scalar("validation_split", value)
    if not 0.0 <= number < 1.0:
        raise ValueError(f"validation_split must be in [0, 1), got {value!r}.")
    return number


def default_strategy(model) -> bool:
    """Whether `model` trains under no `tf.distribute` strategy (one device, no replicas).

    The in-graph epoch of `train_arrays` applies the optimizer inside a `tf.while_loop`, which a
    strategy's cross-replica `merge_call` does not allow, even a `MirroredStrategy` of one device.
    """
    with model.distribute_strategy.scope():
        return not tf.distribute.has_strategy()


def structure(x):
    """A batch as networks take it: an epoch type's (immutable) mapping as a plain dict."""
    return dict(x) if isinstance(x, typing.Mapping) else x


def split_rows(arrays, fraction):
    """Keras' `validation_split`: the last `fraction` of the rows, before any shuffling."""
    n = data_lib.num_rows(arrays[0])
    at = int(math.floor(n * (1.0 - fraction)))
    if at == 0 or at == n:
        raise ValueError(
            f"validation_split={fraction!r} leaves {at} training and {n - at} validation rows "
            f"of {n}: both need at least one."
        )
    train = tuple(data_lib.take_rows(a, slice(None, at)) for a in arrays)
    validation = tuple(data_lib.take_rows(a, slice(at, None)) for a in arrays)
    return train, validation


BATCH_HOOKS = ("on_train_batch_begin", "on_train_batch_end", "on_batch_begin", "on_batch_end")


@dataclasses.dataclass(frozen=True)
class FitArguments:
    """The arguments of `fit` that say how to train, checked once for every entry point.

    `Trainer.fit` and the multi-worker `fit` build it with `FitArguments.checked(...)`, which
    raises, naming the argument, before any work.
    """

    batch_size: int | None
    epochs: int
    callbacks: list
    validation_split: float
    shuffle: bool | str
    initial_epoch: int
    steps_per_epoch: int | None
    validation_steps: int | None
    validation_batch_size: int | None
    validation_freq: int

    @classmethod
    def checked(
        cls,
        *,
        batch_size,
        epochs,
        callbacks,
        validation_split,
        validation_data,
        shuffle,
        class_weight,
        initial_epoch,
        steps_per_epoch,
        validation_steps,
        validation_batch_size,
        validation_freq,
    ) -> FitArguments:
        """The checked arguments; raises `TypeError`/`ValueError` naming a bad one."""
        check_callbacks(callbacks)
        if class_weight is not None:
            raise ValueError(
                "class_weight is not supported by likelihood models: weight the samples with "
                "sample_weight."
            )
        validation_split = check_validation_split(validation_split)
        if validation_split and validation_data is not None:
            raise ValueError(
                f"validation_split={validation_split!r} and validation_data are both given: "
                "Keras would use validation_data and silently ignore validation_split; this "
                "package refuses the ambiguous pair. Give one of them."
            )
        data_lib.check_positive_int("epochs", epochs)
        data_lib.check_positive_int("validation_freq", validation_freq)
        return cls(
            batch_size=data_lib.check_optional_positive_int("batch_size", batch_size),
            epochs=int(epochs),
            callbacks=list(callbacks or []),
            validation_split=validation_split,
            shuffle=data_lib.check_shuffle(shuffle),
            initial_epoch=check_initial_epoch(initial_epoch),
            steps_per_epoch=data_lib.check_optional_positive_int(
                "steps_per_epoch", steps_per_epoch
            ),
            validation_steps=data_lib.check_optional_positive_int(
                "validation_steps", validation_steps
            ),
            validation_batch_size=data_lib.check_optional_positive_int(
                "validation_batch_size", validation_batch_size
            ),
            validation_freq=int(validation_freq),
        )

    @property
    def rows_per_batch(self) -> int:
        """`batch_size`, or Keras' default of 32."""
        return self.batch_size or 32

    @property
    def rows_per_validation_batch(self) -> int:
        """`validation_batch_size`, else `batch_size`, else 32."""
        return self.validation_batch_size or self.rows_per_batch


def check_epoch_ends(name: str, x, steps_per_epoch) -> None:
    """Refuses a dataset that repeats forever when no `steps_per_epoch` says where epochs end.

    Keras would never leave the first epoch: no callback, validation or backup would run.
    """
    if steps_per_epoch is not None or not isinstance(x, tf.data.Dataset):
        return
    if int(x.cardinality()) == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            f"{name}: the dataset repeats forever, so an epoch would never end; give "
            "steps_per_epoch (the batches of one epoch), or drop the .repeat()."
        )
