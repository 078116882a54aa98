"""Input-level mixing (+MixUp / +CutMix inside MixMo) follows docs/method.md §6.

Proves that:
- each (slot, member) is mixed independently with probability `prob`, with an own-image
  ratio lambda ~ Beta(1, 1) and box centres on the pixel grid;
- MixUp own masks are the constant lambda, CutMix own masks are 1 minus the reference box of
  area 1 - lambda, and unmixed slots keep mask 1;
- the pixel mix, the MixMo-area label correction lambda' = mean(own * m) / (mean(m) + 1e-8)
  (with 2x2 average pooling when the pixel grid is twice the feature grid) and the soft
  labels match plain numpy;
- where the own image is the minor part, the pixels swap regions and the shares swap, and
  the own share members see after Cut-MixMo + CutMix is distributed as a plain-numpy
  simulation of docs/method.md §6 says (never below 1/2);
- the functions give identical results eagerly and inside `tf.data`.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
from helpers import probe_network
from helpers.mixing import (
    NUM_STANDARD_ERRORS,
    assert_moments,
    numpy_corrected_share,
    reference_box_mask,
)
from scipy import stats

from mixmo_tf.mixing import features as feature_mixing
from mixmo_tf.mixing import inputs as input_mixing


def make_params(apply, own_ratios, centers) -> input_mixing.InputMixingParams:
    """Hand-written input-mixing parameters."""
    return input_mixing.InputMixingParams(
        apply=tf.constant(apply, tf.bool),
        own_ratios=tf.constant(own_ratios, tf.float32),
        centers=tf.constant(centers, tf.int32),
    )


def random_params(rng, batch_size, num_members, height, width) -> input_mixing.InputMixingParams:
    """Parameters with about 60% of slots mixed, uniform ratios and centres anywhere."""
    return make_params(
        apply=rng.uniform(size=(batch_size, num_members)) < 0.6,
        own_ratios=rng.uniform(size=(batch_size, num_members)),
        centers=np.stack(
            [
                rng.integers(0, height, (batch_size, num_members)),
                rng.integers(0, width, (batch_size, num_members)),
            ],
            axis=-1,
        ),
    )


# ---- sampling ------------------------------------------------------------------------------


@pytest.mark.parametrize("prob", [0.5, 0.2])
def test_apply_is_independent_per_slot_and_member_with_probability_prob(prob):
    batch_size = 50_000
    params = input_mixing.sample_input_mixing_params(
        tf.constant([4, 2], tf.int64), batch_size, 2, prob, 1.0, 8, 8
    )
    apply = params.apply.numpy()
    assert apply.shape == (batch_size, 2)
    tolerance = NUM_STANDARD_ERRORS * math.sqrt(prob * (1 - prob) / batch_size)
    np.testing.assert_allclose(apply.mean(axis=0), prob, atol=tolerance)
    # Independent across members: both mixed with probability prob^2.
    both = np.mean(apply[:, 0] & apply[:, 1])
    assert abs(both - prob**2) < NUM_STANDARD_ERRORS * math.sqrt(
        prob**2 * (1 - prob**2) / batch_size
    )


def test_own_ratios_are_beta_one_one_and_centres_on_the_pixel_grid():
    batch_size, height, width = 100_000, 6, 10
    params = input_mixing.sample_input_mixing_params(
        tf.constant([7, 1], tf.int64), batch_size, 2, 0.5, 1.0, height, width
    )
    ratios = params.own_ratios.numpy()
    assert ratios.shape == (batch_size, 2)
    # Beta(1, 1) is uniform: mean 1/2, variance 1/12.
    assert_moments(ratios, mean=0.5, variance=1.0 / 12.0)
    centers = params.centers.numpy()
    assert centers.shape == (batch_size, 2, 2)
    assert centers[..., 0].min() == 0 and centers[..., 0].max() == height - 1
    assert centers[..., 1].min() == 0 and centers[..., 1].max() == width - 1


def test_sampling_is_deterministic_per_seed():
    def draw(seed):
        p = input_mixing.sample_input_mixing_params(
            tf.constant(seed, tf.int64), 32, 2, 0.5, 1.0, 8, 8
        )
        return p.apply.numpy(), p.own_ratios.numpy(), p.centers.numpy()

    first, again, other = draw([1, 2]), draw([1, 2]), draw([1, 3])
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(first[1], other[1])


# ---- masks ---------------------------------------------------------------------------------


def test_mixup_own_masks_are_lambda_where_applied_and_one_elsewhere():
    params = random_params(np.random.default_rng(0), 5, 3, 4, 4)
    own = input_mixing.own_pixel_masks(params, "mixup", 4, 6).numpy()
    assert own.shape == (5, 3, 4, 6, 1)
    expected = np.where(params.apply.numpy(), params.own_ratios.numpy(), 1.0)
    np.testing.assert_allclose(
        own, np.broadcast_to(expected[:, :, None, None, None], own.shape), rtol=1e-6
    )


@pytest.mark.parametrize("height, width", [(8, 8), (32, 32), (5, 9)])
def test_cutmix_own_masks_are_one_minus_the_partner_box(height, width):
    rng = np.random.default_rng(height + width)
    params = random_params(rng, 40, 2, height, width)
    own = input_mixing.own_pixel_masks(params, "cutmix", height, width).numpy()[..., 0]
    apply, ratios, centers = params.apply.numpy(), params.own_ratios.numpy(), params.centers.numpy()
    for b in range(40):
        for m in range(2):
            if apply[b, m]:
                partner_ratio = float(np.float32(1.0) - ratios[b, m])
                partner_box = reference_box_mask(partner_ratio, tuple(centers[b, m]), height, width)
                np.testing.assert_array_equal(own[b, m], 1.0 - partner_box)
            else:
                np.testing.assert_array_equal(own[b, m], 1.0)
    assert apply.any() and not apply.all()


def test_own_pixel_masks_reject_unknown_kind():
    params = random_params(np.random.default_rng(0), 2, 2, 4, 4)
    for kind in ("none", "mix"):
        with pytest.raises(ValueError, match="kind must be one of"):
            input_mixing.own_pixel_masks(params, kind, 4, 4)


def test_mix_images_matches_numpy():
    rng = np.random.default_rng(1)
    images, partners = rng.normal(size=(2, 3, 2, 4, 4, 3)).astype(np.float32)
    own = rng.uniform(size=(3, 2, 4, 4, 1)).astype(np.float32)
    mixed = input_mixing.mix_images(
        tf.constant(images), tf.constant(partners), tf.constant(own)
    ).numpy()
    np.testing.assert_allclose(mixed, own * images + (1 - own) * partners, rtol=1e-5, atol=1e-6)


# ---- label correction ----------------------------------------------------------------------


@pytest.mark.parametrize("pixels, grid", [(4, 4), (8, 4)])
@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_corrected_own_share_matches_numpy(pixels, grid, kind):
    rng = np.random.default_rng(pixels * 10 + grid)
    batch_size, num_members = 6, 2
    params = random_params(rng, batch_size, num_members, pixels, pixels)
    own = input_mixing.own_pixel_masks(params, kind, pixels, pixels)
    # Cut-MixMo feature masks on the (possibly coarser) feature grid.
    kappa = rng.uniform(size=batch_size).astype(np.float32)
    feature_params = feature_mixing.MixingParams(
        use_cut=tf.constant(True),
        ratios=tf.constant(np.stack([kappa, 1 - kappa], axis=1)),
        centers=tf.constant(rng.integers(0, grid, (batch_size, 2)), tf.int32),
        roles=tf.constant([1, 0]),
    )
    member_masks = feature_mixing.mixing_masks(feature_params, grid, grid)
    shares = input_mixing.corrected_own_share(own, member_masks).numpy()
    expected = numpy_corrected_share(own.numpy(), member_masks.numpy())
    np.testing.assert_allclose(shares, expected, rtol=1e-5, atol=1e-6)


def test_corrected_own_share_average_pools_pixels_to_the_feature_grid():
    """8x8 pixel mask, 4x4 feature masks: each feature cell sees the mean of a 2x2 block."""
    own = np.ones((1, 2, 8, 8, 1), np.float32)
    own[0, 0, :4, :4] = 0.0  # partner fills the top-left quadrant of member 0's image
    own[0, 1, 0, 0] = 0.0  # one partner pixel for member 1: a quarter of one feature cell
    member_masks = np.zeros((1, 4, 4, 2), np.float32)
    member_masks[0, :2, :, 0] = 1.0  # member 0 keeps the top half of the features
    member_masks[0, 2:, :, 1] = 1.0  # member 1 keeps the bottom half...
    member_masks[0, 0, 0, 1], member_masks[0, 0, 0, 0] = 1.0, 0.0  # ...and the top-left cell
    shares = input_mixing.corrected_own_share(tf.constant(own), tf.constant(member_masks)).numpy()[
        0
    ]
    # Member 0 keeps 7 cells, 3 of them inside the partner's quadrant.
    assert shares[0] == pytest.approx((7 - 3) / 7, rel=1e-5)
    # Member 1 keeps 9 cells; the top-left cell is 3/4 own.
    assert shares[1] == pytest.approx((8 + 0.75) / 9, rel=1e-5)
    np.testing.assert_allclose(shares, numpy_corrected_share(own, member_masks)[0], rtol=1e-5)


def test_corrected_own_share_of_an_unmixed_slot_is_one():
    own = np.ones((2, 2, 4, 4, 1), np.float32)
    member_masks = np.random.default_rng(3).dirichlet([1, 1], (2, 4, 4)).astype(np.float32)
    shares = input_mixing.corrected_own_share(tf.constant(own), tf.constant(member_masks)).numpy()
    np.testing.assert_allclose(shares, 1.0, atol=1e-6)


# ---- soft labels ---------------------------------------------------------------------------


def test_soft_labels_mix_one_hots_by_the_own_share():
    rng = np.random.default_rng(5)
    labels, partners = rng.integers(0, 10, (2, 64, 3))
    shares = rng.uniform(size=(64, 3)).astype(np.float32)
    targets = input_mixing.soft_labels(
        tf.constant(labels), tf.constant(partners), tf.constant(shares), 10
    ).numpy()
    eye = np.eye(10)
    expected = shares[..., None] * eye[labels] + (1 - shares[..., None]) * eye[partners]
    np.testing.assert_allclose(targets, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(targets.sum(axis=-1), 1.0, rtol=1e-6)


def test_own_majority_swaps_regions_and_shares_where_the_own_image_is_minor():
    own = np.ones((1, 3, 2, 2, 1), np.float32)
    own[0, 0, 0] = 0.0  # member 0: the partner fills the top row
    own[0, 1] = 0.3  # member 1: MixUp with lambda = 0.3
    own[0, 2, :, 0] = 0.0  # member 2: the partner fills the left column
    shares = np.array([[0.2, 0.3, 0.5]], np.float32)
    masks, new_shares = input_mixing.own_majority(tf.constant(own), tf.constant(shares))
    masks = masks.numpy()
    # Below one half: the own image takes the partner's region and the share is 1 - lambda'.
    np.testing.assert_array_equal(masks[0, 0, :, :, 0], [[1, 1], [0, 0]])
    np.testing.assert_allclose(masks[0, 1], 0.7, rtol=1e-6)
    np.testing.assert_allclose(new_shares.numpy(), [[0.8, 0.7, 0.5]], rtol=1e-6)
    # Exactly one half keeps its roles.
    np.testing.assert_array_equal(masks[0, 2], own[0, 2])


def _numpy_own_share_after_swap(rng, num_slots: int, size: int) -> np.ndarray:
    """docs/method.md §6 in plain numpy for Cut-MixMo (M = 2) + input CutMix, every slot mixed.

    Per slot: kappa ~ Beta(2, 2) box on the feature grid given to a random member, lambda ~
    Beta(1, 1) with the partner's box of area 1 - lambda, lambda' over the member's area,
    and the swap to 1 - lambda' below one half. Slots whose member sees nothing of the
    feature map (an empty box, weight 0 in the loss) have no share and are left out.
    """
    shares = np.empty(num_slots)
    for slot in range(num_slots):
        box = reference_box_mask(rng.beta(2, 2), tuple(rng.integers(0, size, 2)), size, size)
        member_mask = box if rng.uniform() < 0.5 else 1.0 - box
        partner = reference_box_mask(
            1.0 - rng.uniform(), tuple(rng.integers(0, size, 2)), size, size
        )
        share = np.mean((1.0 - partner) * member_mask) / (np.mean(member_mask) + 1e-8)
        shares[slot] = share if share >= 0.5 else 1.0 - share
        if not member_mask.any():
            shares[slot] = np.nan
    return shares[~np.isnan(shares)]


def test_own_share_distribution_matches_a_numpy_simulation_of_the_spec():
    """What the members see after Cut-MixMo + CutMix, against the spec simulated in numpy.

    In the authors' code the own share is >= 0.5 in every mixed slot (mean 0.736 over a
    whole run, cut and linear batches); without the pixel swap 1 slot in 4 falls below.
    """
    size, batch_size, steps = 8, 256, 8
    model = probe_network.probe_model(
        msda="cutmix", msda_prob=1.0, cut_prob=1.0, steps_per_epoch=1, epochs=100
    )
    shares = []
    for step in range(steps):
        model.optimizer.iterations.assign(step)
        batch = model.mix_batch(probe_network.coded_batch(batch_size, 2, seed=step))
        seen = {
            "images": np.stack([image.numpy() for image in batch["images"]], axis=1),
            "masks": batch["masks"].numpy(),
        }
        sees_something = seen["masks"].max(axis=(1, 2)) > 0
        shares.append(probe_network.own_shares(seen)[sees_something])
    shares = np.concatenate(shares)
    simulated = _numpy_own_share_after_swap(np.random.default_rng(0), 4000, size)
    assert shares.min() >= 0.5 - 1e-6
    assert stats.ks_2samp(shares, simulated).pvalue > 1e-3
    assert abs(shares.mean() - simulated.mean()) < 4 * math.sqrt(
        shares.var() / shares.size + simulated.var() / simulated.size
    )
    # The test can fail: the distribution without the swap is told apart.
    unswapped = np.where(simulated > 0.5, 1.0 - simulated, simulated)
    unswapped[::2] = simulated[::2]
    assert stats.ks_2samp(shares, unswapped).pvalue < 1e-6


# ---- eager and tf.data agree -----------------------------------------------------------------


def _cutmix_masks_from_seed(step):
    seed = tf.stack([tf.cast(step, tf.int64), tf.constant(9, tf.int64)])
    params = input_mixing.sample_input_mixing_params(seed, 4, 2, 0.5, 1.0, 8, 8)
    return input_mixing.own_pixel_masks(params, "cutmix", 8, 8)


def test_own_pixel_masks_identical_eager_and_dataset_map():
    eager = np.stack([_cutmix_masks_from_seed(tf.constant(s, tf.int64)).numpy() for s in range(4)])
    mapped = np.stack([m.numpy() for m in tf.data.Dataset.range(4).map(_cutmix_masks_from_seed)])
    np.testing.assert_array_equal(eager, mapped)
    assert (eager < 1).any(), "some slot was actually mixed"
