"""Backbones by name: the one place that maps `--backbone` to a builder (imports no TensorFlow).

A backbone is what MixMo wraps: a stem factory (one stem per member) and a shared core (see
`mixmo_tf.models.build_mixmo_network`). Built-in backbones name their builder as
"module:function", imported only when a network is built, so that `Config` can validate
`--backbone` without TensorFlow. A new backbone needs one public call and no library edit:

    from mixmo_tf import backbones

    backbones.register_backbone("my_net", my_builder, label=lambda d, w: f"my_net-{w}")

after which `Config(backbone="my_net", ...)` and `main.py --backbone=my_net` (from a script
that made the call) build it.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Sequence
from typing import Any

from mixmo_tf.config.errors import ConfigError


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


# Largest widening factor of any backbone (the paper: 10 for the WRN, 3 for PreActResNet-18).
MAX_WIDTH = 64
# Deepest WRN: depth 202 still builds in seconds; from depth 298 on, Keras' traversal of the
# functional graph exceeds Python's recursion limit (a RecursionError traceback).
MAX_WRN_DEPTH = 202
# Most weights a network may have: each weight takes about 16 bytes in training (itself, its
# gradient, its momentum, a checkpoint's copy), so 10^9 weights fill 16 of a 24 GiB machine's
# GiB before any activation. WRN-28-10 has 36.5 million, PreActResNet-18-3 100 million.
MAX_WEIGHTS = 10**9


def _no_check(depth: int, width: int) -> None:
    del depth, width


def _check_weights(network: str, received: dict[str, int], weights: int) -> None:
    """Raises ConfigError naming the flags in `received` if a network of about `weights`
    weights cannot train in memory."""
    if weights > MAX_WEIGHTS:
        flags = " or ".join(f"--{name}" for name in received)
        values = ", ".join(f"{name}={value}" for name, value in received.items())
        raise ConfigError(
            f"{network} has about {weights / 1e9:.1f} billion weights; at most "
            f"{MAX_WEIGHTS / 1e9:.0f} billion train in 24 GiB of memory: lower {flags}. "
            f"Received: {values}"
        )


def check_wrn(depth: int, width: int) -> None:
    """Raises ConfigError unless depth is 6n+4 (n >= 1) up to MAX_WRN_DEPTH and the network
    fits MAX_WEIGHTS."""
    if not 10 <= depth <= MAX_WRN_DEPTH or (depth - 4) % 6:
        raise ConfigError(
            f"--depth must be 6n+4 in [10, {MAX_WRN_DEPTH}] for --backbone=wrn, e.g. 28. "
            f"Received: depth={depth}"
        )
    # Per group g (widths 16k, 32k, 64k): n blocks of two 3x3 convolutions of 16k * 2^g channels.
    blocks = (depth - 4) // 6
    _check_weights(
        f"WRN-{depth}-{width}",
        {"width": width, "depth": depth},
        blocks * 2 * 9 * (16 * width) ** 2 * (1 + 4 + 16),
    )


def check_preact_resnet(depth: int, width: int) -> None:
    """Raises ConfigError unless PreActResNet-18-`width` fits MAX_WEIGHTS (depth is always 18)."""
    del depth
    # PreActResNet-18-1 has 11.2 million weights; the convolutions grow with width squared.
    _check_weights(f"PreActResNet-18-{width}", {"width": width}, 11_200_000 * width**2)


@dataclasses.dataclass(frozen=True)
class BackboneEntry:
    """A registered backbone.

    Attributes:
        builder: (depth, width, input_shape) -> Backbone, or "module:function" naming it.
        label: (depth, width) -> the name runs use (run folders, messages, benchmarks).
        check: (depth, width) -> None, raising ConfigError naming the flag for a bad value.
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
        check=check_preact_resnet,
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
        check: validates (depth, width) for this backbone, raising ConfigError.
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
    """The entry of `name`; ConfigError listing the registered names."""
    if name not in _REGISTRY:
        raise ConfigError(
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
