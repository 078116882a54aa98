"""Presets: a MixMo model as a folder that loads on any machine and any Keras 3 backend.

The layout is keras-hub's, so that the folder reads like theirs::

    config.json         the model's Keras config (`keras.saving.serialize_keras_object`),
                        enough to rebuild it without the run folder it came from
    model.weights.h5    Keras' weights file (`Model.save_weights`)
    metadata.json       what the model is: versions, the dataset it predicts (shape,
                        normalisation, class names), the temperature, where it came from
                        (the released row, its published numbers, the source file's
                        SHA-256, or the run and checkpoint)

Nothing in it is TensorFlow's own (no SavedModel, no tf.train checkpoint), so JAX and
PyTorch load it too. A preset is written whole into a new folder (`save_preset`: staged
beside it and renamed into place) and read back by `read_preset`, which checks every file
before it builds anything: a missing file, a damaged one and one of a newer format are
refused in one line each.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os

import keras
import numpy as np

from mixmo_tf import __version__
from mixmo_tf.config.datasets import DatasetSpec, spec_from_json
from mixmo_tf.config.errors import MissingFileError, UnusableFileError, UserError
from mixmo_tf.config.run_folder import new_folder_atomically
from mixmo_tf.data.class_names import class_names as dataset_class_names
from mixmo_tf.importing.authors_checkpoint import file_sha256
from mixmo_tf.models import saving  # noqa: F401  (registers every class a MixMo config names)
from mixmo_tf.models.mixmo_model import MixMoModel

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"
PRESET_FILES = (CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE)
# What metadata.json's "format" says; the version grows when a reader of the previous one
# would load a newer preset wrongly.
FORMAT = "mixmo_tf.preset"
FORMAT_VERSION = 1
# Keys of a Keras config that describe a model's last use, not the model (keras-hub drops
# them too): a preset loads uncompiled and is built for its dataset's image shape.
_USE_KEYS = ("build_config", "compile_config")


class NotAPresetError(MissingFileError):
    """A folder lacks a file of the preset layout."""


class DamagedPresetError(UnusableFileError):
    """A preset's file exists but cannot be read as what the layout says it holds."""


class NewerPresetError(UnusableFileError):
    """A preset of a format version this mixmo-tf does not read."""


class PresetFolderError(UserError):
    """The folder a preset should be written to is not new."""


@dataclasses.dataclass(frozen=True)
class Preset:
    """A loaded preset: the model and what its metadata says about it.

    Attributes:
        model: the `MixMoModel`, uncompiled, with the preset's weights: `model.predict` on
            normalised images `(batch, H, W, C)` gives `{"ensemble", "members"}`
            probabilities; compile it with an optimizer to fine-tune.
        spec: the dataset it predicts: image shape, normalisation (`mixmo_tf.data.normalize`).
        class_names: the label names in label order; empty if the dataset has none.
        metadata: metadata.json's content.
        path: the preset folder, or the run folder it was made from.
    """

    model: MixMoModel
    spec: DatasetSpec
    class_names: tuple[str, ...]
    metadata: dict
    path: str

    @property
    def temperature(self) -> float | None:
        """The temperature fitted for the model (divide the logits by it), or None."""
        return self.metadata.get("temperature")


def _known_class_names(spec: DatasetSpec) -> tuple[str, ...]:
    """The dataset's label names, or () if the package knows none (Tiny ImageNet's).

    Raises:
        UnusableFileError: a name does not fit one line (`mixmo_tf.data.class_names`).
    """
    try:
        return dataset_class_names(spec)
    except UserError:
        raise
    except ValueError:
        return ()


def preset_metadata(
    model: MixMoModel,
    spec: DatasetSpec,
    temperature: float | None = None,
    source: dict | None = None,
) -> dict:
    """metadata.json's content for `model`, but for the SHA-256 of its weights file
    (`save_preset` adds it).

    Args:
        model: the model the preset holds.
        spec: the dataset it was trained on (its class names are recorded when known).
        temperature: the fitted temperature, if any.
        source: where it came from: `row`, `published` (the row's published numbers: top-1
            accuracy in %), `source_sha256` and `source_url` for an authors' file;
            `model_dir`, `checkpoint`, `step` for a run. Missing keys are null.
    """
    source = source or {}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mixmo_tf_version": __version__,
        "keras_version": keras.version(),
        "saved_with_backend": keras.config.backend(),
        "date_saved": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "parameter_count": int(model.count_params()),
        "num_members": model.num_members,
        "num_classes": model.num_classes,
        "dataset": dataclasses.asdict(spec),
        "class_names": list(_known_class_names(spec)),
        "temperature": temperature,
        "row": source.get("row"),
        "published": source.get("published"),
        "source_sha256": source.get("source_sha256"),
        "source_url": source.get("source_url"),
        "source_run": {key: source.get(key) for key in ("model_dir", "checkpoint", "step")},
    }


def check_new_preset_folder(path: str) -> None:
    """Refuses a `path` that exists and is not an empty folder: a preset is written whole.

    Raises:
        PresetFolderError: naming the folder and the fix.
    """
    if os.path.exists(path) and not (os.path.isdir(path) and not os.listdir(path)):
        raise PresetFolderError(
            f"{path} exists and is not an empty folder, and a preset is written whole into a "
            "new one: choose another folder (--export_dir), or delete that one."
        )


def save_preset(model: MixMoModel, directory: str, metadata: dict) -> str:
    """Writes `model` as a preset into the new folder `directory`, all or nothing.

    Args:
        model: the model; written as it computes (save a float32 model to share it).
        directory: the preset folder: absent or empty.
        metadata: `preset_metadata` of the model.

    Returns:
        `directory`.

    Raises:
        PresetFolderError: `directory` exists and is not empty.
        OSError: it cannot be written.
    """
    check_new_preset_folder(directory)
    config = keras.saving.serialize_keras_object(model)
    for key in _USE_KEYS:
        config.pop(key, None)
    with new_folder_atomically(directory) as staging:
        weights = os.path.join(staging, WEIGHTS_FILE)
        model.save_weights(weights)
        metadata = {**metadata, "weights_sha256": file_sha256(weights)}
        for name, content in ((CONFIG_FILE, config), (METADATA_FILE, metadata)):
            with open(os.path.join(staging, name), "w", encoding="utf-8") as stream:
                json.dump(content, stream, indent=2, sort_keys=name == METADATA_FILE)
    return directory


def is_preset_folder(path: str) -> bool:
    """Whether `path` is a folder holding any file of the preset layout (a damaged preset is
    still one, to be refused as such)."""
    return os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, name)) for name in PRESET_FILES
    )


def _read_json(path: str) -> dict:
    """A preset's JSON file as a dict (DamagedPresetError if it is not a JSON object)."""
    try:
        with open(path, encoding="utf-8") as stream:
            content = json.load(stream)
    except (ValueError, RecursionError) as error:  # not UTF-8 JSON, or nested too deep
        raise DamagedPresetError(
            f"{path} is not the JSON a preset holds ({error}): copy the preset again."
        ) from error
    if not isinstance(content, dict):
        raise DamagedPresetError(
            f"{path} is not the JSON a preset holds (a {type(content).__name__}, not an "
            "object): copy the preset again."
        )
    return content


def read_metadata(path: str) -> dict:
    """The metadata.json of the preset folder `path`, checked for its format version.

    Raises:
        NotAPresetError: a file of the layout is missing (named).
        DamagedPresetError: metadata.json is not a preset's.
        NewerPresetError: a newer mixmo-tf wrote it, in a format this one does not read.
    """
    missing = [name for name in PRESET_FILES if not os.path.isfile(os.path.join(path, name))]
    if missing:
        raise NotAPresetError(
            f"{path} is not a preset: it lacks {', '.join(missing)} (a preset holds "
            f"{', '.join(PRESET_FILES)}; --mode=export --format=preset writes one)."
        )
    metadata_path = os.path.join(path, METADATA_FILE)
    metadata = _read_json(metadata_path)
    version = metadata.get("format_version")
    if metadata.get("format") != FORMAT or not isinstance(version, int):
        raise DamagedPresetError(
            f"{metadata_path} does not name the preset format ({FORMAT!r} and an integer "
            "format_version): copy the preset again."
        )
    if version > FORMAT_VERSION:
        raise NewerPresetError(
            f"{path} is a preset of format version {version}, written by mixmo-tf "
            f"{metadata.get('mixmo_tf_version')}; this mixmo-tf ({__version__}) reads up to "
            f"version {FORMAT_VERSION}: upgrade mixmo-tf."
        )
    return metadata


def _metadata_facts(path: str, metadata: dict) -> tuple[DatasetSpec, tuple[str, ...]]:
    """The dataset spec and class names metadata.json records (DamagedPresetError if not)."""
    try:
        spec = spec_from_json(metadata["dataset"])
        names = tuple(str(name) for name in metadata.get("class_names") or ())
    except (KeyError, TypeError, AttributeError) as error:
        raise DamagedPresetError(
            f"{os.path.join(path, METADATA_FILE)} holds no dataset spec a preset records "
            f"({type(error).__name__}: {error}): copy the preset again."
        ) from error
    if names and len(names) != spec.num_classes:
        raise DamagedPresetError(
            f"{os.path.join(path, METADATA_FILE)} names {len(names)} classes for a dataset of "
            f"{spec.num_classes}: copy the preset again."
        )
    return spec, names


def _rebuilt_model(path: str, spec: DatasetSpec) -> MixMoModel:
    """The model config.json describes, built for the spec's images (weights not loaded)."""
    config_path = os.path.join(path, CONFIG_FILE)
    config = _read_json(config_path)
    try:
        model = keras.saving.deserialize_keras_object(config)
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        raise DamagedPresetError(
            f"{config_path} does not rebuild a model ({type(error).__name__}: {error}): copy "
            "the preset again, or load it with the mixmo-tf version that wrote it."
        ) from error
    if not isinstance(model, MixMoModel):
        raise DamagedPresetError(
            f"{config_path} describes a {type(model).__name__}, not a MixMoModel: it is not a "
            "mixmo-tf preset."
        )
    if model.num_classes != spec.num_classes:
        raise DamagedPresetError(
            f"{config_path} has {model.num_classes} classes, metadata.json's dataset "
            f"{spec.num_classes}: copy the preset again."
        )
    model(np.zeros((1, *spec.image_shape), np.float32))  # creates the variables
    return model


def _load_weights(model: MixMoModel, path: str, metadata: dict) -> None:
    """Loads model.weights.h5 into `model` after checking its bytes against the metadata."""
    weights = os.path.join(path, WEIGHTS_FILE)
    recorded = metadata.get("weights_sha256")
    if recorded is not None and file_sha256(weights) != recorded:
        raise DamagedPresetError(
            f"{weights} is not the file the preset was saved with (its SHA-256 differs from "
            "metadata.json's weights_sha256: truncated or changed): copy the preset again."
        )
    try:
        model.load_weights(weights)
    except (OSError, ValueError, KeyError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise DamagedPresetError(
            f"{weights} does not load into the model of config.json ({type(error).__name__}: "
            f"{first_line}): copy the preset again."
        ) from error


def read_preset(path: str) -> Preset:
    """The preset in the folder `path`, its model ready to predict on this backend.

    Raises:
        NotAPresetError: a file of the layout is missing (named).
        DamagedPresetError: a file does not hold what the layout says.
        NewerPresetError: the preset's format is newer than this mixmo-tf reads.
    """
    metadata = read_metadata(path)
    spec, names = _metadata_facts(path, metadata)
    model = _rebuilt_model(path, spec)
    _load_weights(model, path, metadata)
    return Preset(model, spec, names, metadata, path)
