"""Feature mixing follows the MixMo spec (sections 3 and 4).

Proves that:
- the ratio samplers draw Gamma(alpha), Beta(alpha, alpha) and Dirichlet(alpha, ..., alpha)
  variates (closed-form moments, numpy's samplers, a KS test), on both the integer-alpha
  path (sums of exponentials) and TF's stateless Gamma path, and are seed-deterministic;
- CutMix boxes are the reference's `[c - side // 2, c + side // 2)` clipped at the borders,
  checked against a plain Python reimplementation, so the ratio actually used is the mask
  mean, not kappa;
- mixing masks sum to 1 at every pixel, are kappa for Linear-MixMo, 1/M for MIMO, give the
  box to one member per batch chosen at random, and are Cut with probability `cut_prob`;
- the cut probability schedule, the root-r loss weights and the `FeatureMixing` layer match
  their closed forms;
- the pure functions give identical results eagerly, in `tf.function` and in `tf.data`.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers.mixing import NUM_STANDARD_ERRORS, assert_moments, reference_box_mask, standard_errors
from scipy import stats

from mixmo_tf.mixing import features as feature_mixing

NUM_SAMPLES = 200_000


# ---- helpers -------------------------------------------------------------------------------


def seed(*values: int) -> tf.Tensor:
    """A stateless seed tensor of shape (2,), zero-padded."""
    return tf.constant(list(values) + [0] * (2 - len(values)), tf.int64)


def assert_same_moments(samples: np.ndarray, other: np.ndarray) -> None:
    """Two independent samples agree in mean and variance within a few standard errors."""
    samples, other = np.asarray(samples, np.float64), np.asarray(other, np.float64)
    se_mean_a, se_var_a = standard_errors(samples)
    se_mean_b, se_var_b = standard_errors(other)
    np.testing.assert_array_less(
        np.abs(samples.mean(axis=0) - other.mean(axis=0)),
        NUM_STANDARD_ERRORS * np.hypot(se_mean_a, se_mean_b),
    )
    np.testing.assert_array_less(
        np.abs(samples.var(axis=0) - other.var(axis=0)),
        NUM_STANDARD_ERRORS * np.hypot(se_var_a, se_var_b),
    )


def make_params(ratios, centers=None, roles=None, use_cut=True) -> feature_mixing.MixingParams:
    """Hand-written mixing parameters (centres default to the corner, roles to identity)."""
    ratios = tf.constant(ratios, tf.float32)
    batch_size, num_members = ratios.shape
    if centers is None:
        centers = np.zeros((batch_size, 2), np.int32)
    if roles is None:
        roles = np.arange(num_members)
    return feature_mixing.MixingParams(
        use_cut=tf.constant(use_cut),
        ratios=ratios,
        centers=tf.constant(centers, tf.int32),
        roles=tf.constant(roles, tf.int32),
    )


def sampled_masks(batch_seed: int, num_members, alpha, cut_prob, batch_size=8, height=8, width=8):
    """Sampled parameters and their masks, shape (batch, height, width, members)."""
    params = feature_mixing.sample_mixing_params(
        seed(batch_seed),
        seed(batch_seed, 1),
        batch_size,
        num_members,
        alpha,
        cut_prob,
        height,
        width,
    )
    return params, feature_mixing.mixing_masks(params, height, width).numpy()


# ---- ratio sampling ------------------------------------------------------------------------

ALPHAS = [1.0, 2.0, 4.0, 0.5]  # integer path (sum of exponentials) and TF's Gamma path


@pytest.mark.parametrize("alpha", ALPHAS)
def test_sample_gamma_has_gamma_moments(alpha):
    samples = feature_mixing.sample_gamma(seed(3), [NUM_SAMPLES], alpha).numpy()
    assert samples.min() > 0
    assert_moments(samples, mean=alpha, variance=alpha)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_sample_beta_matches_closed_form_moments(alpha):
    samples = feature_mixing.sample_beta(seed(11), NUM_SAMPLES, alpha).numpy()
    assert samples.shape == (NUM_SAMPLES,)
    assert 0.0 <= samples.min() and samples.max() <= 1.0
    # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)).
    assert_moments(samples, mean=0.5, variance=1.0 / (4.0 * (2.0 * alpha + 1.0)))


@pytest.mark.parametrize("alpha", ALPHAS)
def test_sample_beta_matches_numpy_sampler(alpha):
    samples = feature_mixing.sample_beta(seed(12), NUM_SAMPLES, alpha).numpy()
    reference = np.random.default_rng(12).beta(alpha, alpha, NUM_SAMPLES)
    assert_same_moments(samples, reference)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_sample_beta_passes_kolmogorov_smirnov_against_beta_cdf(alpha):
    samples = feature_mixing.sample_beta(seed(13), NUM_SAMPLES, alpha).numpy().astype(np.float64)
    result = stats.kstest(samples, stats.beta(alpha, alpha).cdf)
    assert result.pvalue > 1e-4, result


@pytest.mark.parametrize("num_members", [3, 4])
@pytest.mark.parametrize("alpha", [1.0, 2.0, 0.5])
def test_sample_dirichlet_matches_closed_form_and_numpy(num_members, alpha):
    samples = feature_mixing.sample_dirichlet(seed(21), NUM_SAMPLES, num_members, alpha).numpy()
    assert samples.shape == (NUM_SAMPLES, num_members)
    np.testing.assert_allclose(samples.sum(axis=-1), 1.0, atol=1e-5)
    # Symmetric Dirichlet: mean 1/M, variance (1/M)(1 - 1/M) / (M a + 1).
    share = 1.0 / num_members
    assert_moments(samples, mean=share, variance=share * (1 - share) / (num_members * alpha + 1))
    # Covariance of two components: -1 / (M^2 (M a + 1)).
    covariance = np.cov(samples[:, 0], samples[:, 1])[0, 1]
    expected = -1.0 / (num_members**2 * (num_members * alpha + 1))
    product = (samples[:, 0] - share) * (samples[:, 1] - share)
    assert abs(covariance - expected) < NUM_STANDARD_ERRORS * product.std() / math.sqrt(NUM_SAMPLES)
    reference = np.random.default_rng(21).dirichlet([alpha] * num_members, NUM_SAMPLES)
    assert_same_moments(samples, reference)


@pytest.mark.parametrize("alpha", [0.0, -1.0])
@pytest.mark.parametrize("num_members", [2, 3, 4])
def test_non_positive_alpha_gives_exactly_equal_ratios(alpha, num_members):
    ratios = feature_mixing.sample_dirichlet(seed(1), 5, num_members, alpha).numpy()
    np.testing.assert_array_equal(ratios, np.full((5, num_members), np.float32(1.0 / num_members)))


def test_sample_gamma_rejects_non_positive_alpha():
    with pytest.raises(ValueError, match="alpha"):
        feature_mixing.sample_gamma(seed(1), [3], 0.0)


@pytest.mark.parametrize("alpha", [2.0, 0.5])
def test_sampling_is_deterministic_per_seed(alpha):
    first = feature_mixing.sample_dirichlet(seed(5, 6), 64, 3, alpha).numpy()
    again = feature_mixing.sample_dirichlet(seed(5, 6), 64, 3, alpha).numpy()
    other = feature_mixing.sample_dirichlet(seed(5, 7), 64, 3, alpha).numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.any(first == other), "different seeds should give different ratios"


def test_box_centers_are_uniform_over_the_grid():
    height, width = 5, 7
    centers = feature_mixing.sample_box_centers(seed(9), 70_000, height, width).numpy()
    assert centers.dtype == np.int32
    counts = np.zeros((height, width))
    np.add.at(counts, (centers[:, 0], centers[:, 1]), 1)
    expected = len(centers) / (height * width)
    # Every cell hit about equally often: chi-square test of uniformity.
    chi_square = np.sum((counts - expected) ** 2 / expected)
    assert stats.chi2(height * width - 1).sf(chi_square) > 1e-4


# ---- boxes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("height, width", [(8, 8), (32, 32), (5, 7), (16, 9)])
def test_box_masks_match_reference_on_random_and_border_cases(height, width):
    rng = np.random.default_rng(height * 100 + width)
    count = 400
    ratios = rng.uniform(0.0, 1.0, count).astype(np.float32)
    centers = np.stack([rng.integers(0, height, count), rng.integers(0, width, count)], axis=1)
    # Force corners, edges and large boxes so clipping is exercised.
    centers[:40] = [[0, 0], [0, width - 1], [height - 1, 0], [height - 1, width - 1]] * 10
    ratios[:20] = 1.0
    ratios[20:25] = 0.0
    masks = feature_mixing.box_masks(
        tf.constant(ratios), tf.constant(centers, tf.int32), height, width
    ).numpy()
    expected = np.stack(
        [reference_box_mask(float(r), tuple(c), height, width) for r, c in zip(ratios, centers)]
    )
    np.testing.assert_array_equal(masks, expected)
    # The clipped area really differs from kappa on part of the cases: the mask mean is the
    # ratio that is actually used.
    assert np.any(np.abs(masks.mean(axis=(1, 2)) - ratios) > 0.1)


@pytest.mark.parametrize(
    "ratio, center, expected_area",
    [
        (0.25, (4, 4), 16),  # side 4: rows and columns [2, 6)
        (0.25, (0, 0), 4),  # clipped to [0, 2) x [0, 2)
        (0.25, (7, 7), 9),  # clipped to [5, 8) x [5, 8)
        (25 / 64, (4, 4), 16),  # side 5, but the span [c - 2, c + 2) is 4 wide
        (1.0, (4, 4), 64),  # side 8: [0, 8)
        (1.0, (0, 4), 32),  # side 8 at the top edge: rows [0, 4)
        (0.0, (3, 3), 0),
    ],
)
def test_box_area_closed_form_examples(ratio, center, expected_area):
    mask = feature_mixing.box_masks(tf.constant([ratio]), tf.constant([center]), 8, 8).numpy()[0]
    assert mask.sum() == expected_area
    assert mask.mean() == pytest.approx(expected_area / 64)


# ---- masks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("num_members", [2, 3, 4])
@pytest.mark.parametrize("cut_prob", [0.0, 1.0])
def test_sampled_masks_sum_to_one_at_every_pixel(num_members, cut_prob):
    for batch_seed in range(5):
        params, masks = sampled_masks(batch_seed, num_members, alpha=2.0, cut_prob=cut_prob)
        assert bool(params.use_cut) == (cut_prob == 1.0)
        assert masks.shape == (8, 8, 8, num_members)
        np.testing.assert_allclose(masks.sum(axis=-1), 1.0, atol=1e-6)
        assert masks.min() >= 0.0


@pytest.mark.parametrize("num_members", [2, 3, 4])
def test_linear_masks_are_constant_kappa(num_members):
    params, masks = sampled_masks(4, num_members, alpha=2.0, cut_prob=0.0)
    ratios = params.ratios.numpy()
    np.testing.assert_allclose(
        masks, np.broadcast_to(ratios[:, None, None, :], masks.shape), rtol=1e-6
    )
    assert np.ptp(ratios[:, 0]) > 0, "ratios are drawn per sample"


@pytest.mark.parametrize("num_members", [2, 3, 4])
def test_mimo_masks_are_one_over_m_and_mixing_is_the_plain_sum(num_members):
    params, masks = sampled_masks(
        6, num_members, alpha=0.0, cut_prob=0.0, batch_size=3, height=4, width=4
    )
    np.testing.assert_allclose(masks, 1.0 / num_members, rtol=1e-6)
    rng = np.random.default_rng(num_members)
    features = [rng.normal(size=(3, 4, 4, 5)).astype(np.float32) for _ in range(num_members)]
    mixed = feature_mixing.FeatureMixing(num_members)(features + [masks])
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(mixed), np.sum(features, axis=0), rtol=1e-5, atol=1e-5
    )


def test_single_member_masks_are_all_ones():
    for use_cut in (True, False):
        params = make_params([[1.0], [1.0]], centers=[[1, 1], [2, 3]], roles=[0], use_cut=use_cut)
        masks = feature_mixing.mixing_masks(params, 4, 5).numpy()
        np.testing.assert_array_equal(masks, np.ones((2, 4, 5, 1)))


@pytest.mark.parametrize("roles", [[0, 1], [1, 0]])
def test_two_member_cut_masks_are_box_and_complement(roles):
    rng = np.random.default_rng(0)
    kappa = rng.uniform(size=6).astype(np.float32)
    centers = np.stack([rng.integers(0, 8, 6), rng.integers(0, 8, 6)], axis=1)
    params = make_params(np.stack([kappa, 1 - kappa], axis=1), centers=centers, roles=roles)
    masks = feature_mixing.mixing_masks(params, 8, 8).numpy()
    boxes = np.stack([reference_box_mask(float(k), tuple(c), 8, 8) for k, c in zip(kappa, centers)])
    box_member = roles.index(0)
    np.testing.assert_array_equal(masks[..., box_member], boxes)
    np.testing.assert_array_equal(masks[..., 1 - box_member], 1.0 - boxes)


@pytest.mark.parametrize("roles", [[0, 1, 2], [2, 0, 1], [3, 1, 0, 2], [0, 1, 2, 3]])
def test_many_member_cut_masks_share_the_rest_in_proportion_to_kappa(roles):
    num_members = len(roles)
    ratios = np.random.default_rng(num_members).dirichlet([2.0] * num_members, 5).astype(np.float32)
    centers = np.full((5, 2), 8, np.int32)  # centred on a 16x16 grid: no clipping
    params = make_params(ratios, centers=centers, roles=roles)
    masks = feature_mixing.mixing_masks(params, 16, 16).numpy()
    for sample, kappa in enumerate(ratios):
        box = reference_box_mask(float(kappa[0]), (8, 8), 16, 16)
        role_masks = [box] + [(1 - box) * k / kappa[1:].sum() for k in kappa[1:]]
        for member, role in enumerate(roles):
            np.testing.assert_allclose(
                masks[sample, ..., member], role_masks[role], rtol=1e-5, atol=1e-7
            )
        box_member = roles.index(0)
        # The box covers about kappa_0: an even side 2 * (int(16 sqrt(kappa_0)) // 2), which
        # loses under 2 pixels of side to the reference's rounding.
        box_area = masks[sample, ..., box_member].mean()
        side = 2 * (int(16 * math.sqrt(kappa[0])) // 2)
        assert box_area == pytest.approx(side * side / 256)
        assert (math.sqrt(kappa[0]) - 2 / 16) ** 2 - 1e-6 <= box_area <= kappa[0] + 1e-6
        others = [m for m in range(num_members) if m != box_member]
        other_areas = masks[sample][..., others].mean(axis=(0, 1))
        other_kappas = kappa[[roles[m] for m in others]]
        np.testing.assert_allclose(
            other_areas / other_areas.sum(), other_kappas / other_kappas.sum(), rtol=1e-5
        )


def test_box_member_is_shuffled_per_batch_and_shared_within_a_batch():
    box_owner_counts = np.zeros(2)
    for batch_seed in range(60):
        params, masks = sampled_masks(batch_seed, 2, alpha=2.0, cut_prob=1.0, batch_size=16)
        boxes = np.stack(
            [
                reference_box_mask(float(k), tuple(c), 8, 8)
                for k, c in zip(params.ratios.numpy()[:, 0], params.centers.numpy())
            ]
        )
        # For every sample, which member's mask is exactly the role-0 box.
        owners = [
            [m for m in range(2) if np.array_equal(masks[s, ..., m], boxes[s])] for s in range(16)
        ]
        assert all(len(o) == 1 for o in owners)
        assert len({o[0] for o in owners}) == 1, "all samples of a batch give the box to one member"
        box_owner_counts[owners[0][0]] += 1
    # Each member gets the box in some batches (a fair coin: 60 draws, 15..45 covers ~99.99%).
    assert 15 <= box_owner_counts[0] <= 45, box_owner_counts


@tf.function
def _batch_choices(batch_seeds, cut_prob, num_members):
    def draw(batch_seed):
        params = feature_mixing.sample_mixing_params(
            batch_seed, batch_seed + 1, 2, num_members, 2.0, cut_prob, 4, 4
        )
        return params.use_cut, params.roles

    return tf.map_fn(draw, batch_seeds, fn_output_signature=(tf.bool, tf.int32))


@pytest.mark.parametrize("cut_prob", [0.0, 0.2, 0.5, 1.0])
def test_cut_is_chosen_per_batch_with_probability_cut_prob(cut_prob):
    num_batches = 4000
    batch_seeds = tf.stack(
        [tf.range(num_batches, dtype=tf.int64), tf.fill([num_batches], tf.constant(3, tf.int64))],
        axis=1,
    )
    use_cut, roles = _batch_choices(batch_seeds, tf.constant(cut_prob), 3)
    frequency = use_cut.numpy().mean()
    tolerance = NUM_STANDARD_ERRORS * math.sqrt(max(cut_prob * (1 - cut_prob), 1e-12) / num_batches)
    assert abs(frequency - cut_prob) <= tolerance
    # Roles are a uniform random permutation: each member takes role 0 about 1/3 of the time.
    roles = roles.numpy()
    assert np.all(np.sort(roles, axis=1) == np.arange(3))
    role_zero_share = (roles == 0).mean(axis=0)
    tolerance = NUM_STANDARD_ERRORS * math.sqrt(2 / 9 / num_batches)
    np.testing.assert_allclose(role_zero_share, 1 / 3, atol=tolerance)


def test_batch_choices_depend_only_on_the_batch_seed():
    """Replicas share the batch seed: same cut decision and roles, different per-sample draws."""
    batch_seed = seed(42)
    first = feature_mixing.sample_mixing_params(batch_seed, seed(1), 16, 3, 2.0, 0.5, 8, 8)
    second = feature_mixing.sample_mixing_params(batch_seed, seed(2), 16, 3, 2.0, 0.5, 8, 8)
    assert bool(first.use_cut) == bool(second.use_cut)
    np.testing.assert_array_equal(first.roles.numpy(), second.roles.numpy())
    assert not np.allclose(first.ratios.numpy(), second.ratios.numpy())
    assert not np.array_equal(first.centers.numpy(), second.centers.numpy())


# ---- cut schedule and loss weights -----------------------------------------------------------


@pytest.mark.parametrize(
    "progress, expected",
    [(0.0, 0.5), (0.5, 0.5), (11 / 12, 0.5), (0.95, 0.3), (23 / 24, 0.25), (1.0, 0.0), (1.1, 0.0)],
)
def test_cut_probability_schedule(progress, expected):
    # p(t) = 0.5 * min(1, max(0, (1 - t) / (1 - 11/12))).
    closed_form = 0.5 * min(1.0, max(0.0, (1.0 - progress) / (1.0 - 11 / 12)))
    assert closed_form == pytest.approx(expected)
    value = float(feature_mixing.cut_probability(progress, 0.5, 11 / 12))
    assert value == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("num_members", [2, 3, 4])
@pytest.mark.parametrize("power", [1.0, 3.0])
def test_loss_weights_match_numpy(num_members, power):
    ratios = (
        np.random.default_rng(num_members).dirichlet([2.0] * num_members, 32).astype(np.float32)
    )
    rooted = ratios.astype(np.float64) ** (1.0 / power)
    expected = num_members * rooted / rooted.sum(axis=1, keepdims=True)
    weights = feature_mixing.loss_weights(tf.constant(ratios), power).numpy()
    np.testing.assert_allclose(weights, expected, rtol=1e-5)
    np.testing.assert_allclose(weights.sum(axis=1), num_members, rtol=1e-5)


@pytest.mark.parametrize("kappa", [0.0, 0.1, 0.3, 0.5, 0.8, 1.0])
def test_two_member_loss_weights_closed_form(kappa):
    weights = feature_mixing.loss_weights(
        tf.constant([[kappa, 1 - kappa]], tf.float32), 3.0
    ).numpy()[0]
    root = kappa ** (1 / 3)
    expected_first = 2 * root / (root + (1 - kappa) ** (1 / 3))
    assert weights[0] == pytest.approx(expected_first, abs=1e-5)
    assert weights[1] == pytest.approx(2 - expected_first, abs=1e-5)


@pytest.mark.parametrize("num_members", [2, 3, 4])
def test_equal_ratios_give_unit_loss_weights(num_members):
    ratios = tf.fill([4, num_members], 1.0 / num_members)
    for power in (1.0, 3.0):
        np.testing.assert_allclose(
            feature_mixing.loss_weights(ratios, power).numpy(), 1.0, rtol=1e-6
        )


def test_loss_weights_of_a_clipped_box_follow_its_mask_mean():
    """A corner box of kappa 0.25 covers 4/64: the weights follow 1/16, not 0.25."""
    params = make_params([[0.25, 0.75]], centers=[[0, 0]])
    masks = feature_mixing.mixing_masks(params, 8, 8)
    ratios = tf.reduce_mean(masks, axis=[1, 2]).numpy()
    np.testing.assert_allclose(ratios, [[1 / 16, 15 / 16]], rtol=1e-6)
    weights = feature_mixing.loss_weights(tf.constant(ratios), 3.0).numpy()[0]
    first = 2 * (1 / 16) ** (1 / 3) / ((1 / 16) ** (1 / 3) + (15 / 16) ** (1 / 3))
    np.testing.assert_allclose(weights, [first, 2 - first], rtol=1e-5)


# ---- FeatureMixing -------------------------------------------------------------------------


def random_features_and_masks(num_members, seed_value=0, shape=(2, 4, 4, 3)):
    rng = np.random.default_rng(seed_value)
    features = [rng.normal(size=shape).astype(np.float32) for _ in range(num_members)]
    masks = rng.dirichlet([1.0] * num_members, shape[:3]).astype(np.float32)
    return features, masks


@pytest.mark.parametrize("num_members", [1, 2, 3, 4])
def test_feature_mixing_is_m_times_masked_sum(num_members):
    features, masks = random_features_and_masks(num_members)
    expected = num_members * sum(masks[..., i : i + 1] * f for i, f in enumerate(features))
    output = feature_mixing.FeatureMixing(num_members)(features + [masks])
    assert tuple(output.shape) == features[0].shape
    np.testing.assert_allclose(keras.ops.convert_to_numpy(output), expected, rtol=1e-5, atol=1e-6)


def test_feature_mixing_config_round_trip_gives_same_outputs():
    layer = feature_mixing.FeatureMixing(3, name="mix")
    config = layer.get_config()
    assert config["num_members"] == 3
    restored = feature_mixing.FeatureMixing.from_config(config)
    assert restored.num_members == 3 and restored.name == "mix"
    features, masks = random_features_and_masks(3, seed_value=1)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layer(features + [masks])),
        keras.ops.convert_to_numpy(restored(features + [masks])),
    )
    deserialized = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(deserialized, feature_mixing.FeatureMixing) and deserialized.num_members == 3


@pytest.mark.parametrize("given", [1, 3])
def test_feature_mixing_rejects_wrong_number_of_inputs(given):
    features, masks = random_features_and_masks(given)
    with pytest.raises(ValueError, match=rf"expects 2 feature maps.*Received: {given}"):
        feature_mixing.FeatureMixing(2)(features + [masks])


def test_feature_mixing_rejects_zero_members():
    with pytest.raises(ValueError, match="num_members must be >= 1"):
        feature_mixing.FeatureMixing(0)


# ---- eager, tf.function and tf.data agree ----------------------------------------------------


def _masks_from_seed(step):
    batch_seed = tf.stack([tf.cast(step, tf.int64), tf.constant(0, tf.int64)])
    params = feature_mixing.sample_mixing_params(batch_seed, batch_seed + 5, 4, 2, 2.0, 0.5, 6, 6)
    return feature_mixing.mixing_masks(params, 6, 6)


def test_mixing_masks_identical_eager_graph_and_dataset_map():
    steps = list(range(6))
    eager = np.stack([_masks_from_seed(tf.constant(s, tf.int64)).numpy() for s in steps])
    graph_fn = tf.function(_masks_from_seed)
    graph = np.stack([graph_fn(tf.constant(s, tf.int64)).numpy() for s in steps])
    dataset = tf.data.Dataset.range(len(steps)).map(_masks_from_seed)
    mapped = np.stack([m.numpy() for m in dataset])
    np.testing.assert_array_equal(eager, graph)
    np.testing.assert_array_equal(eager, mapped)
    # Both kinds of batch occur among these seeds, so both branches were compared.
    is_binary = [np.all((m == 0) | (m == 1)) for m in eager]
    assert any(is_binary) and not all(is_binary)


def test_box_masks_identical_eager_and_dataset_map():
    rng = np.random.default_rng(2)
    ratios = rng.uniform(size=12).astype(np.float32)
    centers = rng.integers(0, 9, (12, 2)).astype(np.int32)
    eager = feature_mixing.box_masks(tf.constant(ratios), tf.constant(centers), 9, 9).numpy()
    dataset = tf.data.Dataset.from_tensor_slices((ratios, centers)).batch(4)
    mapped = np.concatenate(
        [m.numpy() for m in dataset.map(lambda r, c: feature_mixing.box_masks(r, c, 9, 9))]
    )
    np.testing.assert_array_equal(eager, mapped)
