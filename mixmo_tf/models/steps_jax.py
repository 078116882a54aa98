"""`MixMoModel`'s steps on JAX: pure functions of the state, `jax.value_and_grad` over the loss.

As Keras' guide "Customizing what happens in fit() with JAX" writes them: `fit` passes the
state (trainable, non-trainable, optimizer and metric variables' values) and gets the new
state back; nothing is assigned inside the jitted step. The model's backend-agnostic parts
(`mix_batch`, `compute_mixmo_loss`, the metric updates) run inside a `keras.StatelessScope`
that maps each variable to its value in the state and collects what they assign (BatchNorm
moving statistics, metric totals).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import keras


def _stateless(function: Callable[[], Any], *groups: tuple[Sequence, Sequence]):
    """`function()` with each group's variables reading the group's values.

    Args:
        function: reads and assigns Keras variables.
        *groups: `(variables, values)` pairs.

    Returns:
        `function()`'s result and, per group, the variables' values after it.
    """
    mapping = [pair for variables, values in groups for pair in zip(variables, values)]
    with keras.StatelessScope(state_mapping=mapping) as scope:
        result = function()
    return result, [[scope.get_current_value(v) for v in variables] for variables, _ in groups]


class JaxSteps:
    """The steps of `MixMoModel` on the JAX backend."""

    def replicas_in_sync(self) -> int:
        """1: under a Keras distribution the jitted step's loss is already the global mean."""
        return 1

    def train_step(self, state, data):
        data, _, _ = keras.utils.unpack_x_y_sample_weight(data)  # also from train_on_batch(x)
        optimizer_values = state[2]
        (iterations,) = [
            value
            for variable, value in zip(self.optimizer.variables, optimizer_values)
            if variable is self.optimizer.iterations
        ]
        batch = self.mix_batch(data, step=iterations)
        return self._stateless_step(state, batch, data["labels"])

    def step_on_mixed_batch(self, batch: dict, labels) -> dict:
        """One optimizer step on a batch whose mixing is drawn: the loss, its gradients, SGD.

        `train_step` is `mix_batch` then this, on the state `fit` carries; called directly,
        it reads the state from the variables, runs the step compiled and writes the new
        state back. A test (or a
        study) feeds its own masks, targets and weights here to compare a step with another
        implementation's.

        Args:
            batch: `mix_batch`'s dict (`images`, `masks`, `targets`, `weights`).
            labels: `(batch, M)` each slot's own label, for the training accuracies.

        Returns:
            The training metrics' current values.
        """
        if getattr(self, "_compiled_step", None) is None:
            self._compiled_step = jax.jit(self._stateless_step)
        groups = self._state_variables()
        state = tuple([variable.value for variable in group] for group in groups)
        logs, state = self._compiled_step(state, batch, labels)
        for group, values in zip(groups, state):
            for variable, value in zip(group, values):
                variable.assign(value)
        return logs

    def _state_variables(self) -> tuple[list, list, list, list]:
        """The variables of `fit`'s training state, in its order."""
        return (
            self.trainable_variables,
            self.non_trainable_variables,
            self.optimizer.variables,
            self.metrics_variables,
        )

    def _stateless_step(self, state, batch: dict, labels):
        """The step as a pure function: `(logs, new state)`."""
        trainable, non_trainable, optimizer_values, metric_values = state

        def scaled_loss(trainable_values):
            loss, (_, non_trainable_values, _) = _stateless(
                lambda: self.compute_mixmo_loss(batch),
                (self.trainable_variables, trainable_values),
                (self.non_trainable_variables, non_trainable),
                (self.optimizer.variables, optimizer_values),
            )
            return loss.scaled_loss, (loss, non_trainable_values)

        (_, (loss, non_trainable)), gradients = jax.value_and_grad(scaled_loss, has_aux=True)(
            trainable
        )
        trainable, optimizer_values = self.optimizer.stateless_apply(
            optimizer_values, gradients, trainable
        )
        logs, (metric_values,) = _stateless(
            lambda: self.update_training_metrics(loss, labels),
            (self.metrics_variables, metric_values),
        )
        return logs, (trainable, non_trainable, optimizer_values, metric_values)

    def test_step(self, state, data):
        data, _, _ = keras.utils.unpack_x_y_sample_weight(data)  # also from test_on_batch(x)
        trainable, non_trainable, metric_values = state
        logs, (_, _, metric_values) = _stateless(
            lambda: self.evaluate_batch(data),
            (self.trainable_variables, trainable),
            (self.non_trainable_variables, non_trainable),
            (self.metrics_variables, metric_values),
        )
        return logs, (trainable, non_trainable, metric_values)

    def predict_step(self, state, data):
        inputs, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        images = inputs["images"] if isinstance(inputs, dict) else inputs
        trainable, non_trainable = state
        return self.stateless_call(trainable, non_trainable, images, training=False)
