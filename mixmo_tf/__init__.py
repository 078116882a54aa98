"""mixmo-tf: MixMo (Rame, Sun, Cord, ICCV 2021) in Keras 3 / TensorFlow.

MixMo trains M subnetworks inside one network by mixing their inputs' stem features; at test
time the same image goes to every member and the heads form an ensemble for about the cost
of one network. Paper: https://arxiv.org/abs/2103.06132.
"""

from mixmo_tf.config import Config
from mixmo_tf.experiment import build_model, evaluate, train
from mixmo_tf.export import export_saved_model
from mixmo_tf.metrics import BrierScore, ExpectedCalibrationError, NegativeLogLikelihood
from mixmo_tf.mixing import FeatureMixing
from mixmo_tf.models import (
    FusedBatchNormalization,
    MixMoNetwork,
    build_mixmo_network,
    preact_resnet,
    wide_resnet,
    wrn10_1,
    wrn16_4,
    wrn28_10,
)
from mixmo_tf.optimizers import PyTorchSGD
from mixmo_tf.saving import load_model
from mixmo_tf.schedules import WarmupStepDecay
from mixmo_tf.training import MixMoModel

__version__ = "0.1.0"

__all__ = [
    "BrierScore",
    "Config",
    "ExpectedCalibrationError",
    "FeatureMixing",
    "FusedBatchNormalization",
    "MixMoModel",
    "MixMoNetwork",
    "NegativeLogLikelihood",
    "PyTorchSGD",
    "WarmupStepDecay",
    "build_mixmo_network",
    "build_model",
    "evaluate",
    "export_saved_model",
    "load_model",
    "preact_resnet",
    "train",
    "wide_resnet",
    "wrn10_1",
    "wrn16_4",
    "wrn28_10",
]
