"""Input-level mixing (+CutMix / +MixUp) inside MixMo, with the MixMo-area label correction.

Per member and per slot, with probability `prob`, the member's image is mixed in pixel space
with a partner image; the partner's label share is then measured only over the area that
this member keeps after feature mixing, and where the own image would be the minor part the
two images swap regions (docs/method.md §6). As in `features`, sampling and arithmetic are
separate functions.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from mixmo_tf.config.choices import MSDA_KINDS
from mixmo_tf.mixing import features

_EPSILON = 1e-8


@dataclasses.dataclass(frozen=True)
class InputMixingParams:
    """Random choices of input mixing for a batch, each shaped (batch, members, ...).

    Attributes:
        apply: (batch, members) bool, whether the slot is mixed at all.
        own_ratios: (batch, members) lambda ~ Beta(alpha, alpha): the share the own image
            keeps (for CutMix the partner fills a box of area 1 - lambda).
        centers: (batch, members, 2) box centres in pixels.
    """

    apply: tf.Tensor
    own_ratios: tf.Tensor
    centers: tf.Tensor


def sample_input_mixing_params(
    seed: tf.Tensor,
    batch_size,
    num_members: int,
    prob: float,
    alpha: float,
    height: int,
    width: int,
) -> InputMixingParams:
    """Samples which slots are mixed, their ratios and CutMix box centres."""
    apply_seed, ratio_seed, center_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 3)
    )
    count = batch_size * num_members
    apply = tf.random.stateless_uniform([batch_size, num_members], apply_seed) < prob
    own_ratios = features.sample_beta(ratio_seed, count, alpha)
    centers = features.sample_box_centers(center_seed, count, height, width)
    return InputMixingParams(
        apply=apply,
        own_ratios=tf.reshape(own_ratios, [batch_size, num_members]),
        centers=tf.reshape(centers, [batch_size, num_members, 2]),
    )


def own_pixel_masks(params: InputMixingParams, kind: str, height: int, width: int) -> tf.Tensor:
    """Share of the member's own image at each pixel, shape (batch, members, H, W, 1).

    1 where a slot is not mixed; MixUp: lambda everywhere; CutMix: 0 inside the partner's box.
    """
    if kind not in MSDA_KINDS[1:]:
        raise ValueError(f"kind must be one of {MSDA_KINDS[1:]}. Received: kind={kind!r}")
    batch_size, num_members = tf.unstack(tf.shape(params.apply))
    if kind == "mixup":
        own = tf.ones([batch_size, num_members, height, width]) * params.own_ratios[..., None, None]
    else:
        partner_box = features.box_masks(
            tf.reshape(1.0 - params.own_ratios, [-1]),
            tf.reshape(params.centers, [-1, 2]),
            height,
            width,
        )
        own = 1.0 - tf.reshape(partner_box, [batch_size, num_members, height, width])
    own = tf.where(params.apply[..., None, None], own, 1.0)
    return own[..., tf.newaxis]


def mix_images(images: tf.Tensor, partner_images: tf.Tensor, own_masks: tf.Tensor) -> tf.Tensor:
    """Pixel-space mix, all shaped (batch, members, H, W, C) (masks broadcast on channels)."""
    own_masks = tf.cast(own_masks, images.dtype)
    return own_masks * images + (1.0 - own_masks) * partner_images


def corrected_own_share(own_masks: tf.Tensor, member_masks: tf.Tensor) -> tf.Tensor:
    """Own image's share of the area each member keeps after feature mixing, (batch, members).

    lambda' = mean(own_mask * m_member) / (mean(m_member) + 1e-8), with the pixel mask
    average-pooled to the feature grid when the stem downsamples (docs/method.md §6).

    Args:
        own_masks: (batch, members, H, W, 1) from `own_pixel_masks`.
        member_masks: (batch, h, w, members) feature-mixing masks; H and W multiples of h, w.
    """
    batch_members = tf.shape(own_masks)[:2]
    height, width = own_masks.shape[2], own_masks.shape[3]
    grid_h, grid_w = member_masks.shape[1], member_masks.shape[2]
    pooled = tf.reshape(own_masks, [-1, height, width, 1])
    if (height, width) != (grid_h, grid_w):
        pool = (height // grid_h, width // grid_w)
        pooled = tf.nn.avg_pool2d(pooled, ksize=pool, strides=pool, padding="VALID")
    pooled = tf.reshape(pooled, tf.concat([batch_members, [grid_h, grid_w]], axis=0))
    area = tf.transpose(member_masks, [0, 3, 1, 2])
    kept = tf.reduce_mean(pooled * area, axis=[2, 3])
    return kept / (tf.reduce_mean(area, axis=[2, 3]) + _EPSILON)


def own_majority(own_masks: tf.Tensor, own_share: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Swaps the roles of own image and partner where the own image is the minor part.

    Where the own image keeps less than half of what its member sees (lambda' < 0.5), the
    own image takes the partner's region and the partner the own region, and the shares
    swap, so every member's own image covers at least half of what that member sees. This
    changes the pixels, not only the label: the authors' `reverse_if_first_minor`
    (docs/method.md §6). For MixUp it is lambda -> 1 - lambda.

    Args:
        own_masks: (batch, members, H, W, 1) from `own_pixel_masks`.
        own_share: (batch, members) from `corrected_own_share` for those masks.

    Returns:
        The own masks and own shares after the swap, same shapes.
    """
    swap = own_share < 0.5
    own_masks = tf.where(swap[..., tf.newaxis, tf.newaxis, tf.newaxis], 1.0 - own_masks, own_masks)
    return own_masks, tf.where(swap, 1.0 - own_share, own_share)


def soft_labels(
    labels: tf.Tensor, partner_labels: tf.Tensor, own_share: tf.Tensor, num_classes: int
) -> tf.Tensor:
    """Soft targets lambda' * onehot(own) + (1 - lambda') * onehot(partner), (batch, M, classes)."""
    own_share = own_share[..., tf.newaxis]
    return own_share * tf.one_hot(labels, num_classes) + (1.0 - own_share) * tf.one_hot(
        partner_labels, num_classes
    )
