"""Pre-activation ResNet-18-w for 64x64 inputs, as used by MixMo on Tiny ImageNet.

Stem: one 3x3 stride-2 conv to 64 channels per member (not widened): 64x64 -> 32x32, where
the members' features are mixed. Core: 4 stages of 2 pre-activation blocks at 64w, 128w,
256w, 512w channels, strides 1, 2, 2, 2, then global average pooling, with no final BN-ReLU.
Heads initialised N(0, 0.01). docs/method.md §2; details the spec leaves open follow the
authors' code (mixmo-pytorch, mixmo/networks/resnet.py): BN epsilon 1e-5 and momentum 0.9
(PyTorch's 0.1), bias-free convs with truncated He-normal init, zero head biases, and
PyTorch's symmetric padding of the stride-2 3x3 convs. Paper of the network:
https://arxiv.org/abs/1603.05027.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from mixmo_tf.config.backbones import Backbone
from mixmo_tf.models.batch_norm import FusedBatchNormalization
from mixmo_tf.models.network import network_from_backbone
from mixmo_tf.models.wrn import BN_EPSILON, BN_MOMENTUM

STEM_CHANNELS = 64
STAGE_CHANNELS = (64, 128, 256, 512)
STAGE_STRIDES = (1, 2, 2, 2)
BLOCKS_PER_STAGE = 2
# The authors' heads: nn.init.normal_(weight, std=0.01), bias 0.
HEAD_INITIALIZER = {"class_name": "RandomNormal", "config": {"mean": 0.0, "stddev": 0.01}}
_CONV_INIT = "he_normal"  # Keras' He normal is truncated at 2 std, as the authors' init


def _conv(x, filters: int, kernel: int, stride: int, name: str):
    """A bias-free conv padded as PyTorch's `padding=kernel // 2`.

    Keras' "same" pads a stride-2 conv on an even size only at the bottom/right, which
    shifts the sampled grid by one pixel; PyTorch pads both sides by kernel // 2.
    """
    padding = "same"
    if stride > 1 and kernel > 1:
        x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        padding = "valid"
    return keras.layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding=padding,
        use_bias=False,
        kernel_initializer=_CONV_INIT,
        name=name,
    )(x)


def _bn_relu(x, name: str):
    x = FusedBatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _block(x, filters: int, stride: int, name: str):
    """a = ReLU(BN(x)); conv3x3(stride)(a)-BN-ReLU-conv3x3 + (1x1 conv(stride)(a) or x)."""
    activated = _bn_relu(x, f"{name}_pre")
    out = _conv(activated, filters, 3, stride, f"{name}_conv1")
    out = _bn_relu(out, f"{name}_mid")
    out = _conv(out, filters, 3, 1, f"{name}_conv2")
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        # Unlike the WRN's, this projection reads the pre-activated input (authors' code).
        shortcut = _conv(activated, filters, 1, stride, f"{name}_shortcut")
    return keras.layers.Add(name=f"{name}_add")([out, shortcut])


def preact_resnet_stem(member: int, input_shape: Sequence[int] = (64, 64, 3)) -> keras.Model:
    """Member `member`'s stem: conv 3x3, 3 -> 64 channels, stride 2, no bias."""
    images = keras.Input(shape=tuple(input_shape), name=f"stem_{member}_images")
    features = _conv(images, STEM_CHANNELS, 3, 2, f"stem_{member}_conv")
    return keras.Model(images, features, name=f"stem_{member}")


def preact_resnet_core(width: int, input_shape: Sequence[int] = (32, 32, STEM_CHANNELS)):
    """The shared PreActResNet-18-w core: 4 stages of 2 blocks and global average pooling.

    Args:
        width: widening factor w of the stages (1, 2, 3 in the paper).
        input_shape: shape of the mixed stem features. Defaults to `(32, 32, 64)`.

    Returns:
        A functional model `(batch, H, W, 64) -> (batch, 512 * width)`.
    """
    if width < 1:
        raise ValueError(f"width must be >= 1, e.g. 2. Received: width={width}")
    features = keras.Input(shape=tuple(input_shape), name="mixed_features")
    x = features
    for stage, (channels, stride) in enumerate(zip(STAGE_CHANNELS, STAGE_STRIDES)):
        for block in range(BLOCKS_PER_STAGE):
            x = _block(
                x, channels * width, stride if block == 0 else 1, f"stage{stage}_block{block}"
            )
    # No final BN-ReLU: the last block's sum is pooled directly (docs/method.md §2, authors' code).
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(features, pooled, name=f"preact_resnet18_{width}_core")


def preact_resnet_backbone(depth: int, width: int, input_shape: Sequence[int]) -> Backbone:
    """The registry's builder of `--backbone=preact_resnet` (the depth is always 18)."""
    del depth  # PreActResNet-18 only; Config does not ask for --depth with this backbone.
    stem_input = tuple(input_shape)
    stem_output = (-(-stem_input[0] // 2), -(-stem_input[1] // 2), STEM_CHANNELS)
    return Backbone(
        stem_factory=lambda member: preact_resnet_stem(member, stem_input),
        core=preact_resnet_core(width, stem_output),
        head_initializer=keras.initializers.get(HEAD_INITIALIZER),
        name=f"preact_resnet18_{width}",
    )


def preact_resnet(
    width: int,
    num_classes: int,
    num_members: int = 2,
    input_shape: Sequence[int] = (64, 64, 3),
) -> keras.Model:
    """MixMo PreActResNet-18-width with M members (M = 1 is the plain network).

    Args:
        width: widening factor w (1, 2, 3 in the paper).
        num_classes: classes per head (200 on Tiny ImageNet).
        num_members: M. Defaults to 2.
        input_shape: one image's `(H, W, C)`. Defaults to `(64, 64, 3)`.

    Returns:
        The `MixMoNetwork` of `build_mixmo_network`.
    """
    return network_from_backbone(
        preact_resnet_backbone(18, width, input_shape), num_classes, num_members, input_shape
    )
