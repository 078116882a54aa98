"""MixMo's feature mixing: ratio sampling, masks, loss weights and the cut schedule.

The randomness and the arithmetic are kept apart: `sample_mixing_params` draws everything a
batch needs from a `keyed_random` key, `mixing_masks` turns those parameters into masks
deterministically, and `FeatureMixing` is the Keras layer that applies masks to the members'
stem features. Paper: https://arxiv.org/abs/2103.06132 (docs/method.md §3 and §4).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras
from keras import ops

from mixmo_tf.mixing import keyed_random
from mixmo_tf.mixing.keyed_random import Tensor

_TINY = 1e-7


def sample_gamma(seed: Tensor, shape: Sequence, alpha: float) -> Tensor:
    """Gamma(alpha, 1) variates from a `keyed_random` key.

    Integer shapes use a sum of `alpha` exponentials, which XLA can compile on CPU (its
    Gamma kernel cannot); other shapes use the backend's Gamma sampler.
    """
    if alpha <= 0:
        raise ValueError(f"Gamma shape must be > 0. Received: alpha={alpha}")
    shape = list(shape)
    if float(alpha).is_integer():
        uniforms = keyed_random.uniform(seed, shape + [int(alpha)], minval=_TINY, maxval=1.0)
        return -ops.sum(ops.log(uniforms), axis=-1)
    return keyed_random.gamma(seed, shape, alpha)


def sample_dirichlet(seed: Tensor, batch_size, num_members: int, alpha: float) -> Tensor:
    """Per-sample mixing ratios kappa ~ Dirichlet(alpha, ..., alpha), shape (batch, members).

    alpha <= 0 gives every member the ratio 1/M, which is MIMO's plain sum.
    """
    if alpha <= 0:
        return ops.full((batch_size, num_members), 1.0 / num_members, dtype="float32")
    gammas = sample_gamma(seed, [batch_size, num_members], alpha)
    return gammas / ops.sum(gammas, axis=-1, keepdims=True)


def sample_beta(seed: Tensor, batch_size, alpha: float) -> Tensor:
    """Beta(alpha, alpha) variates, shape (batch,): the two-member Dirichlet."""
    return sample_dirichlet(seed, batch_size, 2, alpha)[:, 0]


def sample_box_centers(seed: Tensor, batch_size, height: int, width: int) -> Tensor:
    """Box centres uniform over the pixel grid, shape (batch, 2) as (row, column)."""
    uniforms = keyed_random.uniform(seed, [batch_size, 2])
    grid = ops.convert_to_tensor([height, width], dtype="float32")
    return ops.cast(ops.floor(uniforms * grid), "int32")


def box_masks(area_ratios: Tensor, centers: Tensor, height: int, width: int) -> Tensor:
    """CutMix boxes, 1 inside, shape (batch, height, width).

    A box of side int(size * sqrt(ratio)) centred at `centers`, spanning
    [c - side // 2, c + side // 2) and clipped at the borders, as in the reference code. The
    clipped area can differ from `area_ratios`; callers measure the mask instead.
    """
    side_scale = ops.sqrt(ops.cast(area_ratios, "float32"))
    centers = ops.cast(centers, "int32")

    def span(size: int, center: Tensor) -> Tensor:
        half = ops.floor_divide(ops.cast(ops.floor(size * side_scale), "int32"), 2)
        low = ops.clip(center - half, 0, size)
        high = ops.clip(center + half, 0, size)
        positions = ops.arange(size, dtype="int32")[None, :]
        return ops.logical_and(positions >= low[:, None], positions < high[:, None])

    rows = span(height, centers[:, 0])
    columns = span(width, centers[:, 1])
    return ops.cast(ops.logical_and(rows[:, :, None], columns[:, None, :]), "float32")


def cut_probability(progress, base_probability: float, decay_start: float) -> Tensor:
    """Probability of Cut- rather than Linear-MixMo for a batch at training `progress` in [0, 1].

    Constant `base_probability` until `decay_start`, then linear to 0 at the end of training
    (docs/method.md §3: 0.5 until 11/12 of training).
    """
    progress = ops.cast(progress, "float32")
    decay = ops.clip((1.0 - progress) / (1.0 - decay_start), 0.0, 1.0)
    return base_probability * decay


def loss_weights(ratios: Tensor, power: float) -> Tensor:
    """Root-r loss weights w_i = M * k_i^(1/r) / sum_j k_j^(1/r), shape (batch, members)."""
    num_members = ratios.shape[-1]
    rooted = ops.power(ops.maximum(ratios, 0.0), 1.0 / power)
    return num_members * rooted / ops.sum(rooted, axis=-1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class MixingParams:
    """The random choices for one batch of feature mixing.

    Attributes:
        use_cut: scalar bool, Cut-MixMo (True) or Linear-MixMo (False) for the whole batch.
        ratios: (batch, members) Dirichlet ratios kappa.
        centers: (batch, 2) integer box centres on the feature grid.
        roles: (members,) permutation: member i takes the mask built for role roles[i].
    """

    use_cut: Tensor
    ratios: Tensor
    centers: Tensor
    roles: Tensor


def sample_mixing_params(
    batch_seed: Tensor,
    sample_seed: Tensor,
    batch_size,
    num_members: int,
    alpha: float,
    cut_prob,
    height: int,
    width: int,
) -> MixingParams:
    """Samples a batch's mixing parameters.

    Args:
        batch_seed: `keyed_random` key for the once-per-batch choices (cut or linear,
            roles); identical on every replica so the whole global batch shares them.
        sample_seed: `keyed_random` key for per-sample ratios and box centres; differs per
            replica.
        batch_size: number of samples.
        num_members: M.
        alpha: Dirichlet concentration; <= 0 means equal ratios (MIMO).
        cut_prob: probability of a cut batch.
        height, width: feature-map size the masks are built at.
    """
    cut_seed, roles_seed = keyed_random.split(batch_seed, 2)
    ratio_seed, center_seed = keyed_random.split(sample_seed, 2)
    use_cut = keyed_random.uniform(cut_seed, []) < cut_prob
    roles = ops.cast(ops.argsort(keyed_random.uniform(roles_seed, [num_members])), "int32")
    return MixingParams(
        use_cut=use_cut,
        ratios=sample_dirichlet(ratio_seed, batch_size, num_members, alpha),
        centers=sample_box_centers(center_seed, batch_size, height, width),
        roles=roles,
    )


def mixing_masks(params: MixingParams, height: int, width: int) -> Tensor:
    """Per-pixel member masks, shape (batch, height, width, members), summing to 1 per pixel.

    Linear: m_i = kappa_i everywhere. Cut: role 0 gets a box of area kappa_0 and the other
    roles share the rest in proportion to their kappas (M = 2: the complement); then member i
    takes role roles[i]. A single member always gets the full map.
    """
    ratios = params.ratios
    linear = ops.ones((1, height, width, 1)) * ratios[:, None, None, :]
    if ratios.shape[-1] == 1:
        return ops.ones_like(linear)
    box = box_masks(ratios[:, 0], params.centers, height, width)[..., None]
    others = ratios[:, 1:] / ops.maximum(ops.sum(ratios[:, 1:], axis=-1, keepdims=True), _TINY)
    cut = ops.concatenate([box, (1.0 - box) * others[:, None, None, :]], axis=-1)
    cut = ops.take(cut, params.roles, axis=-1)
    return ops.where(params.use_cut, cut, linear)


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
