"""Network builders: the MixMo wrapper and the backbones it wraps."""

from mixmo_tf.models.batch_norm import FusedBatchNormalization
from mixmo_tf.models.mixmo import (
    MixMoNetwork,
    build_mixmo_network,
    member_input_name,
    network_from_backbone,
)
from mixmo_tf.models.preact_resnet import (
    preact_resnet,
    preact_resnet_backbone,
    preact_resnet_core,
    preact_resnet_stem,
)
from mixmo_tf.models.wide_resnet import (
    PRESETS,
    wide_resnet,
    wide_resnet_backbone,
    wide_resnet_core,
    wide_resnet_stem,
    wrn10_1,
    wrn16_4,
    wrn28_10,
)

__all__ = [
    "FusedBatchNormalization",
    "MixMoNetwork",
    "PRESETS",
    "build_mixmo_network",
    "member_input_name",
    "network_from_backbone",
    "preact_resnet",
    "preact_resnet_backbone",
    "preact_resnet_core",
    "preact_resnet_stem",
    "wide_resnet",
    "wide_resnet_backbone",
    "wide_resnet_core",
    "wide_resnet_stem",
    "wrn10_1",
    "wrn16_4",
    "wrn28_10",
]
