"""A training or evaluation run from a Config: data, model, optimizer, callbacks, resume."""

from __future__ import annotations

import contextlib
import dataclasses
import os

import keras
import numpy as np

from mixmo_tf import (
    backbones,
    checkpointing,
    data,
    distributed_loop,
    precision,
    run_guard,
)
from mixmo_tf.config import Config
from mixmo_tf.data import sources
from mixmo_tf.distribute import make_strategy
from mixmo_tf.evaluation.options import EvaluationOptions
from mixmo_tf.models.mixmo import network_from_backbone
from mixmo_tf.optimizers import make_optimizer
from mixmo_tf.schedules import WarmupStepDecay
from mixmo_tf.training import MixMoModel

FINAL_MODEL = "model.keras"
EVAL_RESULTS = os.path.join("eval", "results.json")


def learning_rate_schedule(config: Config) -> WarmupStepDecay:
    """The paper's per-step warm-up and step decay, with the numbers derived by `config`."""
    return WarmupStepDecay(
        config.base_learning_rate,
        config.warmup_steps,
        config.lr_decay_steps,
        config.lr_decay_factor,
    )


def resolve_device_defaults(config: Config) -> Config:
    """`config` with `precision="auto"` replaced by this machine's choice.

    The resolved value is what `run_config.json` records, so a resume on a machine that
    would choose differently is refused instead of silently changing the numerics.
    """
    return dataclasses.replace(config, precision=precision.resolve_precision(config.precision))


def build_model(config: Config) -> MixMoModel:
    """The compiled MixMo model of `config`, with its variables and optimizer state created.

    The network is `config.backbone`'s, built by its registry entry (`mixmo_tf.backbones`).

    Layers compute in `config.precision` (resolved for this machine if "auto"); variables,
    logits and the loss stay float32.
    """
    spec = config.spec
    with precision.dtype_policy(config.precision):
        backbone = backbones.build_backbone(
            config.backbone, config.depth, config.width, spec.image_shape
        )
        network = network_from_backbone(
            backbone, spec.num_classes, config.num_members, spec.image_shape
        )
        model = MixMoModel(
            network,
            mixing_alpha=config.effective_mixing_alpha,
            loss_power=config.effective_loss_power,
            cut_prob=config.effective_cut_prob,
            cut_prob_decay_start=config.cut_prob_decay_start,
            msda=config.msda,
            msda_prob=config.msda_prob,
            msda_alpha=config.msda_alpha,
            l2=config.l2,
            seed=config.seed,
            steps_per_epoch=config.derived_steps_per_epoch,
            epochs=config.epochs,
        )
    optimizer = make_optimizer(config.optimizer, learning_rate_schedule(config), config.momentum)
    # Under mixed_float16, compile wraps the optimizer in a LossScaleOptimizer.
    model.compile(optimizer=optimizer, jit_compile=config.jit_compile)
    model(np.zeros((1, *spec.image_shape), np.float32))
    model.optimizer.build(model.trainable_variables)
    return model


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


def dataset_of_run(config: Config) -> data.DatasetSpec:
    """The spec of the run's data once it is ready to read (prepared, or downloaded if
    `config.download` allows), checked against the run's recorded spec on a resume.

    Raises:
        FileNotFoundError: the data is missing or unusable (path and fix in the message).
        sources.DataSourceError: the data changed since the run started, or is too small for
            a step.
    """
    data.prepare_source(config.dataset, config.data_dir, config.download)
    spec = data.resolved_spec(config.dataset, config.image_size, config.data_dir)
    sources.check_unchanged(spec, config.model_dir)
    try:
        config.check_split_size()
    except ValueError as error:
        raise sources.DataSourceError(str(error)) from error
    return spec


def train(config: Config) -> MixMoModel:
    """Trains (or resumes) the run in `config.model_dir`; returns the trained model.

    Loads the data first, so a missing dataset fails before anything is built. Evaluates on
    the test split after every epoch, writes TensorBoard logs and checkpoints under
    `model_dir`, and the final model as `model_dir/model.keras`.
    """
    # Multi-worker strategies must exist before other TensorFlow work, data loading included.
    strategy = make_strategy(config.distribution, config.tpu)
    config = resolve_device_defaults(config)
    print(f"Precision: {config.precision}.")
    spec = dataset_of_run(config)
    train_images, train_labels = data.open_split(spec, "train", config.data_dir, config.download)
    (train_images, train_labels), _ = data.split_validation(
        train_images, train_labels, config.num_validation_examples
    )
    test_images, test_labels = data.open_split(spec, "test", config.data_dir, config.download)
    # One writer per run folder (a multi-worker run's chief); SIGTERM / SIGINT checkpoint at
    # the next step, then stop. Other workers write to a scratch folder, deleted at the end.
    chief = distributed_loop.is_chief(strategy)
    lock = run_guard.hold_run_folder(config.model_dir) if chief else contextlib.nullcontext()
    scratch = distributed_loop.scratch_dir(config.model_dir, strategy)
    try:
        with lock, run_guard.stop_on_signals() as stop:
            return _train_in_folder(
                config,
                strategy,
                (train_images, train_labels),
                (test_images, test_labels),
                stop,
                scratch,
            )
    finally:
        distributed_loop.remove_scratch_dir(scratch)


def _train_in_folder(config, strategy, train_split, test_split, stop, scratch) -> MixMoModel:
    """`train` once it holds the run folder: build, resume, fit, save the final model.

    `scratch` is None on the chief, else the folder this worker writes to instead.
    """
    spec = config.spec
    train_images, train_labels = train_split
    test_images, test_labels = test_split
    keras.utils.set_random_seed(config.seed)
    if scratch is None:
        checkpointing.record_run_config(config)
        sources.record_spec(spec, config.model_dir)
    with strategy.scope():
        model = build_model(config)
    # Every worker resumes from the chief's checkpoints (on a shared file system).
    run_checkpoints = checkpointing.checkpoint_manager(model, config.model_dir)
    start_step = checkpointing.restore_latest(run_checkpoints)
    manager = checkpointing.checkpoint_manager(model, scratch or config.model_dir)
    if start_step:
        latest = run_checkpoints.latest_checkpoint
        print(f"Resuming from step {start_step} of {config.total_steps} ({latest}).")
    stream = train_stream(config)
    eval_batches = data.eval_dataset(
        test_images, test_labels, spec, config.eval_batch_size, config.eval_steps
    )
    fit, stop = distributed_loop.fit_function(model, strategy, stop)
    callbacks = [
        checkpointing.StopOnNonFiniteLoss(learning_rate_schedule(config), manager),
        checkpointing.PeriodicCheckpoint(
            manager, learning_rate_schedule(config), config.checkpoint_every_steps, stop
        ),
        keras.callbacks.TensorBoard(os.path.join(scratch or config.model_dir, "logs")),
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
                callbacks=callbacks,
            )
        step = end_step
    checkpointing.save_model_atomically(
        model, os.path.join(scratch or config.model_dir, FINAL_MODEL)
    )
    return model


def evaluate(config: Config, *ensemble: Config, options: EvaluationOptions | None = None) -> dict:
    """Evaluates the newest checkpoint of `config.model_dir` on the test split.

    With further runs in `ensemble`, evaluates the ensemble of all of them (mean of their
    ensemble logits); `options` adds corrupted and OOD test sets. See
    `mixmo_tf.evaluation.run.evaluate_runs` for what is written where.

    Returns:
        The results, the raw test metrics of the ensemble at the top level, with `step`.

    Raises:
        FileNotFoundError: a run has no checkpoint, or the data is missing.
    """
    # Imported here: evaluation builds its models with this module's build_model.
    from mixmo_tf.evaluation.run import evaluate_runs

    return evaluate_runs([config, *ensemble], options)
