"""Architecture invariants of the MixMo networks (docs/method.md §2 and §7).

Proven here:
- WRN-28-10 on 100 classes has the spec's trainable parameter counts (36,601,416 for M=2,
  36,536,884 for M=1), independent numbers from the paper's reference code.
- Each member has a head of the right shape for M = 1, 2, 3, and the M=1 network is a plain
  WRN: stem -> core -> head, the all-ones mixing being the identity.
- One training loss sends a non-zero, finite gradient to every trainable variable; the
  cross-entropy alone already does.
- Inference feeds the same image to every stem and sums the stem features (masks 1/M):
  `MixMoModel.call` equals a manual recomputation with the network and explicit masks, and
  equals running the sum of stem outputs through the core and heads layer by layer.
- `get_config`/`from_config` and `.keras` save/reload of a MixMoModel and of the bare
  network keep the hyper-parameters and give identical predictions.
- `build_mixmo_network` wraps a foreign Keras backbone (strided stem, half-size mask grid),
  which trains with `MixMoModel.fit` and predicts with the right shapes.
- Pre-activation blocks: stride on the second conv, 1x1 projection of the RAW block input,
  BN epsilon 1e-5 / momentum 0.9, no conv biases, he_normal init, no dropout.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers.models import (
    IMAGE_SHAPE,
    NUM_CLASSES,
    all_layers,
    perturb_batchnorm,
    random_images,
    random_train_batch,
    softmax,
    tiny_mixmo_model,
    uniform_masks,
)

# keras.saving.load_model below: importing mixmo_tf.models.saving registers the classes.
import mixmo_tf.models.saving  # noqa: F401
from mixmo_tf.models import MixMoModel, build_mixmo_network, wide_resnet, wrn28_10
from mixmo_tf.models.schedules import WarmupStepDecay

GRID = IMAGE_SHAPE[:2]


def _trainable_count(model: keras.Model) -> int:
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def _core(network: keras.Model) -> keras.Model:
    (core,) = [layer for layer in network.layers if layer.name.endswith("_core")]
    return core


# ---- sizes and shapes ------------------------------------------------------------------------


@pytest.mark.parametrize("num_members, expected", [(2, 36_601_416), (1, 36_536_884)])
def test_wrn28_10_trainable_parameters_match_the_paper(num_members, expected):
    network = wrn28_10(num_classes=100, num_members=num_members)
    assert _trainable_count(network) == expected


@pytest.mark.parametrize("depth, width, num_members", [(10, 1, 1), (10, 1, 2), (16, 1, 3)])
def test_output_shapes_per_member(depth, width, num_members):
    model = tiny_mixmo_model(num_members, depth, width)
    network = model.network
    assert len(network.inputs) == num_members + 1
    assert tuple(network.inputs[-1].shape[1:]) == (*GRID, num_members)
    images = random_images(3, seed=0)
    # keras.tree.flatten: a one-output functional model returns its tensor, not a list.
    logits = keras.tree.flatten(
        network([images] * num_members + [uniform_masks(3, GRID, num_members)])
    )
    assert [tuple(x.shape) for x in logits] == [(3, NUM_CLASSES)] * num_members
    outputs = model(images)
    assert tuple(outputs["ensemble"].shape) == (3, NUM_CLASSES)
    assert tuple(outputs["members"].shape) == (3, num_members, NUM_CLASSES)
    np.testing.assert_allclose(np.sum(outputs["ensemble"], axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.sum(outputs["members"], axis=-1), 1.0, rtol=1e-5)


def test_single_member_network_is_a_plain_wrn():
    model = tiny_mixmo_model(num_members=1)
    network = model.network
    perturb_batchnorm(network, seed=1)
    stem, core, head = network.get_layer("stem_0"), _core(network), network.get_layer("head_0")
    plain_input = keras.Input(IMAGE_SHAPE)
    plain = keras.Model(plain_input, head(core(stem(plain_input))))
    # Same parameters: the single-member wrapper adds nothing trainable.
    assert _trainable_count(plain) == _trainable_count(network)
    images = random_images(4, seed=2)
    masks = np.ones((4, *GRID, 1), np.float32)
    for training in (False, True):
        mixmo_logits = network([images, masks], training=training)
        np.testing.assert_allclose(
            mixmo_logits, plain(images, training=training), rtol=1e-5, atol=1e-5
        )
    outputs = model(images)
    plain_probabilities = softmax(np.asarray(plain(images)))
    np.testing.assert_allclose(outputs["ensemble"], plain_probabilities, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs["members"][:, 0], plain_probabilities, rtol=1e-5, atol=1e-6)


# ---- gradients ----------------------------------------------------------------------------------


@pytest.mark.parametrize("num_members", [2, 3])
def test_every_trainable_variable_gets_a_finite_nonzero_gradient(num_members):
    model = tiny_mixmo_model(num_members)
    batch = model.mix_batch(random_train_batch(8, num_members, seed=num_members))
    with tf.GradientTape(persistent=True) as tape:
        logits = model.member_logits(batch["images"], batch["masks"], training=True)
        cross_entropy = model.weighted_cross_entropy(batch["targets"], logits, batch["weights"])
        loss = cross_entropy + model.l2 * model.l2_loss()
    variables = model.trainable_variables
    for target in (cross_entropy, loss):
        gradients = tape.gradient(target, variables)
        for variable, gradient in zip(variables, gradients):
            assert gradient is not None, variable.path
            gradient = np.asarray(gradient)
            assert np.all(np.isfinite(gradient)), variable.path
            assert np.any(gradient != 0), variable.path


# ---- inference --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inference_model() -> MixMoModel:
    model = tiny_mixmo_model(num_members=3)
    perturb_batchnorm(model, seed=3)
    return model


def test_call_is_the_mean_logit_ensemble_with_masks_one_over_m(inference_model):
    images = random_images(5, seed=4)
    logits = np.stack(
        inference_model.network([images] * 3 + [uniform_masks(5, GRID, 3)], training=False), axis=1
    )
    outputs = inference_model(images)
    np.testing.assert_allclose(outputs["members"], softmax(logits), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        outputs["ensemble"], softmax(logits.mean(axis=1)), rtol=1e-5, atol=1e-6
    )
    # The ensemble is not an average of member probabilities, and members differ.
    assert not np.allclose(outputs["ensemble"], np.mean(outputs["members"], axis=1), atol=1e-4)
    assert not np.allclose(logits[:, 0], logits[:, 1], atol=1e-3)
    predicted = inference_model.predict(images, verbose=0)
    np.testing.assert_allclose(predicted["ensemble"], outputs["ensemble"], rtol=1e-5, atol=1e-6)


def test_inference_runs_the_sum_of_stem_features_through_the_core(inference_model):
    network = inference_model.network
    images = random_images(5, seed=5)
    stem_outputs = [network.get_layer(f"stem_{i}")(images) for i in range(3)]
    pooled = _core(network)(tf.add_n(stem_outputs), training=False)
    logits = np.stack([network.get_layer(f"head_{i}")(pooled) for i in range(3)], axis=1)
    np.testing.assert_allclose(
        inference_model(images)["members"], softmax(logits), rtol=1e-4, atol=1e-6
    )
    # Guard: the stems differ, so summing is not the same as using one stem M times.
    pooled_one_stem = _core(network)(3 * stem_outputs[0], training=False)
    assert not np.allclose(pooled, pooled_one_stem, atol=1e-3)


# ---- serialization ------------------------------------------------------------------------------

_HYPERPARAMETERS = {
    "mixing_alpha": 1.0,
    "loss_power": 2.0,
    "cut_prob": 0.3,
    "cut_prob_decay_start": 0.5,
    "msda": "cutmix",
    "msda_prob": 0.25,
    "msda_alpha": 0.5,
    "l2": 1e-4,
    "seed": 7,
    "steps_per_epoch": 11,
    "epochs": 5,
}


@pytest.fixture(scope="module")
def trained_custom_model() -> MixMoModel:
    """A MixMoModel with non-default hyper-parameters, a schedule and one training step."""
    network = wide_resnet(10, 1, NUM_CLASSES, num_members=2)
    model = MixMoModel(network, **_HYPERPARAMETERS)
    model.compile(optimizer=keras.optimizers.SGD(WarmupStepDecay(0.05, 10, [20]), momentum=0.9))
    model.train_step(random_train_batch(8, 2, seed=6))
    perturb_batchnorm(model, seed=7)
    return model


def _assert_same_predictions(model_a, model_b, images):
    outputs_a, outputs_b = model_a(images), model_b(images)
    for key in ("ensemble", "members"):
        np.testing.assert_array_equal(outputs_a[key], outputs_b[key])


def test_config_round_trip(trained_custom_model):
    config = trained_custom_model.get_config()
    clone = MixMoModel.from_config(config)
    # from_config leaves its argument intact: a second clone from the same dict works.
    assert MixMoModel.from_config(config).get_config() == config
    for name, value in _HYPERPARAMETERS.items():
        assert getattr(clone, name) == value, name
    assert clone.get_config() == config
    clone.set_weights(trained_custom_model.get_weights())
    _assert_same_predictions(trained_custom_model, clone, random_images(4, seed=8))


def test_keras_file_reload_of_mixmo_model(trained_custom_model, tmp_path):
    path = str(tmp_path / "mixmo.keras")
    trained_custom_model.save(path)
    reloaded = keras.saving.load_model(path)
    assert isinstance(reloaded, MixMoModel)
    for name, value in _HYPERPARAMETERS.items():
        assert getattr(reloaded, name) == value, name
    assert int(reloaded.optimizer.iterations) == int(trained_custom_model.optimizer.iterations) == 1
    assert reloaded.optimizer.get_config() == trained_custom_model.optimizer.get_config()
    _assert_same_predictions(trained_custom_model, reloaded, random_images(4, seed=9))


def test_keras_file_reload_of_bare_network(trained_custom_model, tmp_path):
    network = trained_custom_model.network
    path = str(tmp_path / "network.keras")
    network.save(path)
    reloaded = keras.saving.load_model(path)
    inputs = [random_images(4, seed=10)] * 2 + [uniform_masks(4, GRID, 2)]
    for expected, actual in zip(network(inputs), reloaded(inputs)):
        np.testing.assert_array_equal(expected, actual)


# ---- a foreign backbone --------------------------------------------------------------------------

_TINY_SHAPE = (16, 16, 3)


def _strided_stem(member: int) -> keras.layers.Layer:
    return keras.layers.Conv2D(8, 3, strides=2, padding="same", name=f"tiny_stem_{member}")


def test_build_mixmo_network_wraps_another_backbone():
    core = keras.Sequential(
        [
            keras.layers.Conv2D(12, 3, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
        ],
        name="tiny_core",
    )
    network = build_mixmo_network(
        _strided_stem, core, num_classes=5, num_members=2, input_shape=_TINY_SHAPE
    )
    model = MixMoModel(network, steps_per_epoch=2, epochs=1)
    # The strided stem halves the grid: masks are sampled at 8x8, not at the image size.
    assert model.mask_shape == (8, 8)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    rng = np.random.default_rng(11)
    data = {
        "images": rng.standard_normal((16, 2, *_TINY_SHAPE)).astype(np.float32),
        "labels": rng.integers(0, 5, (16, 2)).astype(np.int32),
    }
    assert tuple(model.mix_batch(data)["masks"].shape) == (16, 8, 8, 2)
    before = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    history = model.fit(tf.data.Dataset.from_tensor_slices(data).batch(8), epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == 2
    assert np.isfinite(history.history["loss"][-1])
    for variable, initial in zip(model.trainable_variables, before):
        assert not np.array_equal(keras.ops.convert_to_numpy(variable), initial), variable.path
    predicted = model.predict(rng.standard_normal((3, *_TINY_SHAPE)).astype(np.float32), verbose=0)
    assert predicted["ensemble"].shape == (3, 5)
    assert predicted["members"].shape == (3, 2, 5)


def _sequential_stem(member: int) -> keras.layers.Layer:
    """A stem that is itself a model (conv, BN, ReLU), as users' backbones often have."""
    return keras.Sequential(
        [
            keras.layers.Conv2D(4, 3, padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
        ],
        name=f"seq_stem_{member}",
    )


@pytest.mark.parametrize("num_members", [1, 2, 3])
def test_the_summed_path_is_the_mixed_path_with_masks_one_over_m(num_members):
    """The prediction path (stem features summed) equals the network fed masks 1/M.

    With nested-model stems and core, whose own `input` names their inner tensors.
    """
    core = keras.Sequential(
        [keras.layers.Conv2D(6, 3, padding="same"), keras.layers.GlobalAveragePooling2D()]
    )
    network = build_mixmo_network(
        _sequential_stem, core, num_classes=5, num_members=num_members, input_shape=_TINY_SHAPE
    )
    perturb_batchnorm(network, seed=4)
    images = np.random.default_rng(5).standard_normal((3, *_TINY_SHAPE)).astype(np.float32)
    masks = uniform_masks(3, _TINY_SHAPE[:2], num_members)
    expected = network.mixed_logits([images] * num_members, masks)
    assert len(expected) == num_members
    for _ in range(2):  # calling it leaves the network's graph as it was
        logits = network.summed_logits(images)
        assert len(logits) == num_members
        for got, want in zip(logits, expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_the_network_holds_the_parts_it_was_built_from():
    stems = []
    core = keras.Sequential([keras.layers.GlobalAveragePooling2D()])

    def stem_factory(member):
        stems.append(_sequential_stem(member))
        return stems[-1]

    network = build_mixmo_network(stem_factory, core, 5, 3, _TINY_SHAPE)
    assert network.stems == stems and network.core is core
    assert [head.name for head in network.heads] == ["head_0", "head_1", "head_2"]
    assert network.mixing.num_members == 3
    assert (network.num_members, network.num_classes, network.mask_shape) == (3, 5, (16, 16))


# ---- block details -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wrn16_2_core() -> keras.Model:
    """WRN-16-2: two blocks per group, so identity, stride-1 and stride-2 projections occur."""
    return _core(wide_resnet(16, 2, NUM_CLASSES, num_members=2))


# (block, stride, channels, projection, name of the layer whose output is the block input)
_BLOCKS = [
    ("group0_block0", 1, 32, True, None),
    ("group0_block1", 1, 32, False, "group0_block0_add"),
    ("group1_block0", 2, 64, True, "group0_block1_add"),
    ("group1_block1", 1, 64, False, "group1_block0_add"),
    ("group2_block0", 2, 128, True, "group1_block1_add"),
    ("group2_block1", 1, 128, False, "group2_block0_add"),
]


@pytest.mark.parametrize("block, stride, channels, projection, input_layer", _BLOCKS)
def test_block_wiring_and_strides(wrn16_2_core, block, stride, channels, projection, input_layer):
    core = wrn16_2_core
    layer = lambda suffix: core.get_layer(f"{block}_{suffix}")  # noqa: E731
    block_input = core.inputs[0] if input_layer is None else core.get_layer(input_layer).output
    # BN-ReLU-conv(1)-BN-ReLU-conv(stride), in this order.
    chain = [
        block_input,
        layer("pre_bn"),
        layer("pre_relu"),
        layer("conv1"),
        layer("mid_bn"),
        layer("mid_relu"),
        layer("conv2"),
    ]
    for previous, current in zip(chain[:-1], chain[1:]):
        expected = previous if isinstance(previous, keras.KerasTensor) else previous.output
        assert current.input is expected, current.name
    assert layer("conv1").strides == (1, 1)
    assert layer("conv2").strides == (stride, stride)
    assert layer("conv1").kernel_size == layer("conv2").kernel_size == (3, 3)
    assert layer("conv1").filters == layer("conv2").filters == channels
    names = {sub.name for sub in core.layers}
    if projection:
        shortcut = layer("shortcut")
        assert shortcut.input is block_input  # the raw input, not the pre-activated one
        assert shortcut.kernel_size == (1, 1) and shortcut.strides == (stride, stride)
        assert shortcut.filters == channels
        shortcut_output = shortcut.output
    else:
        assert f"{block}_shortcut" not in names
        shortcut_output = block_input
    add_inputs = layer("add").input
    assert add_inputs[0] is layer("conv2").output and add_inputs[1] is shortcut_output


def test_core_output_resolution_and_width(wrn16_2_core):
    assert tuple(wrn16_2_core.get_layer("final_relu").output.shape[1:]) == (8, 8, 128)
    assert tuple(wrn16_2_core.output.shape[1:]) == (128,)


def test_layer_hyperparameters():
    network = wide_resnet(16, 2, NUM_CLASSES, num_members=2)
    layers = all_layers(network)
    batchnorms = [x for x in layers if isinstance(x, keras.layers.BatchNormalization)]
    convs = [x for x in layers if isinstance(x, keras.layers.Conv2D)]
    denses = [x for x in layers if isinstance(x, keras.layers.Dense)]
    # 2 per block x 6 blocks + final; 2 stems + 2 per block + 3 projections; 2 heads.
    assert (len(batchnorms), len(convs), len(denses)) == (13, 17, 2)
    assert not [x for x in layers if isinstance(x, keras.layers.Dropout)]
    for bn in batchnorms:
        assert bn.epsilon == pytest.approx(1e-5) and bn.momentum == pytest.approx(0.9), bn.name
        assert bn.center and bn.scale
        np.testing.assert_array_equal(bn.gamma, 1.0)
        np.testing.assert_array_equal(bn.beta, 0.0)
    for layer in convs + denses:
        init = layer.kernel_initializer
        assert isinstance(init, keras.initializers.HeNormal), layer.name
        assert (init.scale, init.mode, init.distribution) == (2.0, "fan_in", "truncated_normal")
    for conv in convs:
        assert conv.use_bias is False and conv.bias is None, conv.name
        assert conv.padding == "same", conv.name
    for dense in denses:
        np.testing.assert_array_equal(dense.bias, 0.0)
    # Stems are 3x3, 3 -> 16 channels, stride 1 whatever the width.
    for member in range(2):
        stem = network.get_layer(f"stem_{member}")
        assert (stem.filters, stem.kernel_size, stem.strides) == (16, (3, 3), (1, 1))
        assert tuple(stem.kernel.shape) == (3, 3, 3, 16)
