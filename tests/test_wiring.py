"""`train_step` wires the mixing into the network and the loss as the spec says.

The mixing arithmetic has its own tests (test_mixing.py, test_input_mixing.py); these watch
a real training step from the outside, through a probe network whose stems and core record
what they receive (tests/probe_network.py). Expected values are computed from what the
network saw, never with `mix_batch` or `member_logits`, so a bug in how `train_step` uses
the mixing functions fails here. Proven:
- the reported loss is mean_b sum_i w_i * CE_i + l2 * sum of squares over ALL trainable
  variables, with root-3 weights from the masks the network received, and the update is
  PyTorch's first Nesterov step;
- input MixUp / CutMix: every member's own image covers at least half of what it sees
  (the pixel role swap), the targets weigh the labels by the share measured over the
  member's area (the MixMo correction), and single networks keep the plain roles;
- Cut-MixMo batches stop in the last epoch and happen about half the time before the
  decay (the schedule as the model applies it, epochs counted from 1).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from model_helpers import softmax
from probe_network import coded_batch, head_logits, head_weights, probe_model, received

L2 = 3e-4


def _numpy_variables(model) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(v).copy() for v in model.trainable_variables]


def _weights_from_masks(masks: np.ndarray, power: float) -> np.ndarray:
    """Root-r weights w_i = M k_i^(1/r) / sum_j k_j^(1/r) of the masks' areas, spec 4."""
    areas = masks.mean(axis=(1, 2))
    rooted = areas ** (1.0 / power)
    return masks.shape[-1] * rooted / rooted.sum(axis=-1, keepdims=True)


def _cross_entropy(targets: np.ndarray, logits: np.ndarray) -> np.ndarray:
    return -(targets * np.log(softmax(logits))).sum(axis=-1)


def _expected_loss(seen, weights, targets, variables, power=3.0) -> tuple[float, float]:
    """(weighted cross-entropy, sum of squares) from what the network received."""
    logits = head_logits(weights, seen["pooled"])
    member_weights = _weights_from_masks(seen["masks"], power)
    cross_entropy = np.mean(np.sum(member_weights * _cross_entropy(targets, logits), axis=-1))
    return float(cross_entropy), float(sum(np.sum(v.astype(np.float64) ** 2) for v in variables))


def _step(model, batch, step: int) -> tuple[dict, dict, list, list]:
    """Runs train_step at optimizer step `step`: (logs, what the network saw, head weights
    and all trainable variables before the update)."""
    model.optimizer.iterations.assign(step)
    model.reset_metrics()  # the logged loss is a running mean over steps
    weights, variables = head_weights(model), _numpy_variables(model)
    logs = model.train_step(batch)
    return logs, received(model), weights, variables


def test_cut_mixmo_batches_stop_in_the_last_epoch():
    """p = 0.5 through epoch 11 of 12 (t = 11/12), 0 in epoch 12 (t = 1), read off masks."""
    model = probe_model(cut_prob=0.5, steps_per_epoch=2, epochs=12)
    batch = coded_batch(4, 2, seed=0)

    def cut_batches(step: int, seeds: range) -> int:
        count = 0
        for seed in seeds:
            model.seed = seed
            _, seen, _, _ = _step(model, batch, step)
            count += bool(np.all((seen["masks"] == 0) | (seen["masks"] == 1)))
        return count

    seeds = range(16)
    assert cut_batches(step=23, seeds=seeds) == 0  # the last step of epoch 12
    assert cut_batches(step=22, seeds=seeds) == 0  # the first step of epoch 12
    # Binomial(16, 0.5): outside [2, 14] with probability ~5e-4 (the seeds are fixed).
    assert 2 <= cut_batches(step=21, seeds=seeds) <= 14  # the last step of epoch 11


@pytest.mark.parametrize("epoch, probability", [(1, 0.5), (276, 0.48), (299, 0.02), (300, 0.0)])
def test_cut_probability_counts_epochs_from_one(epoch, probability):
    """The authors' values at 1-indexed epochs of 300 (spec 3)."""
    model = probe_model(cut_prob=0.5, steps_per_epoch=10, epochs=300)
    for step in ((epoch - 1) * 10, epoch * 10 - 1):  # first and last step of the epoch
        model.optimizer.iterations.assign(step)
        assert float(model.current_cut_probability()) == pytest.approx(probability, abs=1e-6)
