"""`MixMoModel`'s training step on PyTorch: `backward()` through `compute_mixmo_loss`.

As Keras' guide "Customizing what happens in fit() with PyTorch" writes it: zero the
gradients, `loss.backward()`, apply them without recording the update.
"""

from __future__ import annotations

import torch

from mixmo_tf.models.steps_stateful import StatefulSteps


class TorchSteps(StatefulSteps):
    """The steps of `MixMoModel` on the PyTorch backend."""

    def replicas_in_sync(self) -> int:
        """1: the loss is not divided among replicas (no tf.distribute here)."""
        return 1

    def step_on_mixed_batch(self, batch: dict, labels) -> dict[str, torch.Tensor]:
        """One optimizer step on a batch whose mixing is drawn: the loss, its gradients, SGD.

        `train_step` is `mix_batch` then this; a test (or a study) feeds its own masks,
        targets and weights here to compare a step with another implementation's.

        Args:
            batch: `mix_batch`'s dict (`images`, `masks`, `targets`, `weights`).
            labels: `(batch, M)` each slot's own label, for the training accuracies.

        Returns:
            The training metrics' current values.
        """
        self.zero_grad()
        loss = self.compute_mixmo_loss(batch)
        loss.scaled_loss.backward()
        variables = self.trainable_variables
        with torch.no_grad():
            self.optimizer.apply([v.value.grad for v in variables], variables)
            return self.update_training_metrics(loss, labels)
