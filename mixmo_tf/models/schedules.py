"""Learning-rate schedule of the paper: per-step linear warm-up, then step decay."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from mixmo_tf.config.settings import Config


@keras.saving.register_keras_serializable(package="mixmo_tf")
class WarmupStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """lr(step) = base_lr * min(1, (step + 1) / warmup_steps) * factor ** (#boundaries <= step).

    Args:
        base_lr: learning rate after warm-up.
        warmup_steps: steps of linear warm-up from base_lr / warmup_steps; 0 disables it.
        boundaries: steps (0-indexed) at which the rate is multiplied by `factor`.
        factor: decay factor. Defaults to 0.1.
    """

    def __init__(
        self,
        base_lr: float,
        warmup_steps: int,
        boundaries: Sequence[int],
        factor: float = 0.1,
    ):
        if base_lr <= 0:
            raise ValueError(f"base_lr must be > 0. Received: base_lr={base_lr}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0. Received: warmup_steps={warmup_steps}")
        if list(boundaries) != sorted(boundaries):
            raise ValueError(f"boundaries must be ascending. Received: boundaries={boundaries}")
        self.base_lr = float(base_lr)
        self.warmup_steps = int(warmup_steps)
        self.boundaries = [int(b) for b in boundaries]
        self.factor = float(factor)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = ops.minimum(1.0, (step + 1.0) / max(self.warmup_steps, 1))
        passed = sum(ops.cast(step >= boundary, "float32") for boundary in self.boundaries)
        return self.base_lr * warmup * ops.power(self.factor, passed)

    def get_config(self):
        return {
            "base_lr": self.base_lr,
            "warmup_steps": self.warmup_steps,
            "boundaries": self.boundaries,
            "factor": self.factor,
        }


def learning_rate_schedule(config: Config) -> WarmupStepDecay:
    """The paper's per-step warm-up and step decay, with the numbers derived by `config`."""
    return WarmupStepDecay(
        config.base_learning_rate,
        config.warmup_steps,
        config.lr_decay_steps,
        config.lr_decay_factor,
    )
