"""The MixMo model of a Config: the one place a run's model is built.

Training builds it compiled with its optimizer; evaluation, export and prediction build it
uncompiled and load a checkpoint's weights into it (`mixmo_tf.training.checkpoints.restore_run`).
"""

from __future__ import annotations

import keras
import numpy as np

from mixmo_tf.config.backbones import build_backbone
from mixmo_tf.config.settings import Config
from mixmo_tf.models.mixmo_model import MixMoModel
from mixmo_tf.models.network import network_from_backbone
from mixmo_tf.models.optimizers import make_optimizer
from mixmo_tf.models.precision import dtype_policy
from mixmo_tf.models.schedules import learning_rate_schedule


def _jit_compile(config: Config) -> bool | str:
    """`--jit_compile` is TensorFlow's choice of XLA over its own graph; JAX compiles its step
    with XLA in any case (Keras' "auto"; without it every op runs on its own, about 10 times
    slower: bench/README.md) and PyTorch runs eagerly ("auto" as well)."""
    if keras.backend.backend() == "tensorflow":
        return config.jit_compile
    return "auto"


def build_model(config: Config, with_optimizer: bool = True) -> MixMoModel:
    """The MixMo model of `config`, its variables created; compiled with its optimizer.

    The network is `config.backbone`'s, built by its registry entry
    (`mixmo_tf.config.backbones`). Layers compute in `config.precision` (resolved for this
    machine if "auto"); variables, logits and the loss stay float32.

    Args:
        config: the run.
        with_optimizer: compile with the run's optimizer and create its state (to train or
            resume); False leaves the model uncompiled, to predict with.
    """
    spec = config.spec
    with dtype_policy(config.precision):
        backbone = build_backbone(config.backbone, config.depth, config.width, spec.image_shape)
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
    model(np.zeros((1, *spec.image_shape), np.float32))
    if not with_optimizer:
        return model
    optimizer = make_optimizer(config.optimizer, learning_rate_schedule(config), config.momentum)
    # Under mixed_float16, compile wraps the optimizer in a LossScaleOptimizer.
    model.compile(optimizer=optimizer, jit_compile=_jit_compile(config))
    model.optimizer.build(model.trainable_variables)
    return model
