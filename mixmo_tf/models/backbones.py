"""Backbones by name: the one place that maps `--backbone` to a builder (imports no TensorFlow).

A backbone is what MixMo wraps: a stem factory (one stem per member) and a shared core (see
`mixmo_tf.models.build_mixmo_network`). Built-in backbones name their builder as
"module:function", imported only when a network is built, so that `Config` can validate
`--backbone` without TensorFlow. A new backbone needs one public call and no library edit:

    from mixmo_tf.models import backbones

    backbones.register_backbone("my_net", my_builder, label=lambda d, w: f"my_net-{w}")

after which `Config(backbone="my_net", ...)` and `main.py --backbone=my_net` (from a script
that made the call) build it.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class Backbone:
    """What a builder returns: the parts `build_mixmo_network` wraps.

    Attributes:
        stem_factory: member index -> that member's new stem layer.
        core: shared layer, mixed stem features -> `(batch, features)`.
        head_initializer: kernel initializer of the dense heads.
        name: network name fragment, e.g. "wrn28_10" (the network is "mixmo_<name>_m<M>").
    """

    stem_factory: Callable[[int], Any]
    core: Any
    head_initializer: Any = "he_normal"
    name: str = "backbone"


# (depth, width, input_shape) -> Backbone
BackboneBuilder = Callable[[int, int, Sequence[int]], Backbone]


def _no_check(depth: int, width: int) -> None:
    del depth, width


def check_wrn(depth: int, width: int) -> None:
    """Raises ValueError unless depth is 6n+4 (n >= 1) and width >= 1."""
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(
            f"--depth must be 6n+4 with n >= 1 for --backbone=wrn, e.g. 28. Received: depth={depth}"
        )
    if width < 1:
        raise ValueError(f"--width must be >= 1, e.g. 10. Received: width={width}")


@dataclasses.dataclass(frozen=True)
class BackboneEntry:
    """A registered backbone.

    Attributes:
        builder: (depth, width, input_shape) -> Backbone, or "module:function" naming it.
        label: (depth, width) -> the name runs use (run folders, messages, benchmarks).
        check: (depth, width) -> None, raising ValueError naming the flag for a bad value.
        flags: the Config fields that shape the network, for messages.
    """

    builder: BackboneBuilder | str
    label: Callable[[int, int], str]
    check: Callable[[int, int], None] = _no_check
    flags: tuple[str, ...] = ("width",)


_REGISTRY: dict[str, BackboneEntry] = {
    "wrn": BackboneEntry(
        "mixmo_tf.models.wrn:wide_resnet_backbone",
        label=lambda depth, width: f"wrn{depth}-{width}",
        check=check_wrn,
        flags=("depth", "width"),
    ),
    "preact_resnet": BackboneEntry(
        "mixmo_tf.models.preact_resnet18:preact_resnet_backbone",
        label=lambda depth, width: f"preact_resnet18-{width}",
    ),
}


def register_backbone(
    name: str,
    builder: BackboneBuilder | str,
    label: Callable[[int, int], str] | None = None,
    check: Callable[[int, int], None] = _no_check,
    flags: Sequence[str] = ("width",),
) -> None:
    """Makes `--backbone=name` build `builder(depth, width, input_shape)`.

    Args:
        name: the `--backbone` value; lower case letters, digits and underscores.
        builder: returns a `Backbone`; or "module:function" naming it (imported on use).
        label: (depth, width) -> run name. Defaults to "<name>-<width>".
        check: validates (depth, width) for this backbone, raising ValueError.
        flags: the Config fields that shape the network. Defaults to ("width",).

    Raises:
        ValueError: `name` is taken or malformed.
    """
    if not name.replace("_", "").isalnum() or name != name.lower():
        raise ValueError(f"A backbone name is lower case letters, digits and _. Received: {name!r}")
    if name in _REGISTRY:
        raise ValueError(f"A backbone named {name!r} is already registered.")
    _REGISTRY[name] = BackboneEntry(
        builder, label or (lambda depth, width: f"{name}-{width}"), check, tuple(flags)
    )


def backbone_names() -> tuple[str, ...]:
    """The registered backbone names, built-in first."""
    return tuple(_REGISTRY)


def backbone_entry(name: str) -> BackboneEntry:
    """The entry of `name`; ValueError listing the registered names."""
    if name not in _REGISTRY:
        raise ValueError(
            f"--backbone must be one of {backbone_names()}. Received: backbone={name!r}"
        )
    return _REGISTRY[name]


def build_backbone(name: str, depth: int, width: int, input_shape: Sequence[int]) -> Backbone:
    """Builds the backbone registered as `name` (importing its module if named by string)."""
    builder = backbone_entry(name).builder
    if isinstance(builder, str):
        module, _, function = builder.partition(":")
        builder = getattr(importlib.import_module(module), function)
    return builder(depth, width, tuple(input_shape))
