"""MixMo's mixing computes the same arithmetic and draws the same distributions on every backend.

CI runs this module under TensorFlow, JAX and PyTorch. It proves, on the backend Keras runs:
- the deterministic functions (box masks, mixing masks, root-r loss weights, cut schedule,
  input masks, pixel mix, label correction, own-majority swap, soft labels, the
  `FeatureMixing` layer) equal plain-numpy references to 1e-6 on hand-written parameters, so
  the backends agree with each other to 1e-6 as well;
- the sampled ratios, box centres, cut-box areas, cut frequency and role order follow the
  spec's distributions (Kolmogorov-Smirnov and chi-square tests against closed forms and a
  numpy simulation); `test_mixing_across_backends.py` compares the backends' draws directly;
- on JAX, a whole batch's mixing traces under `jax.jit` with the step a traced value.
"""

import math

import keras
import numpy as np
import pytest
from helpers.mixing import (
    NUM_STANDARD_ERRORS,
    assert_moments,
    numpy_corrected_share,
    reference_box_mask,
)
from keras import ops
from scipy import stats

from mixmo_tf.mixing import features, inputs, keyed_random

pytestmark = pytest.mark.backends

TOLERANCE = 1e-6


def tensor(values, dtype: str = "float32"):
    return ops.convert_to_tensor(np.asarray(values), dtype=dtype)


def as_numpy(value) -> np.ndarray:
    return ops.convert_to_numpy(value)


def feature_params(ratios, centers, roles, use_cut: bool) -> features.MixingParams:
    return features.MixingParams(
        use_cut=tensor(use_cut, "bool"),
        ratios=tensor(ratios),
        centers=tensor(centers, "int32"),
        roles=tensor(roles, "int32"),
    )


def input_params(rng, batch_size: int, num_members: int, size: int) -> inputs.InputMixingParams:
    """About 60% of slots mixed, uniform ratios, centres anywhere on a size x size image."""
    return inputs.InputMixingParams(
        apply=tensor(rng.uniform(size=(batch_size, num_members)) < 0.6, "bool"),
        own_ratios=tensor(rng.uniform(size=(batch_size, num_members))),
        centers=tensor(rng.integers(0, size, (batch_size, num_members, 2)), "int32"),
    )


def numpy_boxes(ratios, centers, height: int, width: int) -> np.ndarray:
    return np.stack(
        [reference_box_mask(float(r), tuple(c), height, width) for r, c in zip(ratios, centers)]
    )


def numpy_mixing_masks(ratios, centers, roles, use_cut, height, width) -> np.ndarray:
    """docs/method.md §4 in numpy: kappa everywhere, or the role-0 box and the rest shared."""
    batch_size, num_members = ratios.shape
    if num_members == 1:
        return np.ones((batch_size, height, width, 1))
    if not use_cut:
        return np.broadcast_to(ratios[:, None, None, :], (batch_size, height, width, num_members))
    box = numpy_boxes(ratios[:, 0], centers, height, width)[..., None]
    others = ratios[:, 1:] / np.maximum(ratios[:, 1:].sum(axis=-1, keepdims=True), 1e-7)
    role_masks = np.concatenate([box, (1 - box) * others[:, None, None, :]], axis=-1)
    return role_masks[..., roles]


def numpy_own_masks(params: inputs.InputMixingParams, kind: str, size: int) -> np.ndarray:
    apply, ratios = as_numpy(params.apply), as_numpy(params.own_ratios)
    if kind == "mixup":
        own = np.broadcast_to(ratios[..., None, None], (*ratios.shape, size, size))
    else:
        centers = as_numpy(params.centers).reshape(-1, 2)
        boxes = numpy_boxes(1.0 - ratios.reshape(-1), centers, size, size)
        own = 1.0 - boxes.reshape(*ratios.shape, size, size)
    return np.where(apply[..., None, None], own, 1.0)[..., None]


# ---- arithmetic ----------------------------------------------------------------------------


@pytest.mark.parametrize("height, width", [(8, 8), (5, 7)])
def test_box_masks_equal_the_reference_box(height, width):
    rng = np.random.default_rng(height * 10 + width)
    ratios = rng.uniform(size=60).astype(np.float32)
    centers = np.stack([rng.integers(0, height, 60), rng.integers(0, width, 60)], axis=1)
    centers[:8] = [[0, 0], [0, width - 1], [height - 1, 0], [height - 1, width - 1]] * 2
    ratios[:4], ratios[4:6] = 1.0, 0.0
    boxes = features.box_masks(tensor(ratios), tensor(centers, "int32"), height, width)
    np.testing.assert_array_equal(as_numpy(boxes), numpy_boxes(ratios, centers, height, width))


@pytest.mark.parametrize("use_cut", [True, False])
@pytest.mark.parametrize("roles", [[0], [1, 0], [2, 0, 1], [3, 1, 0, 2]])
def test_mixing_masks_equal_numpy(roles, use_cut):
    num_members = len(roles)
    rng = np.random.default_rng(num_members)
    ratios = rng.dirichlet([2.0] * num_members, 6).astype(np.float32)
    centers = rng.integers(0, 8, (6, 2))
    masks = features.mixing_masks(feature_params(ratios, centers, roles, use_cut), 8, 8)
    expected = numpy_mixing_masks(ratios, centers, roles, use_cut, 8, 8)
    np.testing.assert_allclose(as_numpy(masks), expected, atol=TOLERANCE)


@pytest.mark.parametrize("power", [1.0, 3.0])
def test_loss_weights_equal_numpy(power):
    ratios = np.random.default_rng(2).dirichlet([2.0] * 3, 16).astype(np.float32)
    ratios[0] = [0.0, 0.25, 0.75]
    rooted = ratios.astype(np.float64) ** (1.0 / power)
    expected = 3 * rooted / rooted.sum(axis=1, keepdims=True)
    weights = features.loss_weights(tensor(ratios), power)
    np.testing.assert_allclose(as_numpy(weights), expected, atol=TOLERANCE)


@pytest.mark.parametrize("progress", [0.0, 11 / 12, 0.95, 1.0, 1.1])
def test_cut_probability_schedule_equals_its_closed_form(progress):
    expected = 0.5 * min(1.0, max(0.0, (1.0 - progress) / (1.0 - 11 / 12)))
    value = features.cut_probability(tensor(progress), 0.5, 11 / 12)
    assert float(as_numpy(value)) == pytest.approx(expected, abs=TOLERANCE)


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_own_pixel_masks_equal_numpy(kind):
    params = input_params(np.random.default_rng(3), 12, 2, 8)
    own = inputs.own_pixel_masks(params, kind, 8, 8)
    np.testing.assert_allclose(as_numpy(own), numpy_own_masks(params, kind, 8), atol=TOLERANCE)


@pytest.mark.parametrize("pixels, grid", [(8, 8), (8, 4)])
def test_label_correction_and_own_majority_equal_numpy(pixels, grid):
    rng = np.random.default_rng(pixels + grid)
    params = input_params(rng, 10, 2, pixels)
    own = numpy_own_masks(params, "cutmix", pixels).astype(np.float32)
    kappa = rng.uniform(size=10).astype(np.float32)
    member_masks = numpy_mixing_masks(
        np.stack([kappa, 1 - kappa], axis=1),
        rng.integers(0, grid, (10, 2)),
        [1, 0],
        True,
        grid,
        grid,
    ).astype(np.float32)
    share = inputs.corrected_own_share(tensor(own), tensor(member_masks))
    expected_share = numpy_corrected_share(own, member_masks)
    np.testing.assert_allclose(as_numpy(share), expected_share, atol=TOLERANCE)

    swapped_own, swapped_share = inputs.own_majority(tensor(own), share)
    swap = expected_share < 0.5
    assert swap.any() and not swap.all()
    np.testing.assert_allclose(
        as_numpy(swapped_own), np.where(swap[..., None, None, None], 1 - own, own), atol=TOLERANCE
    )
    np.testing.assert_allclose(
        as_numpy(swapped_share), np.where(swap, 1 - expected_share, expected_share), atol=TOLERANCE
    )


def test_pixel_mix_and_soft_labels_equal_numpy():
    rng = np.random.default_rng(4)
    images, partners = rng.normal(size=(2, 3, 2, 4, 4, 3)).astype(np.float32)
    own = rng.uniform(size=(3, 2, 4, 4, 1)).astype(np.float32)
    mixed = inputs.mix_images(tensor(images), tensor(partners), tensor(own))
    np.testing.assert_allclose(as_numpy(mixed), own * images + (1 - own) * partners, atol=1e-6)
    labels, partner_labels = rng.integers(0, 10, (2, 3, 2))
    shares = rng.uniform(size=(3, 2)).astype(np.float32)
    targets = inputs.soft_labels(
        tensor(labels, "int32"), tensor(partner_labels, "int32"), tensor(shares), 10
    )
    eye = np.eye(10)
    expected = shares[..., None] * eye[labels] + (1 - shares[..., None]) * eye[partner_labels]
    np.testing.assert_allclose(as_numpy(targets), expected, atol=TOLERANCE)


@pytest.mark.parametrize("num_members", [1, 3])
def test_feature_mixing_layer_equals_numpy(num_members):
    rng = np.random.default_rng(num_members)
    maps = [rng.normal(size=(2, 4, 4, 3)).astype(np.float32) for _ in range(num_members)]
    masks = rng.dirichlet([1.0] * num_members, (2, 4, 4)).astype(np.float32)
    mixed = features.FeatureMixing(num_members)([tensor(m) for m in maps] + [tensor(masks)])
    expected = num_members * sum(masks[..., i : i + 1] * m for i, m in enumerate(maps))
    np.testing.assert_allclose(as_numpy(mixed), expected, atol=1e-5)


# ---- distributions -------------------------------------------------------------------------

NUM_SAMPLES = 20_000


@pytest.mark.parametrize("alpha", [1.0, 2.0, 0.5])  # sums of exponentials, and Gamma
def test_ratios_are_dirichlet(alpha):
    ratios = as_numpy(features.sample_dirichlet(keyed_random.key(1, 1), NUM_SAMPLES, 3, alpha))
    np.testing.assert_allclose(ratios.sum(axis=-1), 1.0, atol=1e-5)
    assert_moments(ratios, mean=1 / 3, variance=(1 / 3) * (2 / 3) / (3 * alpha + 1))
    # A component of Dirichlet(a, a, a) is Beta(a, 2a).
    first = ratios[:, 0].astype(np.float64)
    assert stats.kstest(first, stats.beta(alpha, 2 * alpha).cdf).pvalue > 1e-4


def test_box_centres_are_uniform_over_the_grid():
    centers = as_numpy(features.sample_box_centers(keyed_random.key(2, 1), NUM_SAMPLES, 5, 7))
    counts = np.zeros((5, 7))
    np.add.at(counts, (centers[:, 0], centers[:, 1]), 1)
    expected = NUM_SAMPLES / 35
    assert stats.chi2(34).sf(np.sum((counts - expected) ** 2 / expected)) > 1e-4


def test_cut_box_areas_match_a_numpy_simulation_of_the_spec():
    """Box areas after clipping: kappa ~ Beta(2, 2), side int(8 sqrt(kappa)), centre anywhere."""
    params = features.sample_mixing_params(
        keyed_random.key(3, 1), keyed_random.key(3, 2), NUM_SAMPLES, 2, 2.0, 1.0, 8, 8
    )
    masks = as_numpy(features.mixing_masks(params, 8, 8))
    box_member = int(np.argmin(as_numpy(params.roles)))
    areas = masks[..., box_member].mean(axis=(1, 2))
    rng = np.random.default_rng(3)
    simulated = numpy_boxes(rng.beta(2, 2, 4000), rng.integers(0, 8, (4000, 2)), 8, 8)
    assert stats.ks_2samp(areas, simulated.mean(axis=(1, 2))).pvalue > 1e-4


def test_cut_and_roles_are_chosen_once_per_batch_with_their_probabilities():
    num_batches, cut_prob = 400, 0.3
    use_cut, box_members = [], []
    for batch in range(num_batches):
        params = features.sample_mixing_params(
            keyed_random.key(4, batch), keyed_random.key(5, batch), 2, 3, 2.0, cut_prob, 4, 4
        )
        roles = as_numpy(params.roles)
        assert sorted(roles.tolist()) == [0, 1, 2]
        use_cut.append(bool(as_numpy(params.use_cut)))
        box_members.append(int(np.argmin(roles)))
    tolerance = NUM_STANDARD_ERRORS * math.sqrt(cut_prob * (1 - cut_prob) / num_batches)
    assert abs(np.mean(use_cut) - cut_prob) < tolerance
    shares = np.bincount(box_members, minlength=3) / num_batches
    np.testing.assert_allclose(shares, 1 / 3, atol=NUM_STANDARD_ERRORS * math.sqrt(2 / 9 / 400))


def test_input_mixing_draws_slots_ratios_and_centres():
    params = inputs.sample_input_mixing_params(
        keyed_random.key(6, 1), NUM_SAMPLES, 2, 0.3, 1.0, 6, 10
    )
    apply = as_numpy(params.apply)
    assert apply.shape == (NUM_SAMPLES, 2)
    np.testing.assert_allclose(
        apply.mean(axis=0), 0.3, atol=NUM_STANDARD_ERRORS * math.sqrt(0.21 / NUM_SAMPLES)
    )
    ratios = as_numpy(params.own_ratios).reshape(-1).astype(np.float64)
    assert stats.kstest(ratios, stats.uniform.cdf).pvalue > 1e-4
    centers = as_numpy(params.centers)
    assert centers.shape == (NUM_SAMPLES, 2, 2)
    assert centers[..., 0].min() == 0 and centers[..., 0].max() == 5
    assert centers[..., 1].min() == 0 and centers[..., 1].max() == 9


# ---- JAX: traced ---------------------------------------------------------------------------


def test_a_batch_of_mixing_traces_under_jax_jit():
    if keras.backend.backend() != "jax":
        pytest.skip("JAX only")
    import jax

    def mixing(step):
        step_key = keyed_random.key(9, step)
        batch_seed, sample_seed, input_seed = (keyed_random.fold_in(step_key, s) for s in range(3))
        params = features.sample_mixing_params(batch_seed, sample_seed, 4, 2, 2.0, 0.5, 4, 4)
        masks = features.mixing_masks(params, 4, 4)
        input_mixing = inputs.sample_input_mixing_params(input_seed, 4, 2, 0.5, 1.0, 8, 8)
        own = inputs.own_pixel_masks(input_mixing, "cutmix", 8, 8)
        share = inputs.corrected_own_share(own, masks)
        return masks, inputs.own_majority(own, share)[1]

    traced = jax.jit(mixing)
    for step in range(2):
        for eager, jitted in zip(mixing(step), traced(jax.numpy.asarray(step))):
            np.testing.assert_allclose(jitted, eager, atol=TOLERANCE)
    assert not np.array_equal(traced(0)[0], traced(1)[0])
