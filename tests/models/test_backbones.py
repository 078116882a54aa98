"""The backbone registry and PreActResNet-18-w (docs/method.md §2).

Proven here:
- PreActResNet-18-w on 200 classes and 64x64x3 images has the trainable parameter counts of
  the authors' PyTorch networks for w = 1, 2, 3 and M = 1, 2.
- Its members' features are mixed on a 64x32x32 map; its stride-2 convs pad like PyTorch
  (symmetrically); its projections read the pre-activated input; no BN-ReLU before the
  pooling; heads start N(0, 0.01) with zero biases.
- The prediction path (stem features summed) equals the mixed path with masks 1/M.
- `--backbone=preact_resnet` trains (smoke) through `mixmo_tf.training.run.train`; a backbone
  defined in this file is registered by one public call and trained the same way.
- Config speaks of the backbone: run folder, depth rule for the WRN only (that the settings
  layer imports no TensorFlow is tests/test_package.py's).
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
from helpers.models import perturb_batchnorm, uniform_masks
from helpers.runs import smoke_config

from mixmo_tf import backbones, data
from mixmo_tf.config import Config
from mixmo_tf.config.backbones import Backbone
from mixmo_tf.models import preact_resnet
from mixmo_tf.models.build import build_model
from mixmo_tf.training.run import train, train_stream

TINY_IMAGENET = (64, 64, 3)


def _trainable_count(model: keras.Model) -> int:
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


@pytest.fixture(scope="module")
def preact18_1() -> keras.Model:
    """PreActResNet-18-1, M = 2, 200 classes, 64x64 inputs, random BatchNorm statistics."""
    keras.utils.set_random_seed(3)
    network = preact_resnet(1, 200, 2, TINY_IMAGENET)
    perturb_batchnorm(network, seed=3)
    return network


def test_preact_resnet18_1_trainable_parameters_match_the_authors(preact18_1):
    assert _trainable_count(preact18_1) == 11_372_944
    assert _trainable_count(preact_resnet(1, 200, 1, TINY_IMAGENET)) == 11_268_616


@pytest.mark.slow
@pytest.mark.parametrize(
    "width, expected_m2, expected_m1", [(2, 44_991_376, 44_784_648), (3, 100_846_992, 100_537_864)]
)
def test_wider_preact_resnet18_trainable_parameters_match_the_authors(
    width, expected_m2, expected_m1
):
    """M = 2 built; M = 1 is that network less its second stem and head (w = 1 builds both)."""
    network = preact_resnet(width, 200, 2, TINY_IMAGENET)
    assert _trainable_count(network) == expected_m2
    second_member = _trainable_count(network.stems[1]) + _trainable_count(network.heads[1])
    assert expected_m2 - second_member == expected_m1


def test_members_are_mixed_on_a_64x32x32_map(preact18_1):
    assert preact18_1.mask_shape == (32, 32)
    for stem in preact18_1.stems:
        assert tuple(stem.output.shape) == (None, 32, 32, 64)
    assert tuple(preact18_1.core.input.shape) == (None, 32, 32, 64)
    assert tuple(preact18_1.core.output.shape) == (None, 512)


def test_the_stride_2_stem_pads_symmetrically_as_pytorch(preact18_1):
    stem = preact18_1.stems[0]
    (conv,) = [layer for layer in stem.layers if isinstance(layer, keras.layers.Conv2D)]
    assert conv.strides == (2, 2) and not conv.use_bias and conv.filters == 64
    images = np.random.default_rng(0).standard_normal((1, *TINY_IMAGENET)).astype(np.float32)
    kernel = conv.kernel.numpy()
    padded = np.pad(images[0], ((1, 1), (1, 1), (0, 0)))
    # Output (i, j) sees input rows 2i-1 .. 2i+1 (PyTorch padding=1), not 2i .. 2i+2.
    for i, j in [(0, 0), (5, 31), (31, 31)]:
        window = padded[2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
        expected = np.tensordot(window, kernel, axes=([0, 1, 2], [0, 1, 2]))
        np.testing.assert_allclose(stem(images)[0, i, j], expected, rtol=1e-4, atol=1e-4)


def test_blocks_are_pre_activation_with_projections_of_the_activated_input(preact18_1):
    core = preact18_1.core
    for block, channels in [("stage1_block0", 128), ("stage2_block0", 256), ("stage3_block0", 512)]:
        shortcut = core.get_layer(f"{block}_shortcut")
        assert shortcut.kernel_size == (1, 1) and shortcut.strides == (2, 2)
        assert shortcut.filters == channels
        assert shortcut.input is core.get_layer(f"{block}_pre_relu").output
        assert core.get_layer(f"{block}_conv1").strides == (2, 2)
        assert core.get_layer(f"{block}_conv2").strides == (1, 1)
    # Identity shortcuts elsewhere: 3 projections in 8 blocks.
    assert sum(layer.name.endswith("_shortcut") for layer in core.layers) == 3
    # No final BN-ReLU: the pooling reads the last residual sum.
    assert core.get_layer("pool").input is core.get_layer("stage3_block1_add").output
    batch_norms = [
        layer for layer in core.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert len(batch_norms) == 16
    assert all((bn.epsilon, bn.momentum) == (1e-5, 0.9) for bn in batch_norms)


def test_heads_start_normal_with_std_0_01_and_zero_bias(preact18_1):
    for head in preact18_1.heads:
        kernel = head.kernel.numpy()
        assert kernel.shape == (512, 200)
        assert abs(kernel.mean()) < 1e-3 and kernel.std() == pytest.approx(0.01, rel=0.02)
        assert not np.any(head.bias.numpy())


def test_prediction_equals_the_mixed_path_with_masks_one_over_m(preact18_1):
    images = np.random.default_rng(1).standard_normal((2, *TINY_IMAGENET)).astype(np.float32)
    mixed = preact18_1.mixed_logits([images, images], uniform_masks(2, (32, 32), 2))
    summed = preact18_1.summed_logits(images)
    for got, want in zip(summed, mixed):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


# ---- the registry and the run ------------------------------------------------------------------


def _smoke(tmp_path, backbone: str) -> Config:
    # Config.smoke keeps a custom backbone's depth; WRN-10 is the smoke depth of "wrn" only.
    return smoke_config(tmp_path / backbone, backbone=backbone, depth=28, precision="float32")


@pytest.mark.slow
def test_preact_resnet_trains_from_a_config(tmp_path):
    """The network `--backbone=preact_resnet` builds learns from the training pipeline."""
    config = dataclasses.replace(_smoke(tmp_path, "preact_resnet"), batch_size=8)
    model = build_model(config)
    assert model.network.name == "mixmo_preact_resnet18_1_m2"
    before = [variable.numpy() for variable in model.trainable_variables]
    images, labels = data.load_split(config.spec, "train")
    stream = train_stream(config)
    history = model.fit(
        data.train_dataset(images, labels, config.spec, stream, 0, 2),
        steps_per_epoch=2,
        shuffle=False,
    )
    assert np.all(np.isfinite(history.history["loss"]))
    assert int(model.optimizer.iterations.numpy()) == 2
    after = model.trainable_variables
    assert all(not np.array_equal(b, a.numpy()) for b, a in zip(before, after))


def _tiny_backbone(depth: int, width: int, input_shape) -> Backbone:
    """A backbone defined outside the library: a strided conv stem and a one-conv core."""

    def stem(member: int) -> keras.layers.Layer:
        return keras.layers.Conv2D(8, 3, strides=2, padding="same", name=f"stem_{member}")

    core = keras.Sequential(
        [
            keras.layers.Conv2D(8 * width, 3, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
        ],
        name="tiny_core",
    )
    return Backbone(stem_factory=stem, core=core, name=f"tiny{width}")


def test_a_backbone_registered_by_one_call_trains(tmp_path):
    if "tiny_test_net" not in backbones.backbone_names():
        backbones.register_backbone("tiny_test_net", _tiny_backbone)
    with pytest.raises(ValueError, match="already registered"):
        backbones.register_backbone("tiny_test_net", _tiny_backbone)
    config = _smoke(tmp_path, "tiny_test_net")
    assert config.network_label == "tiny_test_net-1"
    model = train(config)
    assert model.network.mask_shape == (16, 16)
    assert model.network.core.name == "tiny_core"
    assert int(model.optimizer.iterations.numpy()) == 6


def test_config_speaks_of_the_backbone():
    assert Config(dataset="digits").model_dir == "runs/digits_wrn28-10_cutmix_m2"
    preact = Config(dataset="digits", backbone="preact_resnet", width=2, depth=27)
    assert preact.model_dir == "runs/digits_preact_resnet18-2_cutmix_m2"  # depth is WRN's only
    with pytest.raises(ValueError, match="--depth must be 6n\\+4 .* --backbone=wrn"):
        Config(dataset="digits", depth=27)
    with pytest.raises(ValueError, match="--backbone must be one of .*preact_resnet"):
        Config(dataset="digits", backbone="resnet50")
