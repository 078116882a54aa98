"""Turns any backbone split (stem | core | head) into an M-input, M-output MixMo network.

`MixMoNetwork` runs one stem per member, mixes the stem features with `FeatureMixing`, runs
the shared core once and applies one dense head per member. It keeps those parts as
attributes (`stems`, `mixing`, `core`, `heads`), so prediction, export and FLOP counting
read them instead of searching a graph. Two paths share the parts:

- the mixed path (calling the network): M member images and the mixing masks -> M logits,
  used in training (docs/method.md §3);
- the summed path (`summed_logits`): one image to every stem, stem features summed -> M
  logits, which is the mixed path with masks 1/M (docs/method.md §7) without the M mask
  products (which slow a bfloat16 prediction measurably: bench/README.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras

from mixmo_tf.config.backbones import Backbone
from mixmo_tf.mixing.features import FeatureMixing

MASKS_INPUT = "mixing_masks"


def member_input_name(member: int) -> str:
    """Name of member `member`'s image input."""
    return f"member_{member}_images"


@keras.saving.register_keras_serializable(package="mixmo_tf")
class MixMoNetwork(keras.Model):
    """M stems -> feature mixing -> shared core -> M heads, with its parts kept.

    A functional network: called on `[member_0_images, ..., member_{M-1}_images, masks]`
    (images `(batch, H, W, C)`, masks `(batch, h, w, M)` at the stems' output resolution,
    summing to 1 per pixel) it returns M logits `(batch, classes)` (one tensor when M = 1).
    Paper: https://arxiv.org/abs/2103.06132.

    Args:
        stems: M layers, member i's stem; not shared between members.
        mixing: the `FeatureMixing` layer of M members.
        core: shared layer mapping the mixed features to a feature vector `(batch, features)`.
        heads: M layers, member i's classifier on the core's features.
        input_shape: `(H, W, C)` of one image.
        **kwargs: `keras.Model` arguments (name, ...).

    Attributes:
        num_members: M.
        num_classes: classes per head.
        mask_shape: `(h, w)` of the masks, the stems' output resolution.
    """

    def __init__(
        self,
        stems: Sequence[keras.layers.Layer],
        mixing: FeatureMixing,
        core: keras.layers.Layer,
        heads: Sequence[keras.layers.Layer],
        input_shape: Sequence[int],
        **kwargs,
    ):
        stems, heads = list(stems), list(heads)
        if not stems or len(heads) != len(stems) or mixing.num_members != len(stems):
            raise ValueError(
                "MixMoNetwork needs M >= 1 stems, M heads and a FeatureMixing of M members. "
                f"Received: {len(stems)} stems, {len(heads)} heads, "
                f"mixing.num_members={mixing.num_members}"
            )
        images = [
            keras.Input(shape=tuple(input_shape), name=member_input_name(i))
            for i in range(len(stems))
        ]
        features = [stem(image) for stem, image in zip(stems, images)]
        mask_shape = (int(features[0].shape[1]), int(features[0].shape[2]))
        masks = keras.Input(shape=(*mask_shape, len(stems)), name=MASKS_INPUT)
        pooled = core(mixing([*features, masks]))
        logits = [head(pooled) for head in heads]
        super().__init__([*images, masks], logits, **kwargs)
        self.stems = stems
        self.mixing = mixing
        self.core = core
        self.heads = heads
        self.image_shape = tuple(int(size) for size in input_shape)
        self.num_members = len(stems)
        self.num_classes = int(logits[0].shape[-1])
        self.mask_shape = mask_shape

    def mixed_logits(self, member_images, masks, training: bool = False) -> list:
        """The training path: member i's stem sees `member_images[i]`, features mixed by `masks`.

        Args:
            member_images: M image batches `(batch, H, W, C)`.
            masks: `(batch, h, w, M)`, summing to 1 per pixel.
            training: BatchNorm mode.

        Returns:
            M tensors `(batch, num_classes)`.
        """
        logits = self([*member_images, masks], training=training)
        # A functional model with one output (M = 1) returns the tensor, not a list.
        return list(logits) if isinstance(logits, (list, tuple)) else [logits]

    def summed_logits(self, images, training: bool = False) -> list:
        """The prediction path: every stem sees `images`, the stem features are summed.

        Equal to `mixed_logits([images] * M, masks 1/M)`: with masks 1/M the mixing
        z = M * sum_i m_i * l_i is the plain sum of the features.

        Args:
            images: `(batch, H, W, C)`.
            training: BatchNorm mode.

        Returns:
            M tensors `(batch, num_classes)`.
        """
        summed = self.stems[0](images, training=training)
        for stem in self.stems[1:]:
            summed = summed + stem(images, training=training)
        pooled = self.core(summed, training=training)
        return [head(pooled, training=training) for head in self.heads]

    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        return {
            "name": self.name,
            "trainable": self.trainable,
            "stems": [serialize(stem) for stem in self.stems],
            "mixing": serialize(self.mixing),
            "core": serialize(self.core),
            "heads": [serialize(head) for head in self.heads],
            "input_shape": list(self.image_shape),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        deserialize = keras.saving.deserialize_keras_object
        config = dict(config)
        for name in ("stems", "heads"):
            config[name] = [deserialize(part, custom_objects) for part in config[name]]
        for name in ("mixing", "core"):
            config[name] = deserialize(config[name], custom_objects)
        return cls(**config)


def build_mixmo_network(
    stem_factory: Callable[[int], keras.layers.Layer],
    core: keras.layers.Layer,
    num_classes: int,
    num_members: int,
    input_shape: Sequence[int],
    head_initializer: str | keras.initializers.Initializer = "he_normal",
    name: str = "mixmo_network",
) -> MixMoNetwork:
    """Builds the MixMo network around a backbone.

    Args:
        stem_factory: called once per member index, returns that member's stem (a new layer
            each call: stems are not shared).
        core: shared layer mapping the mixed stem features to a feature vector
            `(batch, features)` (for a ResNet: the residual stages and the global pooling).
        num_classes: classes per head.
        num_members: M, the number of subnetworks.
        input_shape: `(H, W, C)` of one image.
        head_initializer: kernel initializer of the dense heads (biases start at zero).
            Defaults to "he_normal".
        name: model name.

    Returns:
        A `MixMoNetwork` with inputs `[member_0_images, ..., member_{M-1}_images,
        mixing_masks]` (masks shaped `(batch, h, w, M)` at the stem's output resolution) and
        M outputs, member i's logits `(batch, num_classes)`.
    """
    if num_members < 1:
        raise ValueError(f"num_members must be >= 1. Received: num_members={num_members}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2. Received: num_classes={num_classes}")
    heads = [
        keras.layers.Dense(
            num_classes,
            kernel_initializer=head_initializer,
            bias_initializer="zeros",
            name=f"head_{i}",
        )
        for i in range(num_members)
    ]
    return MixMoNetwork(
        stems=[stem_factory(i) for i in range(num_members)],
        mixing=FeatureMixing(num_members, name="feature_mixing"),
        core=core,
        heads=heads,
        input_shape=input_shape,
        name=name,
    )


def network_from_backbone(
    backbone: Backbone, num_classes: int, num_members: int, input_shape: Sequence[int]
) -> MixMoNetwork:
    """The MixMo network named "mixmo_<backbone.name>_m<M>" around a registry backbone."""
    return build_mixmo_network(
        backbone.stem_factory,
        backbone.core,
        num_classes,
        num_members,
        input_shape,
        head_initializer=backbone.head_initializer,
        name=f"mixmo_{backbone.name}_m{num_members}",
    )
