"""Turns any backbone split (stem | core | head) into an M-input, M-output MixMo network.

The network takes M member images and the mixing masks, runs one stem per member, mixes the
stem features with `FeatureMixing`, runs the shared core once and applies one dense head per
member. The same network serves training (sampled masks), evaluation and prediction (masks
1/M, i.e. the sum of features); see `mixmo_tf.training.MixMoModel`. `ensemble_logits` runs
the prediction through the same layers with the sum itself, skipping the mask products.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from mixmo_tf.mixing import FeatureMixing

MASKS_INPUT = "mixing_masks"


def member_input_name(member: int) -> str:
    """Name of member `member`'s image input."""
    return f"member_{member}_images"


def build_mixmo_network(
    stem_factory: Callable[[int], keras.layers.Layer],
    core: keras.layers.Layer,
    num_classes: int,
    num_members: int,
    input_shape: Sequence[int],
    head_initializer: str | keras.initializers.Initializer = "he_normal",
    name: str = "mixmo_network",
) -> keras.Model:
    """Builds the functional MixMo network around a backbone.

    Args:
        stem_factory: called once per member index, returns that member's stem (a new layer
            each call: stems are not shared).
        core: shared layer mapping the mixed stem features to a feature vector
            `(batch, features)` (for a ResNet: the residual stages and the global pooling).
        num_classes: classes per head.
        num_members: M, the number of subnetworks.
        input_shape: `(H, W, C)` of one image.
        head_initializer: kernel initializer of the dense heads. Defaults to "he_normal".
        name: model name.

    Returns:
        A `keras.Model` with inputs `[member_0_images, ..., member_{M-1}_images,
        mixing_masks]` (masks shaped `(batch, h, w, M)` at the stem's output resolution) and
        M outputs, member i's logits `(batch, num_classes)`.
    """
    if num_members < 1:
        raise ValueError(f"num_members must be >= 1. Received: num_members={num_members}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2. Received: num_classes={num_classes}")
    images = [
        keras.Input(shape=tuple(input_shape), name=member_input_name(i)) for i in range(num_members)
    ]
    stems = [stem_factory(i) for i in range(num_members)]
    features = [stem(image) for stem, image in zip(stems, images)]
    grid_h, grid_w = features[0].shape[1], features[0].shape[2]
    masks = keras.Input(shape=(grid_h, grid_w, num_members), name=MASKS_INPUT)
    mixed = FeatureMixing(num_members, name="feature_mixing")([*features, masks])
    pooled = core(mixed)
    logits = [
        keras.layers.Dense(
            num_classes,
            kernel_initializer=head_initializer,
            bias_initializer="zeros",
            name=f"head_{i}",
        )(pooled)
        for i in range(num_members)
    ]
    return keras.Model([*images, masks], logits, name=name)


def network_num_members(network: keras.Model) -> int:
    """M of a network built by `build_mixmo_network`."""
    return len(network.inputs) - 1


def network_mask_shape(network: keras.Model) -> tuple[int, int]:
    """(h, w) of the masks a network built by `build_mixmo_network` expects."""
    shape = network.inputs[-1].shape
    return int(shape[1]), int(shape[2])


def call_inputs(layer: keras.layers.Layer):
    """The tensor(s) `layer` was called on in its network.

    `keras.Operation.input` reads the layer's first call; a nested model overrides `input`
    with its own inner inputs, which is not what is wanted here.
    """
    return keras.Operation.input.fget(layer)


def _layer_reading(network: keras.Model, tensor) -> keras.layers.Layer:
    """The layer of `network` called on `tensor` (each layer is called once in the network)."""
    for layer in network.layers:
        if not isinstance(layer, keras.layers.InputLayer) and call_inputs(layer) is tensor:
            return layer
    raise ValueError(
        f"No layer of {network.name} reads {tensor.name}: build it with build_mixmo_network."
    )


def ensemble_logits(network: keras.Model, images, training: bool = False) -> list[tf.Tensor]:
    """Each member's logits when every member sees `images`, as `network` with masks 1/M.

    With masks 1/M the mixing z = M * sum_i m_i * l_i is the plain sum of the stem features.
    Computing the sum directly through the network's own layers skips the M full-size mask
    products and the masks themselves: in bfloat16 they made a WRN-16-4 prediction 7.6%
    slower than the plain network's (bench/README.md).

    Args:
        network: built by `build_mixmo_network`.
        images: `(batch, H, W, C)`.
        training: BatchNorm mode.

    Returns:
        M tensors `(batch, num_classes)`.
    """
    mixing = next(layer for layer in network.layers if isinstance(layer, FeatureMixing))
    stems = [_layer_reading(network, image) for image in network.inputs[:-1]]
    heads = [
        next(layer for layer in network.layers if layer.output is output)
        for output in network.outputs
    ]
    core = _layer_reading(network, mixing.output)
    features = [stem(images, training=training) for stem in stems]
    pooled = core(tf.add_n(features), training=training)
    return [head(pooled, training=training) for head in heads]
