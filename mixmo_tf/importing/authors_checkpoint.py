"""The MixMo authors' released checkpoints (mixmo-pytorch), read and checked without TensorFlow.

The authors' `AbstractLearner.save_checkpoint` writes, with `torch.save`,
`{"epoch": E, "classifier_state_dict": network.state_dict(),
"classifier_optimizer_state_dict": optimizer.state_dict()}` after epoch E (counted from 1);
keys may start with "module." (DataParallel). This module reads such a file
(`mixmo_tf.importing.torch_format`: no PyTorch, nothing in the file runs), infers the network
from the tensors' names and shapes, checks every tensor against the state dict that network
has in the authors' code (mixmo/networks/wrn.py, resnet.py), and pairs each parameter with
its SGD momentum buffer. `mixmo_tf.importing.pytorch_import` turns the result into a
`MixMoModel` and a run folder. docs/method.md §12.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import reprlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from mixmo_tf.config.backbones import backbone_entry
from mixmo_tf.config.dataset_names import source_kind
from mixmo_tf.config.errors import ConfigError, UserError
from mixmo_tf.config.settings import MAX_EPOCHS, MAX_MEMBERS, Config
from mixmo_tf.data.sources import resolved_spec
from mixmo_tf.importing.released import network_label
from mixmo_tf.importing.torch_format import read_torch_file

STATE_KEY = "classifier_state_dict"
OPTIMIZER_KEY = "classifier_optimizer_state_dict"
# The dataset a number of classes stands for when no flag names one.
DATASET_OF_CLASSES = {10: "cifar10", 100: "cifar100", 200: "tiny_imagenet"}
# Fields that the file decides: a flag may repeat them, not contradict them.
ARCHITECTURE_FIELDS = ("backbone", "depth", "width", "num_members")
_BN_ENTRIES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
_DATA_PARALLEL_PREFIX = "module."
# The hyper-parameters recorded from the optimizer state, in the order the note prints them:
# nesterov a bool, the others numbers >= 0.
_SGD_SETTINGS = ("lr", "momentum", "nesterov", "weight_decay", "dampening")
_SHOWN_PROBLEMS = 3  # offending tensors named in one message


class AuthorsCheckpointError(UserError, ValueError):
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
        return network_label(**dataclasses.asdict(self))


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


def _leading_size(state: Mapping[str, np.ndarray], name: str, path: str) -> int:
    """The first dimension of entry `name` (output channels, classes)."""
    shape = _shape(state, name, path)
    if not shape:
        raise AuthorsCheckpointError(
            f"{path}: {name} is a scalar, where the authors' WRN and PreActResNet-18 "
            "(mixmo-pytorch) have a tensor: not a checkpoint of their networks."
        )
    return shape[0]


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
    out_channels = _leading_size(state, first_conv, path)
    width, remainder = divmod(out_channels, stem_channels)
    blocks = len({k.split(".")[1] for k in state if k.startswith("layer1.")})
    _shape(state, stem_name, path)
    num_classes = _leading_size(state, head_bias, path)
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
    _check_buildable(architecture, path)
    _check_against(state, authors_state_shapes(architecture), architecture, path)
    return architecture


def _check_buildable(architecture: AuthorsArchitecture, path: str) -> None:
    """Refuses a network outside the bounds the flags have, before its entries are listed."""
    try:
        backbone_entry(architecture.backbone).check(architecture.depth, architecture.width)
        if architecture.num_members > MAX_MEMBERS:
            raise ValueError(f"--num_members must be at most {MAX_MEMBERS}")
    except ValueError as error:
        raise AuthorsCheckpointError(
            f"{path} describes a {architecture.label}, which this project does not build "
            f"({error}): not a checkpoint of the authors' networks."
        ) from None


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


def _shown(value: Any) -> str:
    """A short description of a value read from a file, for a message."""
    if type(value) is int and value.bit_length() > 64:  # repr of a huge int is slow or refused
        return f"an integer of {value.bit_length()} bits"
    return f"{reprlib.repr(value)} ({type(value).__name__})"


def _checkpoint_dict(content: Any, path: str) -> Mapping:
    """`content` if it is a dict of names holding a state dict of names."""
    if isinstance(content, Mapping) and not all(isinstance(key, str) for key in content):
        key = next(key for key in content if not isinstance(key, str))
        raise AuthorsCheckpointError(
            f"{path}: its top-level dict has the key {_shown(key)}, not a name: not a "
            "checkpoint saved by the authors' training (mixmo-pytorch)."
        )
    if not isinstance(content, Mapping) or not isinstance(content.get(STATE_KEY), Mapping):
        found = sorted(content)[:10] if isinstance(content, Mapping) else type(content).__name__
        raise AuthorsCheckpointError(
            f"{path} is a PyTorch file without {STATE_KEY!r} (it holds {found}): not a "
            "checkpoint saved by the authors' training (mixmo-pytorch)."
        )
    for key in content[STATE_KEY]:
        if not isinstance(key, str):
            raise AuthorsCheckpointError(
                f"{path}: {STATE_KEY} has the key {_shown(key)}, where a state dict names its "
                "tensors: not a checkpoint saved by the authors' training (mixmo-pytorch)."
            )
    return content


def _epoch(content: Mapping, path: str) -> int:
    """The epoch the file was saved after (0 if it records none)."""
    epoch = content.get("epoch", 0)
    # At most the epochs a run may have (the authors train 300 to 1200).
    if type(epoch) is not int or not 0 <= epoch <= MAX_EPOCHS:
        raise AuthorsCheckpointError(
            f"{path}: its epoch is {_shown(epoch)}; the authors' checkpoint records the epoch it "
            f"was saved after, an integer in [0, {MAX_EPOCHS}]."
        )
    return epoch


def _check_dtypes(tensors: Mapping[str, Any], path: str, what: str = "") -> None:
    """Each tensor is an array of floats (of integers for num_batches_tracked)."""
    for name, tensor in tensors.items():
        counter = name.endswith("num_batches_tracked")
        expected = "an integer count" if counter else "floating point values"
        if not isinstance(tensor, np.ndarray) or tensor.dtype.kind not in (
            "iu" if counter else "f"
        ):
            held = tensor.dtype if isinstance(tensor, np.ndarray) else type(tensor).__name__
            raise AuthorsCheckpointError(
                f"{path}: {what}{name} holds {held}, where the authors' network has {expected}: "
                "not a checkpoint saved by the authors' training (mixmo-pytorch)."
            )


def _optimizer_problem(path: str, problem: str) -> AuthorsCheckpointError:
    return AuthorsCheckpointError(
        f"{path}: {OPTIMIZER_KEY} {problem}, which torch.optim.SGD's state dict never has: not "
        "a checkpoint saved by the authors' training (mixmo-pytorch)."
    )


def _optimizer_state(content: Mapping, path: str) -> Mapping:
    """The file's SGD state dict, its structure checked ({} if the file holds none)."""
    optimizer = content.get(OPTIMIZER_KEY)
    if optimizer is None:
        return {}
    if not isinstance(optimizer, Mapping):
        raise _optimizer_problem(path, f"is {_shown(optimizer)}, not a dict")
    groups = optimizer.get("param_groups", [])
    if not isinstance(groups, (list, tuple)) or not all(isinstance(g, Mapping) for g in groups):
        raise _optimizer_problem(path, f"has param_groups {_shown(groups)}, not a list of dicts")
    keys = []
    for group in groups:
        params = group.get("params", [])
        if not isinstance(params, (list, tuple)) or any(type(key) is not int for key in params):
            raise _optimizer_problem(path, f"lists params {_shown(params)}, not integer ids")
        keys += params
    if len(set(keys)) != len(keys):
        raise _optimizer_problem(path, "lists a parameter twice")
    state = optimizer.get("state", {})
    if not isinstance(state, Mapping):
        raise _optimizer_problem(path, f"has state {_shown(state)}, not a dict")
    for key in state:
        if type(key) is not int:
            raise _optimizer_problem(path, f"has state for {_shown(key)}, not a parameter id")
    for key, entry in state.items():
        if not isinstance(entry, Mapping):
            raise _optimizer_problem(path, f"has state {_shown(entry)} for parameter {key}")
    for group in groups:
        _check_sgd_settings(group, path)
    return optimizer


def _check_sgd_settings(group: Mapping, path: str) -> None:
    """The recorded hyper-parameters: nesterov a bool, the others finite numbers >= 0."""
    for name in (name for name in _SGD_SETTINGS if name in group):
        value = group[name]
        if name == "nesterov":
            valid, expected = type(value) is bool, "a bool"
        else:
            # An int within int64 (a larger one would not even print in imported_from.json).
            finite = type(value) is int and value.bit_length() < 64
            finite = finite or (type(value) is float and math.isfinite(value))
            valid, expected = finite and value >= 0, "a number >= 0"
        if not valid:
            raise _optimizer_problem(path, f"has {name} {_shown(value)}, not {expected}")


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
        if state.get(key, {}).get("momentum_buffer") is not None
    }
    if buffers and len(buffers) != len(parameters):
        raise AuthorsCheckpointError(
            f"{path}: {len(parameters) - len(buffers)} of the {len(parameters)} parameters have "
            "no momentum buffer; an SGD checkpoint has one for all or none."
        )
    _check_dtypes(buffers, path, what="the momentum buffer of ")
    return buffers


def _value_problems(name: str, tensor: np.ndarray, what: str = "") -> list[str]:
    """What in a float32 tensor no trained network holds: non-finite values, negative BN
    variances, a negative batch count."""
    problems = []
    if tensor.dtype.kind == "f" and not np.isfinite(tensor).all():
        count = np.count_nonzero(~np.isfinite(tensor))
        problems.append(f"{what}{name} has {count} NaN or infinite values (in float32)")
    if name.endswith(("running_var", "num_batches_tracked")) and (tensor < 0).any():
        problems.append(f"{what}{name} has {np.count_nonzero(tensor < 0)} negative values")
    return problems


def _check_values(state: Mapping, momentum: Mapping, path: str) -> None:
    """Refuses tensors that cannot be a trained network's, naming the first few."""
    problems = [p for name, tensor in state.items() for p in _value_problems(name, tensor)]
    problems += [
        problem
        for name, buffer in momentum.items()
        for problem in _value_problems(name, buffer, "the momentum buffer of ")
    ]
    if problems:
        shown = "; ".join(problems[:_SHOWN_PROBLEMS])
        more = len(problems) - _SHOWN_PROBLEMS
        raise AuthorsCheckpointError(
            f"{path}: {shown}{f'; and {more} more' if more > 0 else ''}. A trained network has "
            "none: download the file again, or take a checkpoint saved before training diverged."
        )


def read_authors_checkpoint(path: str) -> AuthorsCheckpoint:
    """Reads and checks a checkpoint that the authors' code saved (either torch format).

    Raises:
        mixmo_tf.importing.torch_format.TorchFileError: not a readable PyTorch file, or its
            pickle names something a state dict never holds (refused, never run).
        AuthorsCheckpointError: a PyTorch file, but not of the authors' networks, or holding
            values no trained network has (NaN or infinite in float32, negative variances).
    """
    content = _checkpoint_dict(read_torch_file(path), path)
    state = _strip_data_parallel(content[STATE_KEY])
    _check_dtypes(state, path)
    architecture = infer_architecture(state, path)
    expected = authors_state_shapes(architecture)
    state = {name: state[name] for name, _ in expected}
    epoch = _epoch(content, path)
    optimizer = _optimizer_state(content, path)
    parameters = [name for name, _ in expected if is_parameter(name)]
    momentum = _momentum_buffers(optimizer, parameters, path) if optimizer else {}
    for name, buffer in momentum.items():
        if np.shape(buffer) != np.shape(state[name]):
            raise AuthorsCheckpointError(
                f"{path}: the momentum buffer of {name} is shaped {np.shape(buffer)}, the "
                f"parameter {np.shape(state[name])}."
            )
    state = {name: _as_float32(tensor) for name, tensor in state.items()}
    momentum = {name: _as_float32(buffer) for name, buffer in momentum.items()}
    _check_values(state, momentum, path)
    groups = optimizer.get("param_groups") or [{}]
    return AuthorsCheckpoint(
        path=str(path),
        epoch=epoch,
        architecture=architecture,
        state=state,
        momentum=momentum,
        optimizer_settings={k: groups[0][k] for k in _SGD_SETTINGS if k in groups[0]},
    )


def file_sha256(path: str) -> str:
    """The SHA-256 (hex) of the file `path`, as imported_from.json records it."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _as_float32(array: np.ndarray) -> np.ndarray:
    """Floats as float32 (a float64 beyond its range becomes infinite: `_check_values`)."""
    with np.errstate(over="ignore"):
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

    A tfds or folder source's spec is read from its data (which must be ready), so the run
    records it.

    Raises:
        ValueError: a given flag contradicts the file, naming both values.
        FileNotFoundError: the data of a tfds or folder source is missing or unusable.
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
        raise ConfigError(f"{'; '.join(refused)}. Drop those flags: the file decides them.")
    fields["optimizer"] = "pytorch_sgd"
    if "dataset" not in given:
        fields["dataset"] = DATASET_OF_CLASSES.get(architecture.num_classes, flagged.dataset)
    if architecture.num_members == 1:
        if "mixing" not in given:
            fields["mixing"] = "none"
        if "batch_repetitions" not in given:
            fields["batch_repetitions"] = 1
    config = dataclasses.replace(flagged, **fields)
    if config.dataset_spec is None and source_kind(config.dataset) != "named":
        # The classes of a tfds or folder source are its data's; the run records its spec.
        spec = resolved_spec(config.dataset, config.image_size, config.data_dir)
        config = dataclasses.replace(config, dataset_spec=spec)
    if config.spec.num_classes != architecture.num_classes:
        raise ConfigError(
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
