"""`fit` under `tf.distribute.MultiWorkerMirroredStrategy`: a loop of the package's own.

Keras' own `fit` does not run under a multi-worker strategy (its symbolic build reduces a
per-replica batch, then its step outputs, across workers). A keras_mle model built and compiled in
`strategy.scope()` of such a strategy therefore trains through `fit` here: one `tf.function`
per step around `strategy.run(model.apply_step, ...)`, over
`strategy.experimental_distribute_dataset`, with the epochs and callbacks driven by the
package's one epoch driver (`keras_mle.epochs.run_epochs`). No private Keras function is
patched or called.

Every worker runs the same program with the same arguments; each step's loss is normalised by
the weight total of the *global* batch (all-reduced in `apply_step`), so a step is the step of
one process on the same global batch, up to float32 rounding of the reordered sums. The recipe
(`TF_CONFIG`, sharding, checkpoints) is in `docs/distributed.md`.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import warnings

import numpy as np
import tensorflow as tf

from keras_mle import checkpoint
from keras_mle import data as data_lib
from keras_mle import epochs as epochs_lib
from keras_mle.models import arguments

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


def fit(model, args, x, y, sample_weight, validation_data, verbose):
    """`model.fit(...)` under a `MultiWorkerMirroredStrategy`; the model's `fit` calls it.

    `args` are `fit`'s checked arguments (`keras_mle.models.arguments.FitArguments`); `x` is
    in-memory arrays (a dict of arrays for named inputs) or a `tf.data.Dataset` of global
    batches (not a generator or `PyDataset`). Every worker must make the same call. Returns the
    `keras.callbacks.History` of the run, the same on every worker.
    """
    strategy = model.distribute_strategy
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
    source, validation_data = _source(model, args, x, y, sample_weight, validation_data)
    if validation_data is not None:
        validation_data = distribute_dataset(
            strategy,
            model.validation_dataset(validation_data, args.rows_per_validation_batch),
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
    callbacks, scratch = _worker_callbacks(strategy, args.callbacks)
    collectives = _Collectives(strategy)
    run = _Run(model, args, source, collectives, callbacks)
    try:
        return epochs_lib.run_epochs(
            model,
            run.epoch,
            epochs=args.epochs,
            steps=args.steps_per_epoch or source.steps,
            full_batch=source.steps == 1 and args.steps_per_epoch in (None, 1),
            callbacks=callbacks,
            verbose=verbose,
            initial_epoch=args.initial_epoch,
            validate=None if validation_data is None else run.validation(validation_data),
            validation_freq=args.validation_freq,
            restore=lambda c, m, e: _initial_epoch(strategy, collectives, c, m, scratch, e),
            # A callback may stop one worker only: all stop when any does, or they would hang.
            agree_to_stop=lambda stop: bool(collectives.max([float(stop)])[0]),
        )
    finally:
        for folder, _ in scratch.values():
            shutil.rmtree(folder, ignore_errors=True)


def _source(model, args, x, y, sample_weight, validation_data):
    """The training batches of `fit`'s data, and the validation data."""
    strategy = model.distribute_strategy
    if arguments.is_in_memory(x):
        x, y, sample_weight = model.check_data(x, y, sample_weight)
        arrays = model.components(x, y, sample_weight)
        if args.validation_split and validation_data is None:
            arrays, held_out = arguments.split_rows(arrays, args.validation_split)
            validation_data = data_lib.array_dataset(
                held_out, batch_size=args.rows_per_validation_batch
            )
        model.prepare_training(
            data_lib.inputs_shape(arrays[0]), data_lib.take_rows(arrays[0], slice(0, 1)), None
        )
        model.shuffle_seed = None  # drawn at the first epoch, unless a backup restores it
        return _ArraySource(strategy, arrays, args.rows_per_batch, args.shuffle), validation_data
    if isinstance(x, tf.data.Dataset):
        arguments.check_epoch_ends(model.x_name, x, args.steps_per_epoch)
        model.check_stream(x, y, sample_weight, args.batch_size, args.validation_split)
        return _DatasetSource(strategy, x, model.x_name), validation_data
    raise TypeError(
        f"{model.x_name}: under a MultiWorkerMirroredStrategy fit() takes in-memory arrays "
        f"or a tf.data.Dataset of global batches, got a {type(x).__name__} (every worker "
        "must read its share of the same batches, which only tf.data can shard)."
    )


class _Run:
    """The epochs and validation of one multi-worker fit, for `keras_mle.epochs.run_epochs`."""

    def __init__(self, model, args, source, collectives, callbacks):
        self.model = model
        self.args = args
        self.source = source
        self.collectives = collectives
        strategy = model.distribute_strategy
        self.train = _step_function(strategy, lambda batch: model.apply_step(*model.unpack(batch)))
        self.test = _step_function(
            strategy, lambda batch: model.evaluation_step(*model.unpack(batch))
        )
        self.results = _results_function(model)
        self.batch_logs = arguments.watches_batches(callbacks)
        self.iterator = None
        self.seed = None

    def epoch(self, epoch, callback_list):
        """Trains epoch `epoch`; returns its logs."""
        model, steps_per_epoch = self.model, self.args.steps_per_epoch
        if self.seed is None:
            self.seed = self.source.seed(model, self.collectives)
        model.reset_metrics()
        if steps_per_epoch is None:
            batches = iter(self.source.epoch(self.seed, epoch))
        else:
            self.iterator = self.iterator or iter(self.source.epoch(self.seed, epoch))
            batches = _take(self.iterator, steps_per_epoch)
        ran = 0
        for step, batch in enumerate(batches):
            callback_list.on_train_batch_begin(step)
            self.train(batch)
            ran += 1
            logs = epochs_lib.float_logs(self.results()) if self.batch_logs else None
            callback_list.on_train_batch_end(step, logs)
        if steps_per_epoch is not None and ran < steps_per_epoch:
            warnings.warn(
                f"The data ran out after {ran} of steps_per_epoch={steps_per_epoch} steps "
                f"in epoch {epoch + 1}: training stops (repeat the dataset).",
                UserWarning,
                stacklevel=3,
            )
            model.stop_training = True
        return self.results()

    def validation(self, dataset):
        """The `validate` function of `run_epochs` for a distributed validation dataset."""

        def validate(callback_list):
            return _evaluate(
                self.model,
                self.test,
                self.results,
                dataset,
                self.args.validation_steps,
                callback_list,
            )

        return validate


class _ArraySource:
    """Global batches of in-memory arrays, one `array_dataset` per epoch when shuffled.

    Each worker holds all the arrays and keeps its part of each batch (`DATA` sharding). When
    shuffling, every worker takes epoch `e`'s rows from `(seed, e)`
    (`keras_mle.data.order`), the seed drawn once per fit by the chief (or restored from a
    backup as `model.shuffle_seed`) and sent to every worker, so that all of them cut the same
    global batches, those of a one-process `fit`.
    """

    def __init__(self, strategy, arrays, batch_size, shuffle):
        self.strategy = strategy
        self.arrays = arrays
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.steps = data_lib.batches_per_epoch(data_lib.num_rows(arrays[0]), batch_size)
        self.fixed = None

    def seed(self, model, collectives):
        """The fit's seed of the rows' order, the same on every worker (`None`: no shuffle)."""
        if not self.shuffle:
            return None
        if model.shuffle_seed is None:
            model.shuffle_seed = data_lib.draw_seed()
        # Sent as two 31-bit halves, each exact in the float64 collectives (seeds are < 2**62).
        high, low = divmod(int(model.shuffle_seed), 2**31)
        chief = collectives.gather([float(high), float(low)])[0]
        model.shuffle_seed = int(chief[0]) * 2**31 + int(chief[1])
        return model.shuffle_seed

    def epoch(self, seed, epoch):
        if seed is None:
            if self.fixed is None:
                self.fixed = self.distributed(self.arrays)
            return self.fixed
        n = data_lib.num_rows(self.arrays[0])
        rows = data_lib.epoch_rows(seed, epoch, n, self.batch_size, self.shuffle).numpy()
        return self.distributed(tuple(data_lib.take_rows(a, rows) for a in self.arrays))

    def distributed(self, arrays):
        dataset = data_lib.array_dataset(arrays, batch_size=self.batch_size)
        return distribute_dataset(self.strategy, dataset)


class _DatasetSource:
    """A `tf.data.Dataset` of global batches, distributed once and iterated every epoch."""

    def __init__(self, strategy, dataset, name):
        cardinality = int(dataset.cardinality())
        self.steps = cardinality if cardinality > 0 else None
        self.dataset = distribute_dataset(strategy, dataset, name=name)

    def seed(self, model, collectives):
        return None

    def epoch(self, seed, epoch):
        return self.dataset


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
    reduced across the workers as its aggregation says: what `metric_results` computes in a
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


def _evaluate(model, test, results, dataset, steps, callback_list):
    """`val_` logs: the evaluation step `test` on every global batch of `dataset`, reduced."""
    callback_list.on_test_begin()
    model.reset_metrics()
    batches = iter(dataset) if steps is None else _take(iter(dataset), steps)
    for step, batch in enumerate(batches):
        callback_list.on_test_batch_begin(step)
        test(batch)
        callback_list.on_test_batch_end(step)
    logs = epochs_lib.float_logs(results())
    callback_list.on_test_end(logs)
    return logs


def _take(iterator, steps):
    for _ in range(steps):
        try:
            yield next(iterator)
        except StopIteration:
            return


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


def _initial_epoch(strategy, collectives, callbacks, model, scratch, requested):
    """`checkpoint.initial_epoch`; a non-chief reads the chief's backup folder, never locks it.

    Every worker must resume from the same epoch: a `ValueError` otherwise.
    """
    epoch = checkpoint.initial_epoch(callbacks, model, requested)
    for _, source in scratch.values():
        if source.restore:
            with contextlib.suppress(FileNotFoundError):
                metadata = checkpoint.restore_backup(model, source.backup_dir)
                if metadata is not None:
                    epoch = max(epoch, int(metadata.get("epoch", 0)))
    epochs_of = collectives.gather([epoch])[:, 0]
    if epochs_of.min() != epochs_of.max():
        raise ValueError(
            f"The workers resume from different epochs ({int(epochs_of.min())} to "
            f"{int(epochs_of.max())}): every worker must be given the same BackupAndRestore "
            "folder, on storage they all read (the chief writes it)."
        )
    return epoch
