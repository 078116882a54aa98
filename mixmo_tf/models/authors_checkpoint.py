"""The MixMo authors' released checkpoints (mixmo-pytorch), read and checked without TensorFlow.

The authors' `AbstractLearner.save_checkpoint` writes, with `torch.save`,
`{"epoch": E, "classifier_state_dict": network.state_dict(),
"classifier_optimizer_state_dict": optimizer.state_dict()}` after epoch E (counted from 1);
keys may start with "module." (DataParallel). This module reads such a file
(`mixmo_tf.models.torch_format`: no PyTorch, nothing in the file runs), infers the network
from the tensors' names and shapes, checks every tensor against the state dict that network
has in the authors' code (mixmo/networks/wrn.py, resnet.py), and pairs each parameter with
its SGD momentum buffer. `mixmo_tf.models.pytorch_import` turns the result into a
`MixMoModel` and a run folder. docs/method.md §12.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping

import numpy as np

from mixmo_tf.config.settings import Config
from mixmo_tf.models.torch_format import read_torch_file

STATE_KEY = "classifier_state_dict"
OPTIMIZER_KEY = "classifier_optimizer_state_dict"
# The dataset a number of classes stands for when no flag names one.
DATASET_OF_CLASSES = {10: "cifar10", 100: "cifar100", 200: "tiny_imagenet"}
# Fields that the file decides: a flag may repeat them, not contradict them.
ARCHITECTURE_FIELDS = ("backbone", "depth", "width", "num_members")
_BN_ENTRIES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
_DATA_PARALLEL_PREFIX = "module."


class AuthorsCheckpointError(ValueError):
    """The file is a PyTorch file, but not a checkpoint of the authors' networks."""


@dataclasses.dataclass(frozen=True)
class AuthorsArchitecture:
    """The network of an authors' checkpoint, as this project's Config fields name it.

    Attributes:
        backbone: "wrn" (WRN-depth-width, CIFAR) or "preact_resnet" (PreActResNet-18-width).
        depth: the WRN's depth (18 for the PreActResNet).
        width: widening factor.
        num_members: M (1: the single network, `conv1`/`fc` names).
        num_classes: classes per head.
    """

    backbone: str
    depth: int
    width: int
    num_members: int
    num_classes: int

    @property
    def label(self) -> str:
        network = (
            f"WRN-{self.depth}-{self.width}"
            if self.backbone == "wrn"
            else f"PreActResNet-18-{self.width}"
        )
        return f"{network}, M={self.num_members}, {self.num_classes} classes"


def _conv(name: str, out: int, inp: int, kernel: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(f"{name}.weight", (out, inp, kernel, kernel))]


def _bn(name: str, channels: int) -> list[tuple[str, tuple[int, ...]]]:
    return [
        (f"{name}.{entry}", () if entry == "num_batches_tracked" else (channels,))
        for entry in _BN_ENTRIES
    ]


def _wrn_block(name: str, inp: int, out: int, stride: int) -> list:
    # WideBasic registers bn1, conv1, bn2, conv2, then the 1x1 shortcut if it projects.
    entries = _bn(f"{name}.bn1", inp) + _conv(f"{name}.conv1", out, inp, 3)
    entries += _bn(f"{name}.bn2", out) + _conv(f"{name}.conv2", out, out, 3)
    if stride != 1 or inp != out:
        entries += _conv(f"{name}.shortcut.0", out, inp, 1)
    return entries


def _preact_block(name: str, inp: int, out: int, stride: int) -> list:
    # PreActBlock registers conv1, bn1, conv2, bn2, then the 1x1 shortcut if it projects.
    entries = _conv(f"{name}.conv1", out, inp, 3) + _bn(f"{name}.bn1", inp)
    entries += _conv(f"{name}.conv2", out, out, 3) + _bn(f"{name}.bn2", out)
    if stride != 1 or inp != out:
        entries += _conv(f"{name}.shortcut.0", out, inp, 1)
    return entries


def authors_state_shapes(architecture: AuthorsArchitecture) -> list[tuple[str, tuple[int, ...]]]:
    """The (name, shape) of every entry of the network's state dict in the authors' code,
    in its order (parameters and buffers; parameters alone are the optimizer's order)."""
    arch = architecture
    wrn = arch.backbone == "wrn"
    # The channel counts of docs/method.md §2 (models/wrn.py and preact_resnet18.py hold them
    # too, but import Keras, which reading a file before TensorFlow starts must not).
    stem = 16 if wrn else 64
    if wrn:
        blocks, strides = (arch.depth - 4) // 6, (1, 2, 2)
        channels = [16 * arch.width, 32 * arch.width, 64 * arch.width]
        block = _wrn_block
    else:
        blocks, strides = 2, (1, 2, 2, 2)
        channels = [c * arch.width for c in (64, 128, 256, 512)]
        block = _preact_block
    members = range(arch.num_members)
    single = arch.num_members == 1
    entries = (
        _conv("conv1", stem, 3, 3)
        if single
        else [entry for i in members for entry in _conv(f"list_conv1.{i}", stem, 3, 3)]
    )
    inp = stem
    for group, (out, stride) in enumerate(zip(channels, strides), start=1):
        for index in range(blocks):
            entries += block(f"layer{group}.{index}", inp, out, stride if index == 0 else 1)
            inp = out
    if wrn:
        entries += _bn("bn1", inp)
    heads = ["fc"] if single else [f"list_fc.{i}" for i in members]
    for head in heads:
        entries += [
            (f"{head}.weight", (arch.num_classes, inp)),
            (f"{head}.bias", (arch.num_classes,)),
        ]
    return entries


def is_parameter(name: str) -> bool:
    """Whether a state-dict entry is a parameter (trained, with a momentum buffer)."""
    return name.rsplit(".", 1)[-1] not in _BUFFERS


def _shape(state: Mapping[str, np.ndarray], name: str, path: str) -> tuple[int, ...]:
    if name not in state:
        raise AuthorsCheckpointError(
            f"{path} has no {name}: it is not a checkpoint of the MixMo authors' WRN or "
            "PreActResNet-18 (mixmo-pytorch), the only networks this import reads."
        )
    return tuple(np.shape(state[name]))


def infer_architecture(state: Mapping[str, np.ndarray], path: str) -> AuthorsArchitecture:
    """The network whose state dict `state` is (names without "module.").

    Raises:
        AuthorsCheckpointError: the names or shapes are not those of one of the authors'
            networks; the message names the first entry that differs.
    """
    stems = sorted(
        int(m.group(1)) for k in state if (m := re.fullmatch(r"list_conv1\.(\d+)\.weight", k))
    )
    num_members = len(stems) or 1
    stem_name = "list_conv1.0.weight" if stems else "conv1.weight"
    head_bias = "list_fc.0.bias" if stems else "fc.bias"
    backbone = "preact_resnet" if any(k.startswith("layer4.") for k in state) else "wrn"
    stem_channels = 16 if backbone == "wrn" else 64  # docs/method.md §2
    first_conv = "layer1.0.conv1.weight"
    out_channels = _shape(state, first_conv, path)[0]
    width, remainder = divmod(out_channels, stem_channels)
    blocks = len({k.split(".")[1] for k in state if k.startswith("layer1.")})
    _shape(state, stem_name, path)
    num_classes = _shape(state, head_bias, path)[0]
    architecture = AuthorsArchitecture(
        backbone=backbone,
        depth=6 * blocks + 4 if backbone == "wrn" else 18,
        width=width,
        num_members=num_members,
        num_classes=num_classes,
    )
    if remainder or width < 1 or num_classes < 2:
        raise AuthorsCheckpointError(
            f"{path}: {first_conv} has {out_channels} output channels and {head_bias} "
            f"{num_classes} classes, which no WRN or PreActResNet-18 of the authors has."
        )
    _check_against(state, authors_state_shapes(architecture), architecture, path)
    return architecture


def _check_against(state, expected, architecture: AuthorsArchitecture, path: str) -> None:
    """Raises AuthorsCheckpointError unless `state` holds exactly the `expected` entries."""
    expected_shapes = dict(expected)
    missing = [name for name in expected_shapes if name not in state]
    unexpected = [name for name in state if name not in expected_shapes]
    wrong = [
        f"{name} {tuple(np.shape(state[name]))} (expected {expected_shapes[name]})"
        for name in expected_shapes
        if name in state and tuple(np.shape(state[name])) != expected_shapes[name]
    ]
    problems = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("shaped", wrong)):
        if names:
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            problems.append(f"{label} {shown}")
    if problems:
        raise AuthorsCheckpointError(
            f"{path} is not a checkpoint of the authors' {architecture.label}, the network its "
            f"first tensors describe: {'; '.join(problems)}."
        )


@dataclasses.dataclass(frozen=True)
class AuthorsCheckpoint:
    """An authors' checkpoint, read and checked.

    Attributes:
        path: the file.
        epoch: the epoch it was saved after (counted from 1).
        architecture: its network.
        state: every state-dict entry (names without "module."), float32 where it is float.
        momentum: each parameter's SGD momentum buffer by name; empty if the file holds no
            optimizer state or the optimizer had not stepped.
        optimizer_settings: the optimizer's hyper-parameters as saved (lr, momentum,
            nesterov, weight_decay, dampening), for the record.
    """

    path: str
    epoch: int
    architecture: AuthorsArchitecture
    state: dict[str, np.ndarray]
    momentum: dict[str, np.ndarray]
    optimizer_settings: dict


def _strip_data_parallel(state: Mapping) -> dict[str, np.ndarray]:
    names = list(state)
    if names and all(name.startswith(_DATA_PARALLEL_PREFIX) for name in names):
        return {name[len(_DATA_PARALLEL_PREFIX) :]: state[name] for name in names}
    return dict(state)


def _momentum_buffers(optimizer: Mapping, parameters: list[str], path: str) -> dict:
    """Each parameter's momentum buffer, from a `torch.optim.SGD` state dict."""
    groups = optimizer.get("param_groups", [])
    keys = [key for group in groups for key in group.get("params", [])]
    if len(keys) != len(parameters):
        raise AuthorsCheckpointError(
            f"{path}: the optimizer state lists {len(keys)} parameters, the network has "
            f"{len(parameters)}: the file is not a checkpoint of the authors' training."
        )
    state = optimizer.get("state", {})
    buffers = {
        name: state[key]["momentum_buffer"]
        for name, key in zip(parameters, keys)
        if isinstance(state.get(key), Mapping) and state[key].get("momentum_buffer") is not None
    }
    if buffers and len(buffers) != len(parameters):
        raise AuthorsCheckpointError(
            f"{path}: {len(parameters) - len(buffers)} of the {len(parameters)} parameters have "
            "no momentum buffer; an SGD checkpoint has one for all or none."
        )
    return buffers


def read_authors_checkpoint(path: str) -> AuthorsCheckpoint:
    """Reads and checks a checkpoint that the authors' code saved (either torch format).

    Raises:
        mixmo_tf.models.torch_format.TorchFileError: not a readable PyTorch file, or its
            pickle names something a state dict never holds (refused, never run).
        AuthorsCheckpointError: a PyTorch file, but not of the authors' networks.
    """
    content = read_torch_file(path)
    if not isinstance(content, Mapping) or not isinstance(content.get(STATE_KEY), Mapping):
        found = (
            sorted(map(str, content)) if isinstance(content, Mapping) else type(content).__name__
        )
        raise AuthorsCheckpointError(
            f"{path} is a PyTorch file without {STATE_KEY!r} (it holds {found}): not a "
            "checkpoint saved by the authors' training (mixmo-pytorch)."
        )
    state = _strip_data_parallel(content[STATE_KEY])
    architecture = infer_architecture(state, path)
    expected = authors_state_shapes(architecture)
    state = {name: _as_float32(state[name]) for name, _ in expected}
    parameters = [name for name, _ in expected if is_parameter(name)]
    optimizer = content.get(OPTIMIZER_KEY) or {}
    momentum = _momentum_buffers(optimizer, parameters, path) if optimizer else {}
    for name, buffer in momentum.items():
        if np.shape(buffer) != np.shape(state[name]):
            raise AuthorsCheckpointError(
                f"{path}: the momentum buffer of {name} is shaped {np.shape(buffer)}, the "
                f"parameter {np.shape(state[name])}."
            )
    groups = optimizer.get("param_groups") or [{}]
    settings_names = ("lr", "momentum", "nesterov", "weight_decay", "dampening")
    return AuthorsCheckpoint(
        path=str(path),
        epoch=int(content.get("epoch", 0)),
        architecture=architecture,
        state=state,
        momentum={name: _as_float32(buffer) for name, buffer in momentum.items()},
        optimizer_settings={k: groups[0][k] for k in settings_names if k in groups[0]},
    )


def _as_float32(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    return array.astype(np.float32, copy=False) if array.dtype.kind == "f" else array


def import_config(
    architecture: AuthorsArchitecture, flagged: Config, given: Iterable[str]
) -> Config:
    """The Config of an imported run: the file's network, the flags' recipe.

    The network (backbone, depth, width, M) and the classes come from the file; a flag given
    for them must agree. The dataset is the flag's if given (its classes must match), else the
    one of the number of classes. Everything else (the mixing method, the schedule) is the
    flags' (a flagfile of the row): the file does not record how it was trained. A single
    network without --mixing gets the vanilla recipe (no mixing, b = 1).

    Raises:
        ValueError: a given flag contradicts the file, naming both values.
    """
    given = set(given)
    fields = {name: getattr(architecture, name) for name in ARCHITECTURE_FIELDS}
    if architecture.backbone != "wrn":
        fields["depth"] = flagged.depth  # PreActResNet-18: Config ignores the depth
    refused = [
        f"--{name}={getattr(flagged, name)!r} but the file holds {value!r}"
        for name, value in fields.items()
        if name in given and getattr(flagged, name) != value
    ]
    if "optimizer" in given and flagged.optimizer != "pytorch_sgd":
        refused.append(f"--optimizer={flagged.optimizer} but the file's momentum is PyTorch SGD's")
    if refused:
        raise ValueError(f"{'; '.join(refused)}. Drop those flags: the file decides them.")
    fields["optimizer"] = "pytorch_sgd"
    if "dataset" not in given:
        fields["dataset"] = DATASET_OF_CLASSES.get(architecture.num_classes, flagged.dataset)
    if architecture.num_members == 1:
        if "mixing" not in given:
            fields["mixing"] = "none"
        if "batch_repetitions" not in given:
            fields["batch_repetitions"] = 1
    config = dataclasses.replace(flagged, **fields)
    if config.spec.num_classes != architecture.num_classes:
        raise ValueError(
            f"--dataset={config.dataset} has {config.spec.num_classes} classes, the file's heads "
            f"{architecture.num_classes}. Give the dataset the network was trained on."
        )
    return config


def optimizer_note(settings: dict, momentum_buffers: bool) -> str:
    """One line on a file's optimizer (`AuthorsCheckpoint.optimizer_settings`), after an import."""
    if not settings:
        return "The file holds no optimizer state: a resumed run starts with zero momentum."
    shown = ", ".join(f"{k} {v}" for k, v in settings.items())
    return f"The file's SGD ({shown}) {'with' if momentum_buffers else 'without'} momentum buffers."
