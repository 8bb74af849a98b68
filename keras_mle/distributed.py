"""`fit` under `tf.distribute.MultiWorkerMirroredStrategy`: a loop of the package's own.

Keras' own `fit` does not run under a multi-worker strategy (its symbolic build reduces a
per-replica batch, then its step outputs, across workers). A keras_mle model built and compiled in
`strategy.scope()` of such a strategy therefore trains through `fit` here: one `tf.function`
per step around `strategy.run(model.apply_step, ...)`, over
`strategy.experimental_distribute_dataset`, with the callbacks driven through
`keras.callbacks.CallbackList` as Keras does. No private Keras function is patched or called.

Every worker runs the same program with the same arguments; each step's loss is normalised by
the weight total of the *global* batch (all-reduced in `apply_step`), so a step is the step of
one process on the same global batch, up to float32 rounding of the reordered sums. The recipe
(`TF_CONFIG`, sharding, checkpoints) is in `docs/distributed.md`.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_mle import checkpoint
from keras_mle import data as data_lib
from keras_mle.models.input_checks import InputCheckCallback

__all__ = ["is_multi_worker", "is_chief", "distribute_dataset", "fit"]

_OFF = tf.data.experimental.AutoShardPolicy.OFF
_AUTO = tf.data.experimental.AutoShardPolicy.AUTO
_DATA = tf.data.experimental.AutoShardPolicy.DATA


def is_multi_worker(strategy) -> bool:
    """Whether `strategy` is a `tf.distribute.MultiWorkerMirroredStrategy` (its `fit` is here)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy) -> bool:
    """Whether this process is the chief of `strategy`'s cluster (the one that writes files).

    The task of type `"chief"`, or worker 0 when the cluster has none; `True` without a cluster.
    """
    return bool(strategy.extended.should_checkpoint)


def distribute_dataset(strategy, dataset, *, name: str = "x"):
    """`strategy.experimental_distribute_dataset(dataset)`, sharded so that no row is read twice.

    Each element of `dataset` is a *global* batch: it is split across the replicas of all
    workers. The dataset's `auto_shard_policy` decides how the workers share it:

    - `AUTO` (the default of every dataset) is made `DATA`: every worker reads the whole
      pipeline and keeps its part of each global batch, so the global batches, and hence every
      step, are those of one process reading the same dataset;
    - `DATA`, `FILE` and `HINT` set by the caller are kept. `FILE` gives each worker whole files
      (cheaper to read, but a global step then joins batches of different files: the steps are
      not those of one process), and tf.data refuses it when there are fewer files than workers;
    - `OFF` is refused with a `ValueError`: every worker would read the same rows, so each row
      would count once per worker and the run would see only part of the data.
    """
    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(f"{name} must be a tf.data.Dataset, got {type(dataset).__name__}.")
    policy = dataset.options().experimental_distribute.auto_shard_policy
    if policy == _OFF:
        raise ValueError(
            f"{name}: the dataset's options set auto_shard_policy=OFF, so every worker of the "
            "MultiWorkerMirroredStrategy would train on the same rows (each counted once per "
            "worker, and the rest of the data never seen). Use AutoShardPolicy.DATA (or FILE "
            "with at least one file per worker), or leave the default."
        )
    if policy == _AUTO:
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = _DATA
        dataset = dataset.with_options(options)
    return strategy.experimental_distribute_dataset(dataset)


def fit(
    model,
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
    """`model.fit(...)` under a `MultiWorkerMirroredStrategy`; the model's `fit` calls it.

    The arguments are those of `MaximumLikelihoodModel.fit`, checked the same way; `x` is
    in-memory arrays or a `tf.data.Dataset` of global batches (not a generator or `PyDataset`).
    Every worker must make the same call. Returns the `keras.callbacks.History` of the run, the
    same on every worker.
    """
    from keras_mle.models import base  # (base imports nothing from here: no cycle)

    strategy = model.distribute_strategy
    batch_size = data_lib.check_optional_positive_int("batch_size", batch_size)
    data_lib.check_positive_int("epochs", epochs)
    data_lib.check_optional_positive_int("steps_per_epoch", steps_per_epoch)
    data_lib.check_optional_positive_int("validation_steps", validation_steps)
    data_lib.check_optional_positive_int("validation_batch_size", validation_batch_size)
    data_lib.check_positive_int("validation_freq", validation_freq)
    initial_epoch = base._check_initial_epoch(initial_epoch)
    validation_split = base._check_validation_split(validation_split)
    if validation_split and validation_data is not None:
        raise ValueError(
            f"validation_split={validation_split!r} and validation_data are both given: give "
            "one of them."
        )
    shuffle = base._check_shuffle(shuffle)
    base._check_callbacks(callbacks)
    if class_weight is not None:
        raise ValueError(
            "class_weight is not supported by likelihood models: weight the samples with "
            "sample_weight."
        )
    if strategy.num_replicas_in_sync == 1:
        # The step guard's one-replica path applies the update inside a `tf.cond`, where the
        # optimizer of a multi-worker strategy cannot synchronise (merge_call).
        raise ValueError(
            "This MultiWorkerMirroredStrategy has a single replica (no TF_CONFIG cluster, or one "
            "worker with one device): train without the strategy, or with two or more workers "
            "(see docs/distributed.md)."
        )
    if getattr(model, "optimizer", None) is None:
        raise ValueError(
            "The model is not compiled: call model.compile(optimizer=...) in strategy.scope() "
            "before fit()."
        )
    if verbose == "auto":
        verbose = 1 if is_chief(strategy) else 0  # one progress bar for the cluster

    if base._is_in_memory(x):
        x, y, sample_weight = model.check_data(x, y, sample_weight)
        arrays = model._components(x, y, sample_weight)
        if validation_split and validation_data is None:
            arrays, held_out = base._split(arrays, validation_split)
            validation_data = data_lib.array_dataset(
                held_out, batch_size=validation_batch_size or batch_size or 32
            )
        model.prepare_training(arrays[0].shape, arrays[0][:1], None)
        source = _ArraySource(strategy, arrays, batch_size or 32, shuffle)
    elif isinstance(x, tf.data.Dataset):
        model._check_stream(x, y, sample_weight, batch_size, validation_split)
        if steps_per_epoch is None and int(x.cardinality()) == tf.data.INFINITE_CARDINALITY:
            raise ValueError(f"{model.x_name}: the dataset repeats forever; give steps_per_epoch.")
        source = _DatasetSource(strategy, x, model.x_name)
    else:
        raise TypeError(
            f"{model.x_name}: under a MultiWorkerMirroredStrategy fit() takes in-memory arrays "
            f"or a tf.data.Dataset of global batches, got a {type(x).__name__} (every worker "
            "must read its share of the same batches, which only tf.data can shard)."
        )
    if validation_data is not None:
        validation_data = distribute_dataset(
            strategy,
            model.validation_dataset(validation_data, validation_batch_size or batch_size or 32),
            name="validation_data",
        )
    if len(model.metrics) > 1:
        raise ValueError(
            "Compiled metrics are not supported under a MultiWorkerMirroredStrategy (the loss "
            "is reported); compile the model without metrics=, and compute them after training."
        )
    with strategy.scope():
        if not model.optimizer.built:
            # Built now on every worker (variable creation is collective), before any restore.
            model.optimizer.build(model.trainable_variables)

    callbacks, scratch = _worker_callbacks(strategy, list(callbacks or []))
    callbacks = [InputCheckCallback(), *callbacks]  # first: it acts before the others
    collectives = _Collectives(strategy)
    try:
        initial_epoch = _initial_epoch(strategy, model, callbacks, scratch, initial_epoch)
        epochs_of = collectives.gather([initial_epoch])[:, 0]
        if epochs_of.min() != epochs_of.max():
            raise ValueError(
                f"The workers resume from different epochs ({int(epochs_of.min())} to "
                f"{int(epochs_of.max())}): every worker must be given the same BackupAndRestore "
                "folder, on storage they all read (the chief writes it)."
            )
        steps = steps_per_epoch or source.steps
        callback_list = keras.callbacks.CallbackList(
            callbacks,
            add_history=True,
            add_progbar=verbose != 0,
            verbose=verbose,
            epochs=epochs,
            steps=steps,
            model=model,
        )
        train = _step_function(strategy, lambda batch: model.apply_step(*model._unpack(batch)))
        test = _step_function(strategy, _test_step(model))
        results = _results_function(model)
        batch_logs = base._watches_batches(callbacks)
        iterator = None
        model.stop_training = False
        callback_list.on_train_begin()
        logs = {}
        for epoch in range(initial_epoch, epochs):
            callback_list.on_epoch_begin(epoch)
            model.reset_metrics()
            if steps_per_epoch is None:
                batches = iter(source.epoch(collectives))
            else:
                iterator = iterator or iter(source.epoch(collectives))
                batches = _take(iterator, steps_per_epoch)
            ran = 0
            for step, batch in enumerate(batches):
                callback_list.on_train_batch_begin(step)
                train(batch)
                ran += 1
                callback_list.on_train_batch_end(step, _floats(results()) if batch_logs else None)
            if steps_per_epoch is not None and ran < steps_per_epoch:
                warnings.warn(
                    f"The data ran out after {ran} of steps_per_epoch={steps_per_epoch} steps "
                    f"in epoch {epoch + 1}: training stops (repeat the dataset).",
                    UserWarning,
                    stacklevel=3,
                )
                model.stop_training = True
            logs = {**_floats(results()), **_floats(model.parameter_logs())}
            if validation_data is not None and (epoch + 1) % validation_freq == 0:
                val = _evaluate(
                    model, test, results, validation_data, validation_steps, callback_list
                )
                logs.update({f"val_{name}": value for name, value in val.items()})
            callback_list.on_epoch_end(epoch, logs)
            # A callback may stop one worker only: all stop when any does, or they would hang.
            stop = collectives.max([float(bool(model.stop_training))])[0]
            model.stop_training = bool(stop)
            if model.stop_training:
                break
        model.optimizer.finalize_variable_values(model.trainable_variables)
        callback_list.on_train_end(logs)
    finally:
        # (A run that raised gets no on_train_end: its backup folder's lock is freed here.)
        checkpoint.release_backups(callbacks)
        for folder, _ in scratch.values():
            shutil.rmtree(folder, ignore_errors=True)
    return model.history


class _ArraySource:
    """Global batches of in-memory arrays, one `array_dataset` per epoch when shuffled.

    Each worker holds all the arrays and keeps its part of each batch (`DATA` sharding). When
    shuffling, the epoch's order is drawn by the chief from NumPy's global generator
    (`keras.utils.set_random_seed` fixes it, a `BackupAndRestore` backup restores it) and sent
    to every worker, so that all of them cut the same global batches.
    """

    def __init__(self, strategy, arrays, batch_size, shuffle):
        self.strategy = strategy
        self.arrays = arrays
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.steps = math.ceil(len(arrays[0]) / batch_size)
        self._fixed = None

    def epoch(self, collectives):
        if not self.shuffle:
            if self._fixed is None:
                self._fixed = self._distributed(self.arrays)
            return self._fixed
        seed = collectives.from_chief(float(np.random.randint(2**52, dtype=np.int64)))
        order = np.random.default_rng(int(seed)).permutation(len(self.arrays[0]))
        return self._distributed(tuple(a[order] for a in self.arrays))

    def _distributed(self, arrays):
        dataset = data_lib.array_dataset(arrays, batch_size=self.batch_size)
        return distribute_dataset(self.strategy, dataset)


class _DatasetSource:
    """A `tf.data.Dataset` of global batches, distributed once and iterated every epoch."""

    def __init__(self, strategy, dataset, name):
        cardinality = int(dataset.cardinality())
        self.steps = cardinality if cardinality > 0 else None
        self._distributed = distribute_dataset(strategy, dataset, name=name)

    def epoch(self, collectives):
        return self._distributed


class _Collectives:
    """Small values gathered from every replica, for decisions all workers must take alike."""

    def __init__(self, strategy):
        self.strategy = strategy

        def gather(values):
            context = tf.distribute.get_replica_context()
            return context.all_gather(values[None], axis=0)

        self._gather = tf.function(lambda v: strategy.run(gather, args=(v,)))

    def gather(self, values):
        """`values` (floats) of every replica, as a NumPy array of shape `(replicas, k)`.

        Replica 0 is the chief's first.
        """
        result = self._gather(tf.constant(np.asarray(values, np.float64).reshape(-1)))
        return self.strategy.experimental_local_results(result)[0].numpy()

    def max(self, values):
        """The element-wise maximum of `values` over all workers."""
        return self.gather(values).max(axis=0)

    def from_chief(self, value):
        """The chief's `value` (a float, exact up to 2**53), on every worker."""
        return float(self.gather([value])[0, 0])


def _step_function(strategy, replica_step):
    """One `tf.function` call per global batch: `replica_step(batch)` on every replica."""
    return tf.function(lambda batch: strategy.run(replica_step, args=(batch,)))


def _results_function(model):
    """The metrics' results over all replicas of all workers.

    Read in cross-replica context, where each metric variable (synchronised on read) is
    reduced across the workers as its aggregation says: what `_metric_results` computes in a
    replica. (There, under this strategy, the all-reduce of a bare variable read is refused: it
    has no device of its own.)
    """

    def results():
        logs = {}
        for metric in model.metrics:
            values = [tf.convert_to_tensor(variable) for variable in metric.variables]
            result = metric.stateless_result(values)
            logs.update(result if isinstance(result, dict) else {metric.name: result})
        return logs

    return results


def _test_step(model):
    """`model.test_step` without its reduced return value, for one replica's batch.

    The metrics are read once after the last batch (`_results_function`), not reduced after
    every batch as `test_step`'s return value would be.
    """

    def step(batch):
        x, y, sample_weight = model._unpack(batch)
        y = model._checked_target_shape(y)
        x_t, y_t = model.working_data(x, y)
        sample_losses = model.sample_loss(model.params_tensors(), x_t, y_t)
        loss, weights = model._normalize(sample_losses, sample_weight)
        predictions = model._metric_inputs(x, y)
        model.test_input_check.guard(
            x,
            y,
            sample_weight,
            tf.math.is_finite(loss),
            local=lambda: model._update_metrics(
                model.user_losses(sample_losses), weights, predictions
            ),
        )

    return step


def _evaluate(model, test, results, dataset, steps, callback_list):
    """`val_` logs: the evaluation step `test` on every global batch of `dataset`, reduced."""
    callback_list.on_test_begin()
    model.reset_metrics()
    batches = iter(dataset) if steps is None else _take(iter(dataset), steps)
    for step, batch in enumerate(batches):
        callback_list.on_test_batch_begin(step)
        test(batch)
        callback_list.on_test_batch_end(step)
    logs = _floats(results())
    callback_list.on_test_end(logs)
    return logs


def _take(iterator, steps):
    for _ in range(steps):
        try:
            yield next(iterator)
        except StopIteration:
            return


def _floats(logs):
    return {name: float(np.asarray(value)) for name, value in logs.items()}


def _worker_callbacks(strategy, callbacks):
    """The callbacks of this worker: on a non-chief, each backup goes to a scratch folder.

    Every worker saves at the same points (saving may read variables through collectives, so
    all must take part, as TensorFlow's multi-worker guide says), but only the chief into the
    backup folder; the others write to a temporary folder, deleted when training ends.
    Returns `(callbacks, {stand-in: (scratch folder, the original callback)})`.
    """
    if is_chief(strategy):
        return callbacks, {}
    scratch = {}
    result = []
    for callback in callbacks:
        if isinstance(callback, checkpoint.BackupAndRestore):
            folder = tempfile.mkdtemp(prefix="keras_mle-worker-backup-")
            stand_in = checkpoint.BackupAndRestore(
                folder,
                save_every=callback.save_every,
                restore=False,
                delete_checkpoint=callback.delete_checkpoint,
            )
            scratch[stand_in] = (folder, callback)
            callback = stand_in
        result.append(callback)
    return result, scratch


def _initial_epoch(strategy, model, callbacks, scratch, requested):
    """`checkpoint.initial_epoch`; a non-chief reads the chief's backup folder, never locks it."""
    epoch = checkpoint.initial_epoch(callbacks, model, requested)
    for _, source in scratch.values():
        if source.restore:
            with contextlib.suppress(FileNotFoundError):
                metadata = checkpoint.restore_backup(model, source.backup_dir)
                if metadata is not None:
                    epoch = max(epoch, int(metadata.get("epoch", 0)))
    return epoch
