"""`from_preset`: a MixMo model from a released row's name, a preset folder or a run folder.

A preset (`mixmo_tf.importing.presets`: config.json, model.weights.h5, metadata.json) loads on
any machine and any Keras 3 backend, without the run folder or the torch file it came from.
A run folder is read as its export would write it (`mixmo_tf.serving.run_presets`).
"""

from __future__ import annotations

import os

from mixmo_tf.config.errors import MissingFileError
from mixmo_tf.config.run_folder import RunFolder
from mixmo_tf.importing import released
from mixmo_tf.importing.downloads import UnknownCheckpointError
from mixmo_tf.importing.presets import (
    PRESET_FILES,
    DamagedPresetError,
    NotAPresetError,
    Preset,
    is_preset_folder,
    read_preset,
)
from mixmo_tf.importing.released_presets import cached_preset
from mixmo_tf.models.mixmo_model import MixMoModel


class UnknownPresetError(UnknownCheckpointError):
    """A name that is no folder, no released row and no URL (the closest rows named)."""


def _unknown(name: str) -> str:
    """The message of a name `from_preset` does not know, naming the closest rows."""
    closest = released.closest_names(name)
    hint = f"the closest: {', '.join(closest)}; " if closest else ""
    return (
        f"{name!r} is neither a folder nor a released row ({hint}`python main.py "
        "--checkpoint=list` lists them) nor an http(s):// URL."
    )


def _names_a_path(name: str) -> bool:
    """Whether `name` can only be a path (a row name has no folder separator; a URL has
    "://")."""
    return "://" not in name and (os.sep in name or name.startswith((".", "~")))


def load_preset(name_or_path: str) -> Preset:
    """The preset a name or path gives, with what its metadata says.

    Args:
        name_or_path: a preset folder; a run folder (its newest usable checkpoint); a row
            of the released-rows table (`--checkpoint=list` prints them), downloaded and
            built into a preset in the cache on first use; or an http(s) URL of an authors'
            file. A path that exists is taken as a path.

    Raises:
        NotAPresetError: a folder that is neither a preset (naming the files it lacks) nor a
            run folder.
        MissingFileError: a path that does not exist.
        UnknownPresetError: a name that is no folder, no released row and no URL (naming the
            closest rows).
        UserError: the preset's files are damaged or of a newer format; a download or an
            import that failed.
    """
    path = os.path.expanduser(name_or_path)
    if os.path.isdir(path):
        if os.path.isfile(RunFolder(path).run_config) and not is_preset_folder(path):
            # A run's checkpoints are TensorFlow's: their reader loads only for a run folder.
            from mixmo_tf.serving.run_presets import run_preset

            return run_preset(path)
        if not is_preset_folder(path):
            raise NotAPresetError(
                f"{path} is neither a preset (it holds none of {', '.join(PRESET_FILES)}) nor "
                "a run folder (no run_config.json): give the folder --mode=export "
                "--format=preset wrote, or a run's --model_dir."
            )
        return read_preset(path)
    if os.path.exists(path):
        raise NotAPresetError(
            f"{path} is a file; a preset is a folder ({', '.join(PRESET_FILES)}). A run's "
            "model.keras loads with mixmo_tf.load_model."
        )
    if _names_a_path(name_or_path):
        raise MissingFileError(f"{path} does not exist: give a preset folder or a run folder.")
    try:
        directory = cached_preset(name_or_path)
    except UnknownCheckpointError as error:
        raise UnknownPresetError(_unknown(name_or_path)) from error
    try:
        return read_preset(directory)
    except DamagedPresetError as error:
        raise DamagedPresetError(
            f"{error} It is the cached preset of {name_or_path}: delete {directory} and it is "
            "built again."
        ) from error


def from_preset(name_or_path: str) -> MixMoModel:
    """The MixMo model of a released row, a preset folder or a run folder, ready to predict.

    `model.predict(normalised_images)` gives `{"ensemble": (batch, classes), "members":
    (batch, members, classes)}` probabilities; the images are normalised as the dataset's
    spec says (`load_preset(...).spec`, `mixmo_tf.data.normalize`). The model is uncompiled:
    compile it with an optimizer (e.g. `mixmo_tf.PyTorchSGD`) to fine-tune it.

    Args:
        name_or_path: what `load_preset` takes: a preset folder, a run folder, a released
            row's name (e.g. "cifar100_wrn28-10_cut_mixmo_cutmix") or an authors' file URL.

    Raises:
        UserError: as `load_preset`, in one line.
    """
    return load_preset(name_or_path).model
