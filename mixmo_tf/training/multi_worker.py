"""The training loop for runs over several replicas, where Keras 3 `fit` falls short.

Keras 3 `fit` under `MultiWorkerMirroredStrategy` fails at its first step (keras-team/keras
#20329 and #20585: the distributed batch reaches `tf.convert_to_tensor` as a dict of
`PerReplica` values). Under `MirroredStrategy` over several devices it trains, but its
validation fails on a test batch that does not split evenly over the replicas (AddN of
[180, ...] and [179, ...]: a test split of 360 images in batches of 359), and it averages
the replicas' metric results, which is wrong whenever they saw different numbers of images
(and for ECE always). This loop replaces `fit` for these two strategies and only them: it
distributes the same batches with `strategy.experimental_distribute_dataset`, runs the
model's own `train_step` and `test_step` with `strategy.run`, and drives the same Keras
callbacks (progress bar, history, checkpoints, TensorBoard, the guards) with the same logs,
so such a run checkpoints, stops and resumes exactly like a single-device one.

Every worker runs the same loop; only the chief writes into the run folder (`is_chief`).
A SIGTERM or SIGINT on any worker stops all of them at the same step: after each step the
workers all-reduce their stop flags, so they save the same checkpoint and exit together.
This plays the role of `tf.distribute.experimental.PreemptionCheckpointHandler`, which we
do not use because it numbers and schedules its own checkpoints and exits on its own; here
the checkpoint is the run's usual step-named one and the exit the usual code 3.
"""

from __future__ import annotations

import shutil
import tempfile

import keras
import tensorflow as tf

from mixmo_tf.config.errors import UserError
from mixmo_tf.models.mixmo_model import MixMoModel
from mixmo_tf.training.run_guard import StopRequest

_SUM = tf.distribute.ReduceOp.SUM


def uses_custom_loop(strategy: tf.distribute.Strategy) -> bool:
    """Whether `strategy` needs this loop instead of `fit`: multi-worker, or mirrored over
    more than one device."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    mirrored = isinstance(strategy, tf.distribute.MirroredStrategy)
    return mirrored and strategy.num_replicas_in_sync > 1


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run folder: the chief, or worker 0 if none is named.

    Single-process strategies are always the chief.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return True
    jobs = resolver.cluster_spec().as_dict()
    if not jobs:
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if "chief" in jobs:
        return task_type == "chief"
    return task_type == "worker" and task_id == 0


def scratch_dir(model_dir: str, strategy: tf.distribute.Strategy) -> str | None:
    """A temporary folder for a non-chief worker's writes, or None on the chief.

    Every worker must take part in saving (reading synchronised variables is collective),
    but only the chief's files are kept: the others write here and delete it afterwards.
    """
    if is_chief(strategy):
        return None
    return tempfile.mkdtemp(prefix=f"mixmo_worker_{strategy.cluster_resolver.task_id}_")


def remove_scratch_dir(path: str | None) -> None:
    """Deletes a worker's temporary folder (nothing on the chief)."""
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


def _step_function(strategy: tf.distribute.Strategy, step, metrics: list[keras.metrics.Metric]):
    """One distributed step on the next batch of an iterator; `metrics`' results over all
    the replicas of all the workers.

    Each replica's step updates its own copy of the metrics' variables, which Keras creates
    sync-on-read with SUM aggregation: read here, in cross-replica context, each is the sum
    over the replicas (one all-reduce), so every result is that of one process that saw the
    whole global batches. The step's own logs are each replica's results: their mean is
    wrong whenever the replicas saw different numbers of examples (a partial last batch of
    the test split), and the ECE of the whole is no average of the parts' ECEs.
    """

    @tf.function
    def run(iterator):
        strategy.run(step, args=(next(iterator),))
        return {metric.name: metric.result() for metric in metrics}

    return run


def _skipping_empty_slices(step, metrics: list[keras.metrics.Metric]):
    """`step` on a replica's slice of a batch, skipped when the slice is empty.

    A last test batch smaller than the number of replicas leaves some replicas nothing, and
    the network cannot run on zero images (with oneDNN the batch norm fails, naming channel
    counts); such a replica keeps its metrics and logs their current results. Only for
    steps without collectives (the test step): the other replicas would wait on them.
    """

    def run(batch):
        return tf.cond(
            tf.shape(tf.nest.flatten(batch)[0])[0] > 0,
            lambda: step(batch),
            lambda: {metric.name: metric.result() for metric in metrics},
        )

    return run


def _agreement_function(strategy: tf.distribute.Strategy):
    """flag -> how many replicas, over all workers, raised it (one scalar all-reduce)."""

    @tf.function
    def run(flag):
        return strategy.reduce(_SUM, strategy.run(lambda: tf.identity(flag)), axis=None)

    return run


class WorkerLostError(UserError):
    """Another worker of the run stopped: collectives cannot go on."""


class DistributedLoop:
    """`fit` for `strategy`: same arguments, same callbacks, same logs.

    The logged metrics are read over all the replicas after each step (`_step_function`),
    so they equal a single process's on the same batches, a partial last batch included.

    Args:
        model: the compiled model, built in `strategy.scope()`.
        strategy: the multi-worker, or multi-device mirrored, strategy.
        stop: set by this worker's signal handlers.
        agreed_stop: set by the loop when any worker's `stop` is set; the callbacks read it.
    """

    def __init__(
        self,
        model: MixMoModel,
        strategy: tf.distribute.Strategy,
        stop: StopRequest,
        agreed_stop: StopRequest,
    ):
        self.model = model
        self.strategy = strategy
        self.stop = stop
        self.agreed_stop = agreed_stop
        self._train_step = _step_function(strategy, model.train_step, model.training_metrics)
        evaluation = model.evaluation_metrics
        test_step = _skipping_empty_slices(model.test_step, evaluation)
        self._test_step = _step_function(strategy, test_step, evaluation)
        self._agree = _agreement_function(strategy)

    def _distribute(self, dataset: tf.data.Dataset) -> tf.distribute.DistributedDataset:
        # Every worker builds the same global batches (a pure function of seed and step);
        # DATA sharding hands each replica its slice of each batch, as `fit` does.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
        return self.strategy.experimental_distribute_dataset(dataset.with_options(options))

    def _sync_stop(self) -> None:
        """Sets `agreed_stop` on every worker as soon as one of them was signalled."""
        raised = self._agree(tf.constant(1.0 if self.stop else 0.0))
        if float(raised) > 0 and not self.agreed_stop:
            self.agreed_stop.signal_name = self.stop.signal_name or "a signal to another worker"

    def evaluate(self, dataset: tf.data.Dataset, callbacks) -> dict[str, float]:
        """Runs `test_step` over the whole (finite) `dataset`; returns the metrics."""
        steps = int(dataset.cardinality())
        if steps < 0:
            raise ValueError("Distributed evaluation needs a dataset of known length.")
        self.model.reset_metrics()
        callbacks.on_test_begin()
        iterator = iter(self._distribute(dataset))
        logs = {}
        for step in range(steps):
            callbacks.on_test_batch_begin(step)
            logs = self._test_step(iterator)
            callbacks.on_test_batch_end(step, logs)
        logs = {name: float(value) for name, value in logs.items()}
        callbacks.on_test_end(logs)
        return logs

    def fit(
        self,
        dataset: tf.data.Dataset,
        initial_epoch: int,
        epochs: int,
        steps_per_epoch: int,
        validation_data: tf.data.Dataset,
        callbacks: list[keras.callbacks.Callback],
        shuffle: bool = False,
    ) -> keras.callbacks.History:
        """Trains epochs `initial_epoch` to `epochs`, validating after each, like `fit`."""
        del shuffle  # the stream is already ordered by its seed
        callbacks = keras.callbacks.CallbackList(
            callbacks,
            add_history=True,
            add_progbar=True,
            verbose=1,
            epochs=epochs,
            steps=steps_per_epoch,
            model=self.model,
        )
        self.model.stop_training = False
        iterator = iter(self._distribute(dataset))
        callbacks.on_train_begin()
        try:
            epoch_logs = self._epochs(
                iterator, initial_epoch, epochs, steps_per_epoch, callbacks, validation_data
            )
        except tf.errors.UnavailableError as error:
            step = int(self.model.optimizer.iterations.numpy())
            raise WorkerLostError(
                f"Another worker of this run stopped responding after step {step}. Restart "
                "every worker with the same command: they resume from the last checkpoint."
            ) from error
        callbacks.on_train_end(epoch_logs)
        return self.model.history

    def _epochs(self, iterator, initial_epoch, epochs, steps_per_epoch, callbacks, validation_data):
        """The epochs of `fit`; returns the last epoch's logs."""
        epoch_logs = {}
        for epoch in range(initial_epoch, epochs):
            self.model.reset_metrics()
            callbacks.on_epoch_begin(epoch)
            logs = {}
            for step in range(steps_per_epoch):
                callbacks.on_train_batch_begin(step)
                logs = self._train_step(iterator)
                self._sync_stop()
                callbacks.on_train_batch_end(step, logs)
            epoch_logs = {name: float(value) for name, value in logs.items()}
            validation = self.evaluate(validation_data, callbacks)
            epoch_logs.update({f"val_{name}": value for name, value in validation.items()})
            callbacks.on_epoch_end(epoch, epoch_logs)
        return epoch_logs


def fit_function(model: MixMoModel, strategy: tf.distribute.Strategy, stop: StopRequest):
    """`model.fit`, or a `DistributedLoop`'s where `uses_custom_loop`; and the stop the
    callbacks read.

    Returns:
        tuple: (fit, stop request for the callbacks): `fit` runs read their own signals; the loop's
        read the stop all workers agreed on.
    """
    if not uses_custom_loop(strategy):
        return model.fit, stop
    agreed = StopRequest(signalled=stop)
    return DistributedLoop(model, strategy, stop, agreed).fit, agreed
