"""Reading `.keras` files whose network is a plain functional model (saved before `MixMoNetwork`).

Those files hold a MixMoModel whose network is a plain functional model with the layers
member_i_images (inputs), the stems, mixing_masks (input), feature_mixing, the core and
head_i. `MixMoModel.from_config` turns that saved config into a `MixMoNetwork` of the same
layers, so the file's weights load and the network keeps its parts like a new one.

Keras finds the weights of a model's sub-network under the snake-cased class name of the
sub-network ("layers/functional/..." in those files), so the network read from such a file
is a `Functional`, the subclass below: a `MixMoNetwork` in every respect but its class name.
Saving it again keeps that name, so the re-saved file loads too. Checkpoints need nothing of
this: they address the network's layers by their order, which `MixMoNetwork` keeps.
"""

from __future__ import annotations

import copy

import keras

from mixmo_tf.models.network import MixMoNetwork, member_input_name


def is_legacy_network_config(config: dict) -> bool:
    """Whether `config` (a serialized network) is a pre-`MixMoNetwork` functional model."""
    return config.get("class_name") == "Functional" and config.get("module", "").startswith("keras")


@keras.saving.register_keras_serializable(package="mixmo_tf", name="LegacyMixMoNetwork")
class Functional(MixMoNetwork):
    """A `MixMoNetwork` read from a file whose weights sit under "functional" (see module)."""


def _layers_reading(layers: list[dict], name: str) -> list[dict]:
    """The layer configs whose first call reads the output of the layer named `name`."""

    def tensors(value) -> list[dict]:
        if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
            return [value]
        if isinstance(value, (list, tuple)):
            return [tensor for item in value for tensor in tensors(item)]
        return []

    def reads(layer: dict) -> bool:
        arguments = tensors(layer["inbound_nodes"][0]["args"])
        return any(tensor["config"]["keras_history"][0] == name for tensor in arguments)

    return [layer for layer in layers if layer["inbound_nodes"] and reads(layer)]


def network_from_legacy_config(config: dict, custom_objects=None) -> Functional:
    """The `MixMoNetwork` (as `Functional`) of a pre-`MixMoNetwork` saved network config.

    Raises:
        ValueError: the config is not a network that `build_mixmo_network` made.
    """
    network = copy.deepcopy(config["config"])
    layers = network["layers"]
    inputs = [layer["name"] for layer in layers if layer["class_name"] == "InputLayer"]
    members = [name for name in inputs if name.startswith("member_")]
    try:
        stems = [_layers_reading(layers, member_input_name(i))[0] for i in range(len(members))]
        (mixing,) = _layers_reading(layers, stems[0]["name"])
        (core,) = _layers_reading(layers, mixing["name"])
        heads = _layers_reading(layers, core["name"])
        (member_input,) = [layer for layer in layers if layer["name"] == member_input_name(0)]
    except (IndexError, ValueError) as error:
        raise ValueError(
            f"The saved network {network['name']!r} is not a MixMo network of mixmo-tf "
            "(member_i_images -> stems -> feature_mixing -> core -> heads)."
        ) from error

    def deserialize(layer: dict) -> keras.layers.Layer:
        return keras.saving.deserialize_keras_object(
            {key: value for key, value in layer.items() if key != "inbound_nodes"},
            custom_objects,
        )

    return Functional(
        stems=[deserialize(stem) for stem in stems],
        mixing=deserialize(mixing),
        core=deserialize(core),
        heads=[deserialize(head) for head in heads],
        input_shape=member_input["config"]["batch_shape"][1:],
        name=network["name"],
        trainable=network.get("trainable", True),
    )
