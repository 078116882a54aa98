"""Network builders: the MixMo wrapper and the backbones it wraps."""

from mixmo_tf.models.batch_norm import FusedBatchNormalization
from mixmo_tf.models.mixmo import build_mixmo_network, ensemble_logits, member_input_name
from mixmo_tf.models.wide_resnet import (
    PRESETS,
    wide_resnet,
    wide_resnet_core,
    wide_resnet_stem,
    wrn10_1,
    wrn16_4,
    wrn28_10,
)

__all__ = [
    "FusedBatchNormalization",
    "PRESETS",
    "build_mixmo_network",
    "ensemble_logits",
    "member_input_name",
    "wide_resnet",
    "wide_resnet_core",
    "wide_resnet_stem",
    "wrn10_1",
    "wrn16_4",
    "wrn28_10",
]
