"""Input-level mixing (+CutMix / +MixUp) inside MixMo, with the MixMo-area label correction.

Per member and per slot, with probability `prob`, the member's image is mixed in pixel space
with a partner image; the partner's label share is then measured only over the area that
this member keeps after feature mixing, and where the own image would be the minor part the
two images swap regions (docs/method.md §6). As in `features`, sampling and arithmetic are
separate functions.
"""

from __future__ import annotations

import dataclasses

from keras import ops

from mixmo_tf.config.choices import MSDA_KINDS
from mixmo_tf.mixing import features, keyed_random
from mixmo_tf.mixing.keyed_random import Tensor

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

    apply: Tensor
    own_ratios: Tensor
    centers: Tensor


def sample_input_mixing_params(
    seed: Tensor,
    batch_size,
    num_members: int,
    prob: float,
    alpha: float,
    height: int,
    width: int,
) -> InputMixingParams:
    """Samples which slots are mixed, their ratios and CutMix box centres from a
    `keyed_random` key."""
    apply_seed, ratio_seed, center_seed = keyed_random.split(seed, 3)
    count = batch_size * num_members
    apply = keyed_random.uniform(apply_seed, [batch_size, num_members]) < prob
    own_ratios = features.sample_beta(ratio_seed, count, alpha)
    centers = features.sample_box_centers(center_seed, count, height, width)
    return InputMixingParams(
        apply=apply,
        own_ratios=ops.reshape(own_ratios, (-1, num_members)),
        centers=ops.reshape(centers, (-1, num_members, 2)),
    )


def own_pixel_masks(params: InputMixingParams, kind: str, height: int, width: int) -> Tensor:
    """Share of the member's own image at each pixel, shape (batch, members, H, W, 1).

    1 where a slot is not mixed; MixUp: lambda everywhere; CutMix: 0 inside the partner's box.
    """
    if kind not in MSDA_KINDS[1:]:
        raise ValueError(f"kind must be one of {MSDA_KINDS[1:]}. Received: kind={kind!r}")
    num_members = params.apply.shape[1]
    if kind == "mixup":
        own = ops.ones((height, width)) * params.own_ratios[..., None, None]
    else:
        partner_box = features.box_masks(
            ops.reshape(1.0 - params.own_ratios, (-1,)),
            ops.reshape(params.centers, (-1, 2)),
            height,
            width,
        )
        own = 1.0 - ops.reshape(partner_box, (-1, num_members, height, width))
    own = ops.where(params.apply[..., None, None], own, 1.0)
    return own[..., None]


def mix_images(images: Tensor, partner_images: Tensor, own_masks: Tensor) -> Tensor:
    """Pixel-space mix, all shaped (batch, members, H, W, C) (masks broadcast on channels)."""
    own_masks = ops.cast(own_masks, images.dtype)
    return own_masks * images + (1.0 - own_masks) * partner_images


def corrected_own_share(own_masks: Tensor, member_masks: Tensor) -> Tensor:
    """Own image's share of the area each member keeps after feature mixing, (batch, members).

    lambda' = mean(own_mask * m_member) / (mean(m_member) + 1e-8), with the pixel mask
    average-pooled to the feature grid when the stem downsamples (docs/method.md §6).

    Args:
        own_masks: (batch, members, H, W, 1) from `own_pixel_masks`.
        member_masks: (batch, h, w, members) feature-mixing masks; H and W multiples of h, w.
    """
    num_members, height, width = own_masks.shape[1:4]
    grid_h, grid_w = member_masks.shape[1], member_masks.shape[2]
    pooled = ops.reshape(own_masks, (-1, height, width, 1))
    if (height, width) != (grid_h, grid_w):
        pool = (height // grid_h, width // grid_w)
        pooled = ops.average_pool(
            pooled, pool, strides=pool, padding="valid", data_format="channels_last"
        )
    pooled = ops.reshape(pooled, (-1, num_members, grid_h, grid_w))
    area = ops.transpose(member_masks, (0, 3, 1, 2))
    kept = ops.mean(pooled * area, axis=(2, 3))
    return kept / (ops.mean(area, axis=(2, 3)) + _EPSILON)


def own_majority(own_masks: Tensor, own_share: Tensor) -> tuple[Tensor, Tensor]:
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
    own_masks = ops.where(swap[..., None, None, None], 1.0 - own_masks, own_masks)
    return own_masks, ops.where(swap, 1.0 - own_share, own_share)


def soft_labels(
    labels: Tensor, partner_labels: Tensor, own_share: Tensor, num_classes: int
) -> Tensor:
    """Soft targets lambda' * onehot(own) + (1 - lambda') * onehot(partner), (batch, M, classes)."""
    own_share = own_share[..., None]
    return own_share * ops.one_hot(labels, num_classes) + (1.0 - own_share) * ops.one_hot(
        partner_labels, num_classes
    )
