"""MixMo's feature mixing: ratio sampling, masks, loss weights and the cut schedule.

The randomness and the arithmetic are kept apart: `sample_mixing_params` draws everything a
batch needs from a stateless seed, `mixing_masks` turns those parameters into masks
deterministically, and `FeatureMixing` is the Keras layer that applies masks to the members'
stem features. Paper: https://arxiv.org/abs/2103.06132 (docs/method.md §3 and §4).
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

_TINY = 1e-7


def sample_gamma(seed: tf.Tensor, shape, alpha: float) -> tf.Tensor:
    """Gamma(alpha, 1) variates from a stateless seed.

    Integer shapes use a sum of `alpha` exponentials, which XLA can compile on CPU (its
    Gamma kernel cannot); other shapes fall back to TF's stateless Gamma sampler.
    """
    if alpha <= 0:
        raise ValueError(f"Gamma shape must be > 0. Received: alpha={alpha}")
    shape = list(shape)
    if float(alpha).is_integer():
        uniforms = tf.random.stateless_uniform(shape + [int(alpha)], seed, minval=_TINY, maxval=1.0)
        return -tf.reduce_sum(tf.math.log(uniforms), axis=-1)
    return tf.random.stateless_gamma(shape, seed, alpha=alpha)


def sample_dirichlet(seed: tf.Tensor, batch_size, num_members: int, alpha: float) -> tf.Tensor:
    """Per-sample mixing ratios kappa ~ Dirichlet(alpha, ..., alpha), shape (batch, members).

    alpha <= 0 gives every member the ratio 1/M, which is MIMO's plain sum.
    """
    if alpha <= 0:
        return tf.fill([batch_size, num_members], 1.0 / num_members)
    gammas = sample_gamma(seed, [batch_size, num_members], alpha)
    return gammas / tf.reduce_sum(gammas, axis=-1, keepdims=True)


def sample_beta(seed: tf.Tensor, batch_size, alpha: float) -> tf.Tensor:
    """Beta(alpha, alpha) variates, shape (batch,): the two-member Dirichlet."""
    return sample_dirichlet(seed, batch_size, 2, alpha)[:, 0]


def sample_box_centers(seed: tf.Tensor, batch_size, height: int, width: int) -> tf.Tensor:
    """Box centres uniform over the pixel grid, shape (batch, 2) as (row, column)."""
    uniforms = tf.random.stateless_uniform([batch_size, 2], seed)
    return tf.cast(tf.floor(uniforms * tf.constant([height, width], tf.float32)), tf.int32)


def box_masks(area_ratios: tf.Tensor, centers: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """CutMix boxes, 1 inside, shape (batch, height, width).

    A box of side int(size * sqrt(ratio)) centred at `centers`, spanning
    [c - side // 2, c + side // 2) and clipped at the borders, as in the reference code. The
    clipped area can differ from `area_ratios`; callers measure the mask instead.
    """
    side_scale = tf.sqrt(tf.cast(area_ratios, tf.float32))

    def span(size: int, center: tf.Tensor) -> tf.Tensor:
        half = tf.cast(tf.floor(size * side_scale), tf.int32) // 2
        low = tf.clip_by_value(center - half, 0, size)
        high = tf.clip_by_value(center + half, 0, size)
        positions = tf.range(size)[tf.newaxis, :]
        return (positions >= low[:, tf.newaxis]) & (positions < high[:, tf.newaxis])

    rows = span(height, centers[:, 0])
    columns = span(width, centers[:, 1])
    return tf.cast(rows[:, :, tf.newaxis] & columns[:, tf.newaxis, :], tf.float32)


def cut_probability(progress, base_probability: float, decay_start: float) -> tf.Tensor:
    """Probability of Cut- rather than Linear-MixMo for a batch at training `progress` in [0, 1].

    Constant `base_probability` until `decay_start`, then linear to 0 at the end of training
    (docs/method.md §3: 0.5 until 11/12 of training).
    """
    progress = tf.cast(progress, tf.float32)
    decay = tf.clip_by_value((1.0 - progress) / (1.0 - decay_start), 0.0, 1.0)
    return base_probability * decay


def loss_weights(ratios: tf.Tensor, power: float) -> tf.Tensor:
    """Root-r loss weights w_i = M * k_i^(1/r) / sum_j k_j^(1/r), shape (batch, members)."""
    num_members = tf.cast(tf.shape(ratios)[-1], ratios.dtype)
    rooted = tf.pow(tf.maximum(ratios, 0.0), 1.0 / power)
    return num_members * rooted / tf.reduce_sum(rooted, axis=-1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class MixingParams:
    """The random choices for one batch of feature mixing.

    Attributes:
        use_cut: scalar bool, Cut-MixMo (True) or Linear-MixMo (False) for the whole batch.
        ratios: (batch, members) Dirichlet ratios kappa.
        centers: (batch, 2) integer box centres on the feature grid.
        roles: (members,) permutation: member i takes the mask built for role roles[i].
    """

    use_cut: tf.Tensor
    ratios: tf.Tensor
    centers: tf.Tensor
    roles: tf.Tensor


def sample_mixing_params(
    batch_seed: tf.Tensor,
    sample_seed: tf.Tensor,
    batch_size,
    num_members: int,
    alpha: float,
    cut_prob,
    height: int,
    width: int,
) -> MixingParams:
    """Samples a batch's mixing parameters.

    Args:
        batch_seed: stateless seed for the once-per-batch choices (cut or linear, roles);
            identical on every replica so the whole global batch shares them.
        sample_seed: stateless seed for per-sample ratios and box centres; differs per replica.
        batch_size: number of samples.
        num_members: M.
        alpha: Dirichlet concentration; <= 0 means equal ratios (MIMO).
        cut_prob: probability of a cut batch.
        height, width: feature-map size the masks are built at.
    """
    cut_seed, roles_seed = tf.unstack(tf.random.experimental.stateless_split(batch_seed, 2))
    ratio_seed, center_seed = tf.unstack(tf.random.experimental.stateless_split(sample_seed, 2))
    use_cut = tf.random.stateless_uniform([], cut_seed) < cut_prob
    roles = tf.argsort(tf.random.stateless_uniform([num_members], roles_seed))
    return MixingParams(
        use_cut=use_cut,
        ratios=sample_dirichlet(ratio_seed, batch_size, num_members, alpha),
        centers=sample_box_centers(center_seed, batch_size, height, width),
        roles=roles,
    )


def mixing_masks(params: MixingParams, height: int, width: int) -> tf.Tensor:
    """Per-pixel member masks, shape (batch, height, width, members), summing to 1 per pixel.

    Linear: m_i = kappa_i everywhere. Cut: role 0 gets a box of area kappa_0 and the other
    roles share the rest in proportion to their kappas (M = 2: the complement); then member i
    takes role roles[i]. A single member always gets the full map.
    """
    ratios = params.ratios
    num_members = ratios.shape[-1]
    ones = tf.ones([tf.shape(ratios)[0], height, width, 1])
    if num_members == 1:
        return ones
    linear = ones * ratios[:, tf.newaxis, tf.newaxis, :]
    box = box_masks(ratios[:, 0], params.centers, height, width)[..., tf.newaxis]
    others = ratios[:, 1:] / tf.maximum(tf.reduce_sum(ratios[:, 1:], axis=-1, keepdims=True), _TINY)
    cut = tf.concat([box, (1.0 - box) * others[:, tf.newaxis, tf.newaxis, :]], axis=-1)
    cut = tf.gather(cut, params.roles, axis=-1)
    return tf.where(params.use_cut, cut, linear)


@keras.saving.register_keras_serializable(package="mixmo_tf")
class FeatureMixing(keras.layers.Layer):
    """Merges M members' feature maps: z = M * sum_i m_i * l_i.

    Call arguments:
        inputs: list of M feature maps `(batch, H, W, C)` followed by the masks
            `(batch, H, W, M)`, which sum to 1 at every pixel.
    """

    def __init__(self, num_members: int, **kwargs):
        super().__init__(**kwargs)
        if num_members < 1:
            raise ValueError(f"num_members must be >= 1. Received: num_members={num_members}")
        self.num_members = num_members

    def call(self, inputs):
        *features, masks = inputs
        if len(features) != self.num_members:
            raise ValueError(
                f"FeatureMixing expects {self.num_members} feature maps and the masks. "
                f"Received: {len(features)} feature maps"
            )
        # M * m_i on the small masks, not M * (sum) on the full-size features: one fewer pass.
        weights = keras.ops.cast(masks * self.num_members, features[0].dtype)
        return sum(weights[..., i : i + 1] * feature for i, feature in enumerate(features))

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "num_members": self.num_members}
