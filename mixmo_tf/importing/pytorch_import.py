"""The MixMo authors' released checkpoints as mixmo-tf models and run folders.

`load_pytorch_checkpoint` turns a checkpoint saved by the authors' code (mixmo-pytorch, either
torch file format, read without PyTorch by `mixmo_tf.importing.authors_checkpoint`) into a
`MixMoModel`: their weights, BN statistics and SGD momentum buffers, at the step of the
epoch they saved. With a `model_dir` it also writes a complete run folder, so that
`main.py --mode=evaluate|export|predict --model_dir=RUN` and resuming training work on it as
on a run trained here.

The authors' tensors go in unchanged but for their layout (conv kernels OIHW -> HWIO, linear
weights transposed): the networks compute the same functions (their `mix_manifolds` returns
M * sum_i m_i * l_i, and M * mean = sum at inference, as `FeatureMixing`), the BN statistics
are updated as PyTorch's, and `PyTorchSGD`'s buffer is `torch.optim.SGD`'s
`momentum_buffer` (docs/method.md §12).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterable

import keras
import numpy as np

from mixmo_tf import __version__
from mixmo_tf.config.run_folder import (
    RunFolder,
    check_new_run_folder,
    new_folder_atomically,
    write_atomically,
    write_text_atomically,
)
from mixmo_tf.config.run_record import record_run_config, record_spec
from mixmo_tf.config.settings import Config
from mixmo_tf.importing.authors_checkpoint import (
    AuthorsCheckpoint,
    file_sha256,
    import_config,
    read_authors_checkpoint,
)
from mixmo_tf.models.build import build_model
from mixmo_tf.models.mixmo_model import MixMoModel
from mixmo_tf.models.network import MixMoNetwork
from mixmo_tf.training.checkpoints import checkpoint_manager
from mixmo_tf.tuning.device_rules import resolve_device_defaults

# The authors' block modules -> this project's layer-name suffixes.
_BLOCK_LAYERS = {
    "bn1": "pre_bn",
    "conv1": "conv1",
    "bn2": "mid_bn",
    "conv2": "conv2",
    "shortcut.0": "shortcut",
}
# A state-dict entry's last name -> the Keras variable holding it, in a BN layer and elsewhere.
_BN_VARIABLES = {
    "weight": "gamma",
    "bias": "beta",
    "running_mean": "moving_mean",
    "running_var": "moving_variance",
}
_VARIABLES = {"weight": "kernel", "bias": "bias"}


def _layer(network: MixMoNetwork, module: str, backbone: str) -> keras.layers.Layer:
    """This project's layer holding the authors' module `module` (e.g. "layer2.0.bn1")."""
    if match := re.fullmatch(r"list_conv1\.(\d+)|conv1", module):
        stem = network.stems[int(match.group(1) or 0)]
        # The PreActResNet's stem is a small model: padding, then the conv.
        return stem.get_layer(f"{stem.name}_conv") if isinstance(stem, keras.Model) else stem
    if match := re.fullmatch(r"list_fc\.(\d+)|fc", module):
        return network.heads[int(match.group(1) or 0)]
    if module == "bn1":
        return network.core.get_layer("final_bn")
    match = re.fullmatch(r"layer(\d+)\.(\d+)\.(.+)", module)
    group = "group" if backbone == "wrn" else "stage"
    name = f"{group}{int(match.group(1)) - 1}_block{match.group(2)}_{_BLOCK_LAYERS[match.group(3)]}"
    return network.core.get_layer(name)


def variable_of(network: MixMoNetwork, name: str, backbone: str) -> keras.Variable:
    """The Keras variable of the authors' state-dict entry `name`."""
    module, entry = name.rsplit(".", 1)
    layer = _layer(network, module, backbone)
    names = _BN_VARIABLES if isinstance(layer, keras.layers.BatchNormalization) else _VARIABLES
    return getattr(layer, names[entry])


def to_keras_layout(array: np.ndarray) -> np.ndarray:
    """A PyTorch tensor in Keras' layout: conv OIHW -> HWIO, linear (out, in) -> (in, out)."""
    if array.ndim == 4:
        return np.transpose(array, (2, 3, 1, 0))
    return array.T if array.ndim == 2 else array


def assign_authors_state(
    model: MixMoModel, checkpoint: AuthorsCheckpoint, steps_per_epoch: int
) -> int:
    """Puts the checkpoint's weights, BN statistics and momentum buffers into `model`.

    `model` must be built for the checkpoint's architecture (and compiled with
    `PyTorchSGD` if the file holds momentum buffers). Its optimizer step becomes the end of
    the saved epoch.

    Returns:
        That step.
    """
    backbone = checkpoint.architecture.backbone
    variables = {
        name: variable_of(model.network, name, backbone)
        for name in checkpoint.state
        if not name.endswith("num_batches_tracked")
    }
    for name, variable in variables.items():
        variable.assign(to_keras_layout(checkpoint.state[name]))
    step = checkpoint.epoch * steps_per_epoch
    if model.optimizer is not None:
        # Under mixed_float16 the LossScaleOptimizer's inner optimizer holds the state.
        optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
        for name, buffer in checkpoint.momentum.items():
            optimizer.momentum_buffer(variables[name]).assign(to_keras_layout(buffer))
        optimizer.iterations.assign(step)
    return step


def import_record(checkpoint: AuthorsCheckpoint, step: int, origin: dict | None = None) -> dict:
    """imported_from.json: which file, what it held, by which version of this project; with
    `origin` (the released row and the URL of a downloaded file) added."""
    return {
        **(origin or {}),
        "source": os.path.abspath(checkpoint.path),
        "sha256": file_sha256(checkpoint.path),
        "epoch": checkpoint.epoch,
        "step": step,
        "architecture": dataclasses.asdict(checkpoint.architecture),
        "optimizer": checkpoint.optimizer_settings,
        "momentum_buffers": bool(checkpoint.momentum),
        "mixmo_tf": __version__,
    }


def write_imported_run(model: MixMoModel, config: Config, record: dict) -> None:
    """Writes the run folder `config.model_dir` of an imported model, all or nothing.

    The folder is written under a temporary name beside it and renamed into place at the
    end (`new_folder_atomically`): an import that fails (full disk, interruption) leaves no
    half run behind, and the folder follows the umask like a run trained here.

    Args:
        model: the imported model (`import_checkpoint`).
        config: its run's settings.
        record: `import_record` of the file, written as imported_from.json.

    Raises:
        RunFolderError: the folder exists and is not empty.
        OSError: the folder cannot be written.
    """
    with new_folder_atomically(config.model_dir) as staging:
        folder = RunFolder(staging)
        record_run_config(config, folder=staging)
        record_spec(config.spec, staging)
        step = int(model.optimizer.iterations.numpy())
        checkpoint_manager(model, staging).save(checkpoint_number=step)
        write_atomically(folder.final_model, model.save, ".keras")
        write_text_atomically(folder.import_record, json.dumps(record, indent=2, sort_keys=True))


def import_checkpoint(checkpoint: AuthorsCheckpoint, config: Config) -> MixMoModel:
    """The `MixMoModel` of `config` holding `checkpoint`'s state, compiled with PyTorchSGD."""
    config = resolve_device_defaults(config)
    model = build_model(config)
    assign_authors_state(model, checkpoint, config.derived_steps_per_epoch)
    return model


def import_run(
    path: str, flagged: Config, given: Iterable[str], origin: dict | None = None
) -> tuple[MixMoModel, Config, dict]:
    """Imports the authors' file `path` into the new run folder `flagged.model_dir`.

    The file is read once, here, so that its arrays (which map the whole file) are released
    once the model holds their values, before saving model.keras needs as much memory again.

    Args:
        path: the authors' file.
        flagged: the settings given (a flagfile's recipe), checked against the file.
        given: names of the fields the user gave (`authors_checkpoint.import_config`).
        origin: where a downloaded file came from, recorded in imported_from.json
            (`mixmo_tf.importing.downloads`: "released_row", "url").

    Returns:
        The model, the run's Config and the `import_record` written with them.
    """
    check_new_run_folder(flagged.model_dir)
    checkpoint = read_authors_checkpoint(path)
    config = import_config(checkpoint.architecture, flagged, given)
    model = import_checkpoint(checkpoint, config)
    record = import_record(checkpoint, int(model.optimizer.iterations.numpy()), origin)
    del checkpoint
    write_imported_run(model, config, record)
    return model, config, record


def load_pytorch_checkpoint(path: str, model_dir: str | None = None, **settings) -> MixMoModel:
    """A `MixMoModel` from a checkpoint of the MixMo authors' code (mixmo-pytorch).

    Reads either torch file format without PyTorch (nothing in the file runs), infers the
    network (WRN-depth-width or PreActResNet-18-width, M, classes) from its tensors, and
    returns the model with their weights, BN statistics and SGD momentum, its optimizer at
    the end of the saved epoch, ready to evaluate, export or train further.

    Args:
        path: the `.pt` / `.ckpt` file the authors' `save_checkpoint` wrote.
        model_dir: if given, also write a run folder there (it must be new or empty), which
            `main.py --mode=evaluate|export|predict|train --model_dir=...` then reads.
        **settings: `Config` fields of the row's recipe, e.g. `mixing="linear"`,
            `msda="cutmix"`, `dataset="cifar100"` (the file records its network, not how it
            was trained); fields of the network must agree with the file.

    Returns:
        The compiled `MixMoModel`.

    Raises:
        mixmo_tf.importing.torch_format.TorchFileError: the file is not a readable PyTorch file,
            or its pickle names a global a state dict never holds (refused, never run).
        mixmo_tf.importing.authors_checkpoint.AuthorsCheckpointError: not the authors' network.
        ValueError: a setting contradicts the file.
        RunFolderError: `model_dir` is not empty.
    """
    flagged = Config(**{"model_dir": model_dir or "", **settings})
    if model_dir:
        return import_run(path, flagged, settings)[0]
    checkpoint = read_authors_checkpoint(path)
    return import_checkpoint(checkpoint, import_config(checkpoint.architecture, flagged, settings))
