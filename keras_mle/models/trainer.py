"""The trainer under every keras_mle model: `fit`, `evaluate`, `predict` and their data paths.

`Trainer` is the `keras.Model` that `MaximumLikelihoodModel` builds on, as Keras' own model
builds on its trainer. It checks the arguments (`keras_mle.models.arguments`), chooses the data
path (whole in-graph epochs for in-memory arrays on one device, Keras' batches otherwise, the
package's own loop under a `MultiWorkerMirroredStrategy`), and runs Keras' steps. It talks to
the model through a small protocol, which `MaximumLikelihoodModel` implements:

- `apply_step(x, y, sample_weight, *, checked)`: one checked optimizer step on a batch;
- `evaluation_step(x, y, sample_weight)`: the loss and metrics of a batch, without a step;
- `check_data(x, y, sample_weight)` and `check_inputs(x)`: in-memory data checked and cast;
- `unpack(data, *, in_step)` and `components(x, y, sample_weight)`: a dataset element's
  parts, and the element layout of in-memory arrays;
- `train_input_check`, `parameter_logs()`, `metric_results()`, `x_name`, `takes_targets`,
  `input_ndim`, `check_input_shape(shape)`, `check_feature_count(shape)`.
"""

from __future__ import annotations

import warnings

import keras
import tensorflow as tf

from keras_mle import checkpoint, distributed
from keras_mle import data as data_lib
from keras_mle import epochs as epochs_lib
from keras_mle.models import arguments
from keras_mle.models.input_checks import InputCheckCallback

__all__ = ["Trainer", "XLA_ROWS"]

#: Rows from which `fit(x, y)` compiles its epochs with XLA when `compile(jit_compile="auto")`.
XLA_ROWS = 100_000


class Trainer(keras.Model):
    """`fit`, `evaluate` and `predict` over the model's protocol (see the module docstring)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        #: Whether `compile` was given `jit_compile="auto"` (set by `compile`), under which `fit`
        #: compiles large in-memory epochs with XLA.
        self._auto_jit = False
        # The train functions of the two compilations `fit` chooses between (see `XLA_ROWS`),
        # kept so that a fit after another traces and compiles nothing again; `{}` after
        # `compile` or `adapt` (`reset_compiled_functions`).
        self._train_functions = {}

    def compile(
        self,
        optimizer="rmsprop",
        loss=None,
        loss_weights=None,
        metrics=None,
        weighted_metrics=None,
        run_eagerly=False,
        steps_per_execution=1,
        jit_compile="auto",
        auto_scale_loss=True,
    ):
        """`keras.Model.compile` without a `loss`: the model's likelihood is its loss.

        `metrics` (and `weighted_metrics`) are computed on the model's mean prediction
        (`predict`) against the targets `y` (for a model of a sample: the sample).
        """
        for name, value in (("loss", loss), ("loss_weights", loss_weights)):
            if value is not None:
                raise ValueError(
                    f"{name}: {type(self).__name__} is fitted by its own likelihood "
                    f"(sample_loss), so compile() takes no {name}. Pass metrics=[...] to track "
                    "other measures of the fit."
                )
        # "auto" lets `fit` compile large in-memory epochs with XLA (see `XLA_ROWS`).
        self._auto_jit = jit_compile == "auto"
        self._train_functions = {}
        super().compile(
            optimizer=optimizer,
            metrics=metrics,
            weighted_metrics=weighted_metrics,
            run_eagerly=run_eagerly,
            steps_per_execution=steps_per_execution,
            jit_compile=jit_compile,
            auto_scale_loss=auto_scale_loss,
        )

    def compile_from_config(self, config):
        # Keras skips this for models that override compile(); these models' compile() takes
        # the same arguments, so a loaded `.keras` model is compiled (optimizer state included).
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def reset_compiled_functions(self) -> None:
        """Drops the traced train, test and predict functions (their constants are stale)."""
        self.train_function = self.test_function = self.predict_function = None
        self._train_functions = {}

    def train_step(self, data):
        if isinstance(data, data_lib.EpochBatches):
            if self.distribute_strategy.num_replicas_in_sync > 1:
                # Optimizer steps inside a tf.while_loop cannot merge_call across replicas.
                raise ValueError(
                    "x: keras_mle.data.epoch_dataset is a single-device fast path; under a "
                    "tf.distribute strategy pass the arrays to fit(x, y) instead."
                )
            self.train_batches(data)
        elif isinstance(data, data_lib.EpochArrays):
            self.train_arrays(data)
        else:
            self.apply_step(*self.unpack(data))
        return {**self.metric_results(), **self.parameter_logs()}

    def train_arrays(self, epoch):
        """One epoch of a `keras_mle.data.EpochArrays`: an `apply_step` per batch, in-graph.

        What plain `fit(x, y)` runs on one device: the batches are sliced from the arrays (in
        the epoch's order of batches under `shuffle="batch"`), or gathered through the epoch's
        permutation of the rows under `shuffle=True`, inside a `tf.while_loop`, so the epoch is
        one compiled call. The arrays were checked before training, so the steps
        do not examine their batches (`checked=True`); the loop ends at a refused step.
        """
        n = tf.nest.flatten(epoch.x)[0].shape[0]
        size = epoch.batch_size
        full, last = divmod(n, size)

        def sliced(a, start, count):
            if epoch.order is None:
                begin = tf.concat([[start], tf.zeros([a.shape.rank - 1], tf.int32)], 0)
                return tf.slice(a, begin, [count, *a.shape[1:]])
            return tf.gather(a, tf.slice(epoch.order, [start], [count]))

        def full_batch(a, index):
            # Batch `index` as one row of a (batches, size, ...) view: a slice whose start came
            # from the data would make XLA compile the epoch anew for every epoch's order.
            return tf.gather(tf.reshape(a[: full * size], [full, size, *a.shape[1:]]), index)

        def batch(take):
            self.apply_step(
                *(
                    None if a is None else arguments.structure(tf.nest.map_structure(take, a))
                    for a in (epoch.x, epoch.y, epoch.sample_weight)
                ),
                checked=True,
            )

        def step(i):
            if epoch.batch_order is None:
                batch(lambda a: sliced(a, i * size, size))
            else:  # shuffle="batch": the full batches in the epoch's order, each contiguous
                batch(lambda a: full_batch(a, epoch.batch_order[i]))
            return (i + 1,)

        clean = self.train_input_check.clean
        tf.while_loop(lambda i: tf.logical_and(i < full, clean()), step, (tf.constant(0),))
        if last:
            batch(lambda a: sliced(a, full * size, last))

    def train_batches(self, batches):
        """One `apply_step` per batch of a `keras_mle.data.EpochBatches`, in `tf.while_loop`s.

        `batches.repeats` passes over the full batches `batches.x[i]` and the last, shorter
        batch. Used in-graph by the `"function"`/`"xla"` loops and, through
        `keras_mle.data.epoch_dataset`, by `fit()`, so that whole epochs are one compiled call.
        `keras_mle.data.stack_batches` checked the data when it built `batches`, so the steps
        do not examine their batches (`checked=True`); the loops end at a refused step.
        """

        def take(a, i):
            return (
                None if a is None else arguments.structure(tf.nest.map_structure(lambda a: a[i], a))
            )

        def step(i):
            self.apply_step(
                take(batches.x, i),
                take(batches.y, i),
                take(batches.sample_weight, i),
                checked=True,
            )
            return (i + 1,)

        clean = self.train_input_check.clean

        def epoch(e):
            tf.while_loop(
                lambda i: tf.logical_and(i < tf.shape(tf.nest.flatten(batches.x)[0])[0], clean()),
                step,
                (tf.constant(0),),
            )
            if batches.last_x is not None:
                self.apply_step(
                    arguments.structure(batches.last_x),
                    batches.last_y,
                    batches.last_sample_weight,
                    checked=True,
                )
            return (e + 1,)

        tf.while_loop(
            lambda e: tf.logical_and(e < batches.repeats, clean()), epoch, (tf.constant(0),)
        )

    def test_step(self, data):
        self.evaluation_step(*self.unpack(data))
        return self.metric_results()

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.call(x)

    def fit(
        self,
        x=None,
        y=None,
        batch_size=None,
        epochs=1,
        verbose="auto",
        callbacks=None,
        validation_split=0.0,
        validation_data=None,
        shuffle=True,
        class_weight=None,
        sample_weight=None,
        initial_epoch=0,
        steps_per_epoch=None,
        validation_steps=None,
        validation_batch_size=None,
        validation_freq=1,
    ):
        """`keras.Model.fit`, with every argument and in-memory array checked before any work.

        In-memory arrays reach Keras in the model's `data_dtype` (float64 data are not rounded
        for a float64 or adapted model): on one device, unless a callback acts between batches
        or `steps_per_epoch` is given, each epoch is one compiled call over the arrays
        (`keras_mle.data.epoch_arrays`); otherwise Keras gets a dataset of batches
        (`keras_mle.data.array_dataset`). Both take the rows in the same order: with
        `shuffle=True` a new permutation of the rows each epoch, with `shuffle="batch"` the
        contiguous batches in a new order each epoch (the last, shorter batch last), both drawn
        from `(model.shuffle_seed, epoch)` (`keras_mle.data.order`), so the steps do not depend
        on which callbacks are present and a resumed fit repeats them. For a model of a sample,
        `x` holds the samples and a dataset's elements are `samples` or `(samples,
        sample_weight)`. A `keras_mle.callbacks.BackupAndRestore` among `callbacks` restores
        its backup before training and sets the epoch to resume from.

        Under a `tf.distribute.MultiWorkerMirroredStrategy`, where Keras' `fit` does not run,
        training goes through `keras_mle.distributed.fit` (see `docs/distributed.md`).
        """
        args = arguments.FitArguments.checked(
            batch_size=batch_size,
            epochs=epochs,
            callbacks=callbacks,
            validation_split=validation_split,
            validation_data=validation_data,
            shuffle=shuffle,
            class_weight=class_weight,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps_per_epoch,
            validation_steps=validation_steps,
            validation_batch_size=validation_batch_size,
            validation_freq=validation_freq,
        )
        if distributed.is_multi_worker(self.distribute_strategy):
            return distributed.fit(self, args, x, y, sample_weight, validation_data, verbose)
        in_memory = arguments.is_in_memory(x)
        if in_memory:
            arrays, validation_data = self.training_arrays(
                args, x, y, sample_weight, validation_data
            )
        else:
            arguments.check_epoch_ends(self.x_name, x, args.steps_per_epoch)
            self.check_stream(x, y, sample_weight, args.batch_size, args.validation_split)
        if validation_data is not None:
            validation_data = self.validation_dataset(
                validation_data, args.rows_per_validation_batch
            )
        jit_compile = self.jit_compile
        try:
            if in_memory:
                first = epochs_lib.restore_training(
                    args.callbacks, self, args.initial_epoch, shuffle=args.shuffle
                )
                x, steps = self.epochs_of_arrays(args, arrays, first)
                rows = data_lib.num_rows(arrays[0])
                full_batch = args.rows_per_batch >= rows and args.steps_per_epoch in (None, 1)
            else:
                first = checkpoint.initial_epoch(args.callbacks, self, args.initial_epoch)
                steps, full_batch = args.steps_per_epoch, False
            return super().fit(
                x,
                epochs=args.epochs,
                verbose=verbose,
                callbacks=[InputCheckCallback(full_batch=full_batch), *args.callbacks],
                validation_data=validation_data,
                shuffle=False,
                initial_epoch=first,
                steps_per_epoch=steps,
                validation_steps=args.validation_steps,
                validation_freq=args.validation_freq,
            )
        finally:
            # (A run that raised gets no on_train_end: its backup folder's lock is freed here.)
            checkpoint.release_backups(args.callbacks)
            if self.jit_compile != jit_compile:
                # XLA was this fit's choice (`epochs_of_arrays`): the model's setting comes back.
                self._train_functions[True] = self.train_function
                self.jit_compile = jit_compile
                self.train_function = self._train_functions.get(False)

    def training_arrays(self, args, x, y, sample_weight, validation_data):
        """The checked training arrays `(x, y, w)` of `fit`, and its validation data.

        With `validation_split`, the last rows are held out, as Keras does, as a dataset of
        batches. The model is built for the arrays.
        """
        x, y, sample_weight = self.check_data(x, y, sample_weight)
        if args.validation_split and validation_data is None:
            (x, y, sample_weight), held_out = arguments.split_rows(
                (x, y, sample_weight), args.validation_split
            )
            validation_data = data_lib.array_dataset(
                self.components(*held_out), batch_size=args.rows_per_validation_batch
            )
        self.prepare_training(
            data_lib.inputs_shape(x),
            data_lib.take_rows(x, slice(0, 1)),
            None if y is None else y[:1],
        )
        return (x, y, sample_weight), validation_data

    def epochs_of_arrays(self, args, arrays, first_epoch):
        """The dataset `fit` gives Keras for in-memory `arrays`, and its steps per epoch.

        Whole epochs in one compiled call each (`train_arrays`), unless a strategy, a callback
        acting between batches or `steps_per_epoch` needs Keras' batches. Epoch `first_epoch`
        comes first (a resumed fit). With `compile(jit_compile="auto")` and at least `XLA_ROWS`
        rows, the whole-epoch call is compiled with XLA for this fit: Keras' "auto" leaves XLA
        off on CPU, and an epoch over this many rows is several times faster under it.
        """
        seed = self.shuffle_seed if args.shuffle else None
        n = data_lib.num_rows(arrays[0])
        if (
            args.steps_per_epoch is None
            and arguments.default_strategy(self)
            and not arguments.watches_batches(args.callbacks)
        ):
            if self._auto_jit and n >= XLA_ROWS and not self.jit_compile:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # a model XLA cannot compile stays off
                    self.jit_compile = True
                if self.jit_compile:
                    self._train_functions[False] = self.train_function
                    self.train_function = self._train_functions.get(True)
            dataset = data_lib.epoch_arrays(
                *arrays,
                batch_size=args.rows_per_batch,
                seed=seed,
                shuffle=args.shuffle,
                first_epoch=first_epoch,
            )
            return dataset, 1
        components = self.components(*arrays)
        if not args.shuffle:
            return data_lib.array_dataset(components, batch_size=args.rows_per_batch), (
                args.steps_per_epoch
            )
        # An endless dataset over the epochs' orders; Keras keeps one iterator across epochs.
        per_epoch = data_lib.batches_per_epoch(n, args.rows_per_batch)
        steps = args.steps_per_epoch or per_epoch
        done, skip = divmod(first_epoch * steps, per_epoch)
        dataset = data_lib.array_dataset(
            components,
            batch_size=args.rows_per_batch,
            shuffle=args.shuffle,
            seed=seed,
            first_epoch=done,
        )
        return (dataset.skip(skip) if skip else dataset), steps

    def evaluate(
        self,
        x=None,
        y=None,
        batch_size=None,
        verbose="auto",
        sample_weight=None,
        steps=None,
        callbacks=None,
        return_dict=False,
        **kwargs,
    ):
        """`keras.Model.evaluate` with the checks of `fit`."""
        batch_size = data_lib.check_optional_positive_int("batch_size", batch_size)
        data_lib.check_optional_positive_int("steps", steps)
        # `fit` evaluates its validation data (checked already) with its own CallbackList.
        from_fit = isinstance(callbacks, keras.callbacks.CallbackList)
        if not from_fit:
            arguments.check_callbacks(callbacks)
        if arguments.is_in_memory(x):
            # (Held-out data may be anything the model can score: no whole-data checks.)
            x, y, sample_weight = self.check_data(x, y, sample_weight, whole=False)
            self.prepare_training(
                data_lib.inputs_shape(x),
                data_lib.take_rows(x, slice(0, 1)),
                None if y is None else y[:1],
            )
            x = data_lib.array_dataset(
                self.components(x, y, sample_weight), batch_size=batch_size or 32
            )
        elif not from_fit:
            self.check_stream(x, y, sample_weight, batch_size, 0.0)
        if not from_fit:
            callbacks = [InputCheckCallback(), *(callbacks or [])]
        return super().evaluate(
            x, verbose=verbose, steps=steps, callbacks=callbacks, return_dict=return_dict, **kwargs
        )

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """`keras.Model.predict` with the checks of `fit` (the number of features included)."""
        batch_size = data_lib.check_optional_positive_int("batch_size", batch_size)
        data_lib.check_optional_positive_int("steps", steps)
        arguments.check_callbacks(callbacks)
        if arguments.is_in_memory(x):
            x = self.check_inputs(x)
            x = data_lib.array_dataset((x,), batch_size=batch_size or 32)
        elif isinstance(x, tf.data.Dataset):
            shape = arguments.spec_shape(arguments.x_spec(self, x.element_spec))
            self.check_input_shape(shape)
            self._build_from_shape(shape)
        return super().predict(x, verbose=verbose, steps=steps, callbacks=callbacks)

    def _build_from_shape(self, shape):
        if not self.built:
            if isinstance(shape, dict):
                shape = {key: tuple(value) for key, value in shape.items()}
            else:
                shape = tuple(shape)
            with self.distribute_strategy.scope():
                self.build(shape)

    def prepare_training(self, shape, x_example, y_example):
        """Builds the model, and any compiled metrics, before Keras' first step.

        Callbacks then see a built model in `on_train_begin`. The metrics are built here from
        one example row because an `EpochBatches` step (and a custom loop's epoch) updates them
        inside a `tf.while_loop`, where no variable may be created; under a multi-replica
        strategy Keras builds them itself, from a symbolic batch.
        """
        self._build_from_shape(shape)
        if len(self.metrics) > 1 and self.distribute_strategy.num_replicas_in_sync == 1:
            y = None if y_example is None else tf.constant(y_example)
            x = tf.nest.map_structure(tf.constant, x_example)
            self.compute_metrics(*self._metric_inputs(x, y))
            self.reset_metrics()

    def check_stream(self, x, y, sample_weight, batch_size, validation_split):
        for name, value in (("y", y), ("sample_weight", sample_weight)):
            if value is not None:
                raise ValueError(f"{name}: with a dataset or generator, give it inside the data.")
        if batch_size is not None:
            raise ValueError("batch_size: a dataset or generator is batched already; drop it.")
        if validation_split:
            raise ValueError("validation_split needs in-memory arrays; give validation_data.")
        if isinstance(x, keras.utils.PyDataset):
            spec = arguments.py_dataset_spec(self, x)
        elif isinstance(x, tf.data.Dataset):
            if int(x.cardinality()) == 0:
                raise ValueError(
                    f"{self.x_name}: the dataset is empty (its cardinality is 0): there is no "
                    "batch to fit or evaluate."
                )
            spec = x.element_spec
        else:
            return
        if isinstance(spec, data_lib.EpochBatches.Spec):
            if self.distribute_strategy.num_replicas_in_sync > 1:
                raise ValueError(
                    "x: keras_mle.data.epoch_dataset is a single-device fast path; under a "
                    "tf.distribute strategy pass the arrays to fit(x, y) instead."
                )
            x_spec = spec.x
            self.prepare_training(
                arguments.spec_shape(x_spec, skip=1),
                arguments.spec_example(x_spec, skip=1),
                tf.zeros([1], arguments.spec_dtype(x_spec)),
            )
            return
        x_spec = arguments.x_spec(self, spec)
        for component in tf.nest.flatten(spec):
            if component.shape.rank == 0:
                raise ValueError(
                    f"{self.x_name}: the dataset yields single rows (element spec {spec}): "
                    "batch it first, e.g. dataset.batch(256)."
                )
        _, y_spec, _ = self.unpack(spec, in_step=False)
        self.check_input_shape(arguments.spec_shape(x_spec))
        self._check_feature_count(arguments.spec_shape(x_spec))
        if y_spec is not None:
            self._checked_target_shape(tf.zeros([1, *(d or 1 for d in y_spec.shape[1:])]))
        self.prepare_training(
            arguments.spec_shape(x_spec),
            arguments.spec_example(x_spec),
            tf.zeros([1], arguments.spec_dtype(x_spec)),
        )

    def validation_dataset(self, validation_data, batch_size: int):
        """`validation_data` as `fit` takes it, checked, as a dataset in the model's dtype.

        Arrays `(x, y)` or `(x, y, sample_weight)` (for a model of a sample: `samples`,
        `(samples, sample_weight)` or `(samples, None, sample_weight)`) are checked like the
        training data, errors prefixed with `validation_data:`; a dataset is returned as is.
        """
        if not arguments.is_in_memory(validation_data):
            return validation_data
        if not isinstance(validation_data, (tuple, list)):
            validation_data = (validation_data,)
        if self.takes_targets:
            x, y, w = keras.utils.unpack_x_y_sample_weight(tuple(validation_data))
        elif len(validation_data) <= 2:
            # As the dataset elements of a model of a sample: samples or (samples, weights).
            x, y, w = validation_data[0], None, (*validation_data[1:], None)[0]
        elif len(validation_data) == 3 and validation_data[1] is None:
            x, y, w = validation_data
        else:
            raise ValueError(
                f"validation_data: {type(self).__name__} fits a sample: give samples, "
                "(samples, sample_weight) or (samples, None, sample_weight)."
            )
        try:
            checked = self.check_data(x, y, w, whole=False)
        except (TypeError, ValueError) as error:
            raise type(error)(f"validation_data: {error}") from None
        return data_lib.array_dataset(self.components(*checked), batch_size=batch_size)
