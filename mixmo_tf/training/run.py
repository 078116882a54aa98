"""A training run from a Config: data, model, resume, the fit loop, the final model.

`train(config)` first makes every check that can refuse the run (`check_before_training`),
then chooses the precision (which may time the step), holds the run folder (lock, signals),
records the run's settings, builds the model (`mixmo_tf.models.build`), resumes from the
newest checkpoint and trains epoch by epoch, evaluating the test split after each; it ends
by writing `<model_dir>/model.keras`.
"""

from __future__ import annotations

import contextlib
import dataclasses

import keras
import tensorflow as tf

from mixmo_tf import data
from mixmo_tf.config.run_folder import RunFolder, write_atomically
from mixmo_tf.config.run_record import check_run_config, record_run_config, record_spec
from mixmo_tf.config.settings import Config
from mixmo_tf.data import sources
from mixmo_tf.models.build import build_model
from mixmo_tf.models.mixmo_model import MixMoModel
from mixmo_tf.models.schedules import learning_rate_schedule
from mixmo_tf.training import backend, callbacks, checkpoints, multi_worker, run_guard
from mixmo_tf.training.strategies import check_batch_split, make_strategy
from mixmo_tf.tuning import onednn
from mixmo_tf.tuning.precision_choice import choose_training_precision
from mixmo_tf.tuning.step_timing import onednn_enabled

# A classifier needs two classes (`models.network.build_mixmo_network` refuses fewer).
MIN_CLASSES = 2


def train_stream(config: Config) -> data.TrainStream:
    """The training stream's shape from `config`."""
    return data.TrainStream(
        batch_size=config.batch_size,
        batch_repetitions=config.batch_repetitions,
        num_members=config.num_members,
        steps_per_epoch=config.derived_steps_per_epoch,
        with_partners=config.msda != "none",
        seed=config.seed,
    )


def _segments(start_step: int, config: Config) -> list[tuple[int, int, int]]:
    """(first epoch, end epoch, steps per epoch) of the fit calls that finish training.

    A run resumed mid-epoch first completes that epoch, then runs whole epochs.
    """
    steps_per_epoch = config.derived_steps_per_epoch
    epoch, done = divmod(start_step, steps_per_epoch)
    segments = []
    if done:
        segments.append((epoch, epoch + 1, steps_per_epoch - done))
        epoch += 1
    if epoch < config.epochs:
        segments.append((epoch, config.epochs, steps_per_epoch))
    return segments


def _with_dataset_spec(config: Config) -> Config:
    """`config` carrying the spec of the run's data once it is ready to read (prepared, or
    downloaded if `config.download` allows), checked against the run's recorded spec on a
    resume.

    Raises:
        FileNotFoundError: the data is missing or unusable (path and fix in the message).
        sources.DataSourceError: the data changed since the run started, has one class, or is
            too small for a step.
    """
    data.prepare_source(config.dataset, config.data_dir, config.download)
    spec = data.resolved_spec(config.dataset, config.image_size, config.data_dir)
    sources.check_unchanged(spec, config.model_dir)
    if spec.num_classes < MIN_CLASSES:
        named = f" ({', '.join(spec.class_names)})" if spec.class_names else ""
        raise sources.DataSourceError(
            f"{config.dataset} has {spec.num_classes} class{named}: a classifier needs at least "
            f"{MIN_CLASSES}. Add the images of another class (a folder source: one more class "
            "subfolder in train/ and test/)."
        )
    try:
        # The Config checks that a step's unique images fit in the training split.
        return dataclasses.replace(config, dataset_spec=spec)
    except ValueError as error:
        raise sources.DataSourceError(str(error)) from error


@dataclasses.dataclass(frozen=True)
class TrainingStart:
    """What `check_before_training` opened on its way: what training goes on with."""

    # The run's Config, carrying the spec of its data.
    config: Config
    strategy: tf.distribute.Strategy
    # (images, labels) as `data.open_split` gives them; training's without the validation slice.
    train_split: tuple
    test_split: tuple


def check_before_training(config: Config) -> TrainingStart:
    """Every refusal training can make before it times a step or builds a model, so a run
    that will be refused spends no minutes measuring and writes nothing to the step-time
    cache. Run by `train`, and by the command line before it times oneDNN.

    In order: the strategy and the batch's split over its replicas; the data (ready, not
    changed since the run started, two classes or more, enough images for a step, both
    splits readable); the run folder (its run_config.json readable and of this run, a usable
    checkpoint if it has any, writable, and not held by another process). Only the last
    writes: it creates the run folder and its lock file. Training goes on with what it
    returns: the Config carrying its data's spec, the strategy and the opened splits.

    Raises:
        The errors `train` reports for bad input: strategies.StrategyError,
            FileNotFoundError, sources.DataSourceError, RunConfigError,
            CheckpointMismatchError, checkpoints.CheckpointUnusableError, RunFolderError,
            run_guard.RunLockedError.
    """
    # Multi-worker strategies must exist before other TensorFlow work, data loading included.
    strategy = make_strategy(config.distribution, config.tpu)
    check_batch_split(strategy, config.batch_size, config.batch_repetitions)
    config = _with_dataset_spec(config)
    spec = config.spec
    train_images, train_labels = data.open_split(spec, "train", config.data_dir, config.download)
    train_split, _ = data.split_validation(
        train_images, train_labels, config.num_validation_examples
    )
    test_split = data.open_split(spec, "test", config.data_dir, config.download)
    # "auto" resolves to the recorded precision on a resume; on a new run it is measured.
    undecided = ("precision",) if config.precision == "auto" else ()
    check_run_config(config, undecided)
    _check_some_checkpoint_usable(config.model_dir)
    if multi_worker.is_chief(strategy):
        with run_guard.hold_run_folder(config.model_dir):
            pass  # free now; `train` holds it from its first write to its end
    return TrainingStart(config, strategy, train_split, test_split)


def _check_some_checkpoint_usable(model_dir: str) -> None:
    """Raises checkpoints.CheckpointUnusableError if the run has checkpoints and none is
    usable (which one is used is decided under the run's lock, when training restores)."""
    directory = RunFolder(model_dir).checkpoints
    # Newest first: in the usual case the one checked is the one training restores, and the
    # check stops there.
    paths = checkpoints.all_checkpoints(directory)
    if paths and all(checkpoints.unusable_reason(path) for path in paths):
        checkpoints.newest_usable(directory)  # raises, naming each checkpoint and why


def train(config: Config) -> MixMoModel:
    """Trains (or resumes) the run in `config.model_dir`; returns the trained model.

    Checks everything it can first (`check_before_training`), so bad input is refused before
    anything is measured or built. Evaluates on the test split after every epoch, writes
    TensorBoard logs and checkpoints under `model_dir`, and the final model as
    `model_dir/model.keras`. The spec of a tfds or folder source is read from its data (a
    `dataset_spec` given is replaced by it) and recorded in `model_dir/dataset_spec.json`,
    where `mixmo_tf.config.recorded_config(model_dir)` reads it back.
    """
    start = check_before_training(config)
    config, strategy = start.config, start.strategy
    precision = choose_training_precision(config)
    config = dataclasses.replace(config, precision=precision.precision)
    print(precision.message())
    # How the run's first start chose; a resume keeps that record (and the precision).
    speed = {"precision": precision.record()}
    if backend.is_tensorflow():  # oneDNN is TensorFlow's
        speed["onednn"] = onednn.chosen(onednn_enabled()).record()
    # One writer per run folder (a multi-worker run's chief); SIGTERM / SIGINT checkpoint at
    # the next step, then stop. Other workers write to a scratch folder, deleted at the end.
    chief = multi_worker.is_chief(strategy)
    lock = run_guard.hold_run_folder(config.model_dir) if chief else contextlib.nullcontext()
    scratch = multi_worker.scratch_dir(config.model_dir, strategy)
    try:
        with lock, run_guard.stop_on_signals() as stop:
            return _train_in_folder(
                config,
                speed,
                strategy,
                start.train_split,
                start.test_split,
                stop,
                scratch,
            )
    finally:
        multi_worker.remove_scratch_dir(scratch)


def _train_in_folder(config, speed, strategy, train_split, test_split, stop, scratch) -> MixMoModel:
    """`train` once it holds the run folder: build, resume, fit, save the final model.

    `speed` is the record of the precision and oneDNN choices (run_config.json keeps the
    first start's); `scratch` is None on the chief, else the folder this worker writes to.
    """
    spec = config.spec
    train_images, train_labels = train_split
    test_images, test_labels = test_split
    keras.utils.set_random_seed(config.seed)
    if scratch is None:
        record_run_config(config, notes={"speed_choices": speed})
        record_spec(spec, config.model_dir)
        # A save cut short (kill -9, a full disk) leaves files no index names: reclaim them.
        checkpoints.remove_unfinished(RunFolder(config.model_dir).checkpoints)
    with strategy.scope():
        model = build_model(config)
    # Every worker resumes from the chief's checkpoints (on a shared file system).
    run_checkpoints = checkpoints.checkpoint_manager(model, config.model_dir)
    start_step, latest = checkpoints.restore_latest(run_checkpoints)
    manager = checkpoints.checkpoint_manager(model, scratch or config.model_dir)
    if start_step:
        print(f"Resuming from step {start_step} of {config.total_steps} ({latest}).")
    stream = train_stream(config)
    eval_batches = data.eval_dataset(
        test_images, test_labels, spec, config.eval_batch_size, config.eval_steps
    )
    fit, stop = multi_worker.fit_function(model, strategy, stop)
    run_callbacks = [
        callbacks.StopOnNonFiniteLoss(learning_rate_schedule(config), manager),
        callbacks.PeriodicCheckpoint(
            manager, learning_rate_schedule(config), config.checkpoint_every_steps, stop
        ),
        keras.callbacks.TensorBoard(RunFolder(scratch or config.model_dir).logs),
    ]
    step = start_step
    for first_epoch, end_epoch, steps_per_epoch in _segments(start_step, config):
        end_step = step + (end_epoch - first_epoch) * steps_per_epoch
        with data.naming_unreadable_files(train_images, test_images):
            fit(
                data.train_dataset(train_images, train_labels, spec, stream, step, end_step),
                initial_epoch=first_epoch,
                epochs=end_epoch,
                steps_per_epoch=steps_per_epoch,
                shuffle=False,  # the stream is already ordered by its seed
                validation_data=eval_batches,
                callbacks=run_callbacks,
            )
        step = end_step
    write_atomically(RunFolder(scratch or config.model_dir).final_model, model.save, ".keras")
    return model
