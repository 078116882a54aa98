"""Pre-activation Wide ResNet (WRN-depth-k) for 32x32 inputs, as used by MixMo on CIFAR.

Stem: one 3x3 conv to 16 channels per member (not widened). Core: 3 groups of (depth-4)/6
pre-activation blocks at 16k, 32k, 64k channels, strides 1, 2, 2, then BN-ReLU and global
average pooling. docs/method.md §2; reference WRN: https://arxiv.org/abs/1605.07146.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from mixmo_tf.config.backbones import Backbone, check_wrn
from mixmo_tf.models.batch_norm import FusedBatchNormalization
from mixmo_tf.models.network import network_from_backbone

STEM_CHANNELS = 16
# PyTorch's BatchNorm defaults, which the reference uses (Keras: epsilon 1e-3, momentum .99).
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
_CONV_INIT = "he_normal"


def _conv(filters: int, kernel: int, stride: int, name: str) -> keras.layers.Conv2D:
    return keras.layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding="same",
        use_bias=False,
        kernel_initializer=_CONV_INIT,
        name=name,
    )


def _bn_relu(x, name: str):
    x = FusedBatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _block(x, filters: int, stride: int, name: str):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3(stride); 1x1 projection of the raw input if needed."""
    out = _bn_relu(x, f"{name}_pre")
    out = _conv(filters, 3, 1, f"{name}_conv1")(out)
    out = _bn_relu(out, f"{name}_mid")
    out = _conv(filters, 3, stride, f"{name}_conv2")(out)
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv(filters, 1, stride, f"{name}_shortcut")(x)
    return keras.layers.Add(name=f"{name}_add")([out, shortcut])


def wide_resnet_stem(member: int) -> keras.layers.Layer:
    """Member `member`'s stem: conv 3x3, 3 -> 16 channels, stride 1, no bias."""
    return _conv(STEM_CHANNELS, 3, 1, f"stem_{member}")


def wide_resnet_core(
    depth: int, width: int, input_shape: Sequence[int] = (32, 32, STEM_CHANNELS)
) -> keras.Model:
    """The shared WRN core: residual groups, final BN-ReLU and global average pooling.

    Args:
        depth: total depth 6n+4 (28 in the paper).
        width: widening factor k (10 in the paper).
        input_shape: shape of the mixed stem features. Defaults to `(32, 32, 16)`.

    Returns:
        A functional model `(batch, H, W, 16) -> (batch, 64 * width)`.
    """
    check_wrn(depth, width)
    blocks_per_group = (depth - 4) // 6
    features = keras.Input(shape=tuple(input_shape), name="mixed_features")
    x = features
    for group, (channels, stride) in enumerate(zip((16, 32, 64), (1, 2, 2))):
        for block in range(blocks_per_group):
            x = _block(
                x, channels * width, stride if block == 0 else 1, f"group{group}_block{block}"
            )
    x = _bn_relu(x, "final")
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(features, pooled, name=f"wrn{depth}_{width}_core")


def wide_resnet(
    depth: int,
    width: int,
    num_classes: int,
    num_members: int = 2,
    input_shape: Sequence[int] = (32, 32, 3),
) -> keras.Model:
    """MixMo WRN-depth-width with M members (M = 1 is the plain network).

    Args:
        depth: 6n+4, e.g. 28.
        width: widening factor, e.g. 10.
        num_classes: classes per head.
        num_members: M. Defaults to 2.
        input_shape: one image's `(H, W, C)`. Defaults to `(32, 32, 3)`.

    Returns:
        The `MixMoNetwork` of `build_mixmo_network`.
    """
    return network_from_backbone(
        wide_resnet_backbone(depth, width, input_shape), num_classes, num_members, input_shape
    )


def wide_resnet_backbone(depth: int, width: int, input_shape: Sequence[int]) -> Backbone:
    """The registry's builder of `--backbone=wrn`: per-member stems and the shared core."""
    check_wrn(depth, width)
    return Backbone(
        stem_factory=wide_resnet_stem,
        core=wide_resnet_core(depth, width, (input_shape[0], input_shape[1], STEM_CHANNELS)),
        name=f"wrn{depth}_{width}",
    )


def wrn28_10(num_classes: int, num_members: int = 2) -> keras.Model:
    """The paper's WRN-28-10."""
    return wide_resnet(28, 10, num_classes, num_members)


def wrn16_4(num_classes: int, num_members: int = 2) -> keras.Model:
    """WRN-16-4, a mid-size network for quicker experiments."""
    return wide_resnet(16, 4, num_classes, num_members)


def wrn10_1(num_classes: int, num_members: int = 2) -> keras.Model:
    """WRN-10-1, the smallest WRN: tests and smoke runs."""
    return wide_resnet(10, 1, num_classes, num_members)
