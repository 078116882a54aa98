"""`train_step` wires the mixing into the network and the loss as the spec says.

The mixing arithmetic has its own tests (test_mixing.py, test_input_mixing.py); these watch
a real training step from the outside, through a probe network whose stems and core record
what they receive (tests/helpers/probe_network.py). Expected values are computed from what the
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
from helpers.models import perturb_batchnorm, softmax
from helpers.probe_network import (
    coded_batch,
    head_logits,
    head_weights,
    own_shares,
    probe_model,
    received,
)

L2 = 3e-4


def _numpy_variables(model) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(v).copy() for v in model.trainable_variables]


def _weights_from_masks(masks: np.ndarray, power: float) -> np.ndarray:
    """Root-r weights w_i = M k_i^(1/r) / sum_j k_j^(1/r) of the masks' areas, docs/method.md §4."""
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


def test_train_step_loss_and_update_follow_the_spec():
    # Cut-MixMo in every batch: the schedule keeps p = 1 until 11/12 of 100 epochs.
    model = probe_model(cut_prob=1.0, steps_per_epoch=1, epochs=100, learning_rate=0.05)
    perturb_batchnorm(model, seed=0)
    rng = np.random.default_rng(1)
    for member in range(2):
        bias = model.network.get_layer(f"head_{member}").bias
        bias.assign(rng.uniform(-0.5, 0.5, bias.shape).astype(np.float32))
    # Conv kernel, BN gamma and beta, and each head's kernel and bias: all under the L2.
    paths = sorted(v.path.split("/")[-1] for v in model.trainable_variables)
    assert paths == ["beta", "bias", "bias", "gamma", "kernel", "kernel", "kernel"]
    batch = coded_batch(16, 2, seed=2)

    logs, seen, weights, before = _step(model, batch, step=3)

    masks = seen["masks"]
    assert np.all((masks == 0) | (masks == 1)), "a Cut-MixMo batch: binary masks"
    assert len(np.unique(masks.mean(axis=(1, 2))[:, 0])) > 4, "areas differ per sample"
    targets = np.eye(5)[batch["labels"]]
    cross_entropy, squares = _expected_loss(seen, weights, targets, before)
    np.testing.assert_allclose(float(logs["cross_entropy"]), cross_entropy, rtol=1e-5)
    np.testing.assert_allclose(float(logs["l2_loss"]), squares, rtol=1e-5)
    np.testing.assert_allclose(float(logs["loss"]), cross_entropy + L2 * squares, rtol=1e-5)
    # The comparison can fail: equal weights (root r = infinity) give another number.
    equal = np.mean(np.sum(_cross_entropy(targets, head_logits(weights, seen["pooled"])), -1))
    assert abs(equal - cross_entropy) > 1e-3 * cross_entropy

    # The heads' gradient in closed form: d/dW_i = pooled^T (w_i (p_i - y_i)) / B + 2 l2 W_i.
    # First Nesterov step from zero momentum: delta = -lr * (1 + momentum) * gradient.
    probabilities = softmax(head_logits(weights, seen["pooled"]))
    member_weights = _weights_from_masks(masks, 3.0)
    for member, (kernel, bias) in enumerate(weights):
        residual = member_weights[:, member, None] * (probabilities[:, member] - targets[:, member])
        head = model.network.get_layer(f"head_{member}")
        for variable, value, gradient in (
            (head.kernel, kernel, seen["pooled"].T @ residual / 16 + 2 * L2 * kernel),
            (head.bias, bias, residual.mean(axis=0) + 2 * L2 * bias),
        ):
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(variable) - value,
                -0.05 * 1.9 * gradient,
                rtol=1e-3,
                atol=1e-7,
            )


@pytest.mark.parametrize(
    "msda, cut_prob", [("cutmix", 1.0), ("mixup", 1.0), ("cutmix", 0.0)], ids=str
)
def test_input_mixing_reaches_the_network_with_the_own_image_in_the_majority(msda, cut_prob):
    model = probe_model(msda=msda, msda_prob=1.0, cut_prob=cut_prob, steps_per_epoch=1, epochs=100)
    swapped = 0
    for step in range(3):
        batch = coded_batch(32, 2, seed=step)
        logs, seen, weights, before = _step(model, batch, step)
        shares = own_shares(seen)
        sees_something = seen["masks"].max(axis=(1, 2)) > 0
        assert shares[sees_something].min() >= 0.5 - 1e-6
        # Where the plain pixel share is below 1/2 somewhere the swap happened in pixels.
        swapped += np.sum(seen["images"][..., 0].mean(axis=(2, 3)) < 0.5)
        eye = np.eye(5)
        targets = (
            shares[..., None] * eye[batch["labels"]]
            + (1 - shares[..., None]) * eye[batch["partner_labels"]]
        )
        cross_entropy, squares = _expected_loss(seen, weights, targets, before)
        np.testing.assert_allclose(float(logs["cross_entropy"]), cross_entropy, rtol=1e-5)
        np.testing.assert_allclose(float(logs["loss"]), cross_entropy + L2 * squares, rtol=1e-5)
    if msda == "cutmix" and cut_prob == 1.0:
        assert swapped > 0, "Cut-MixMo + CutMix leaves some own images a minor pixel share"


def test_single_network_input_mixing_keeps_the_plain_roles():
    model = probe_model(num_members=1, msda="cutmix", msda_prob=1.0, mixing_alpha=0.0)
    batch = coded_batch(64, 1, seed=4)
    logs, seen, weights, before = _step(model, batch, step=0)
    shares = own_shares(seen)
    assert (shares < 0.5).any() and (shares > 0.5).any()
    eye = np.eye(5)
    targets = (
        shares[..., None] * eye[batch["labels"]]
        + (1 - shares[..., None]) * eye[batch["partner_labels"]]
    )
    cross_entropy, _ = _expected_loss(seen, weights, targets, before, power=1.0)
    np.testing.assert_allclose(float(logs["cross_entropy"]), cross_entropy, rtol=1e-5)


@pytest.mark.slow
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
    """The authors' values at 1-indexed epochs of 300 (docs/method.md §3)."""
    model = probe_model(cut_prob=0.5, steps_per_epoch=10, epochs=300)
    for step in ((epoch - 1) * 10, epoch * 10 - 1):  # first and last step of the epoch
        model.optimizer.iterations.assign(step)
        assert float(model.current_cut_probability()) == pytest.approx(probability, abs=1e-6)
