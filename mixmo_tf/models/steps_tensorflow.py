"""`MixMoModel`'s training step on TensorFlow: a `GradientTape` over `compute_mixmo_loss`.

As Keras' guide "Customizing what happens in fit() with TensorFlow" writes it; `fit` traces
it into a `tf.function` and runs it under the run's tf.distribute strategy.
"""

from __future__ import annotations

import tensorflow as tf

from mixmo_tf.models.steps_stateful import StatefulSteps


class TensorFlowSteps(StatefulSteps):
    """The steps of `MixMoModel` on the TensorFlow backend."""

    def replicas_in_sync(self) -> int:
        """Replicas of the tf.distribute strategy in scope, whose gradients `fit` sums."""
        return tf.distribute.get_strategy().num_replicas_in_sync

    def step_on_mixed_batch(self, batch: dict, labels) -> dict[str, tf.Tensor]:
        """One optimizer step on a batch whose mixing is drawn: the loss, its gradients, SGD.

        `train_step` is `mix_batch` then this; a test (or a study) feeds its own masks,
        targets and weights here to compare a step with another implementation's.

        Args:
            batch: `mix_batch`'s dict (`images`, `masks`, `targets`, `weights`).
            labels: `(batch, M)` each slot's own label, for the training accuracies.

        Returns:
            The training metrics' current values.
        """
        with tf.GradientTape() as tape:
            loss = self.compute_mixmo_loss(batch)
        gradients = tape.gradient(loss.scaled_loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        return self.update_training_metrics(loss, labels)
