"""The `--dataset` value as a data source, and its spec (imports no TensorFlow).

Three kinds of source:

- a named dataset of `mixmo_tf.data.specs.DATASETS` (cifar10, cifar100, digits,
  tiny_imagenet), whose spec is fixed;
- `tfds:NAME`, any tfds image-classification dataset: classes, class names and split sizes
  from its tfds info (it must be prepared, or downloaded with --download), images resized to
  --image_size;
- `folder:PATH`, an image folder with train/<class>/* and test/<class>/*
  (`mixmo_tf.data.folder`), images resized to --image_size.

The spec of a tfds or folder source depends on the data, so a run records the spec it trained
with in `<model_dir>/dataset_spec.json`; evaluation, export and prediction read it from there
(the data need not be on the serving machine), and a resume whose data changed is refused.

Choices for the new sources (the paper has none; this project's, not the authors'):
mean = std = 0.5 per channel (inputs in [-1, 1]), as the authors use for Tiny ImageNet; it
assumes nothing about the images' statistics, and the first BatchNorm adapts
anyway. Horizontal flips on. Crop padding = image size / 8, CIFAR's 4 pixels at 32x32.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

from mixmo_tf.config.errors import ConfigError, UserError
from mixmo_tf.config.run_folder import RunFolder, write_text_atomically
from mixmo_tf.data.folder import index_folder
from mixmo_tf.data.specs import DATASETS, DatasetSpec

TFDS_PREFIX = "tfds:"
# What tfds accepts as a dataset name: [namespace:]name[/config][:version]
# (tensorflow_datasets.core.naming; keyword arguments are not taken here).
_TFDS_NAME = re.compile(r"([\w-]+:)?[A-Za-z]\w*(/[\w+.-]+)?(:(\d+|\*)(\.(\d+|\*)){2})?")
FOLDER_PREFIX = "folder:"
# --image_size=0 gives tfds and folder sources this size (Tiny ImageNet's).
DEFAULT_IMAGE_SIZE = 64
# Inputs in [-1, 1]; see the module docstring.
SOURCE_MEAN = SOURCE_STD = (0.5, 0.5, 0.5)
# The random crop's zero padding per side: CIFAR's 4 pixels at 32x32, scaled with the size.
PADDING_FRACTION = 8


class DataSourceError(UserError, ValueError):
    """The data of a tfds or folder source does not fit the run (changed, or too small)."""


def source_kind(dataset: str) -> str:
    """ "named", "tfds" or "folder"."""
    if dataset.startswith(TFDS_PREFIX):
        return "tfds"
    if dataset.startswith(FOLDER_PREFIX):
        return "folder"
    return "named"


def tfds_prepares(dataset: str) -> bool:
    """Whether tfds prepares (and, per --download, may download) `dataset`'s data: tfds:NAME
    and the named datasets but digits (scikit-learn's, bundled); a folder is read as it is."""
    return source_kind(dataset) == "tfds" or dataset in DATASETS and dataset != "digits"


def source_argument(dataset: str) -> str:
    """The tfds name of `tfds:NAME`, the absolute folder of `folder:PATH`."""
    kind = source_kind(dataset)
    if kind == "folder":
        return os.path.abspath(os.path.expanduser(dataset[len(FOLDER_PREFIX) :]))
    return dataset[len(TFDS_PREFIX) :] if kind == "tfds" else dataset


def normalized_dataset(dataset: str) -> str:
    """`dataset` with the folder of `folder:PATH` absolute (and `~` expanded)."""
    if source_kind(dataset) != "folder" or not dataset[len(FOLDER_PREFIX) :]:
        return dataset
    return FOLDER_PREFIX + source_argument(dataset)


def check_dataset(dataset: str, image_size: int) -> None:
    """Raises ConfigError naming the flag unless `dataset` and `image_size` can make a source."""
    kind = source_kind(dataset)
    if kind == "named" and dataset not in DATASETS:
        raise ConfigError(
            f"--dataset must be one of {sorted(DATASETS)}, tfds:NAME (a tfds image "
            f"classification dataset) or folder:PATH (an image folder). Received: "
            f"dataset={dataset!r}"
        )
    if kind != "named" and not source_argument(dataset).strip("/"):
        raise ConfigError(
            f"--dataset={dataset} names no dataset: write e.g. tfds:oxford_flowers102 or "
            "folder:/data/pets."
        )
    if kind == "tfds" and not _TFDS_NAME.fullmatch(source_argument(dataset)):
        raise ConfigError(
            f"--dataset={dataset}: a tfds name is letters, digits and underscores, with an "
            "optional /config and :version (e.g. tfds:oxford_flowers102, "
            "tfds:cifar10_corrupted/fog_5:3.0.0); tfds writes oxford-flowers102 as "
            "oxford_flowers102."
        )
    if image_size and image_size < 8:
        raise ConfigError(
            f"--image_size must be >= 8 (0: {DEFAULT_IMAGE_SIZE}). Received: "
            f"image_size={image_size}"
        )
    if kind == "named" and image_size:
        raise ConfigError(
            f"--image_size applies to tfds:NAME and folder:PATH sources; {dataset} has its own "
            f"size {DATASETS[dataset].image_shape[:2]}. Drop the flag. Received: "
            f"image_size={image_size}"
        )


def dataset_label(dataset: str) -> str:
    """The dataset's part of a run folder name: oxford_flowers102 for tfds:oxford_flowers102,
    the folder's name for folder:PATH."""
    kind = source_kind(dataset)
    if kind == "folder":
        return os.path.basename(source_argument(dataset).rstrip("/"))
    return source_argument(dataset).replace("/", "-")


def source_spec(
    dataset: str,
    image_size: int,
    num_classes: int,
    num_train: int,
    num_test: int,
    class_names: tuple[str, ...],
    homepage: str = "",
) -> DatasetSpec:
    """The spec of a tfds or folder source with the module's normalisation and augmentation."""
    size = image_size or DEFAULT_IMAGE_SIZE
    return DatasetSpec(
        dataset,
        num_classes,
        num_train,
        num_test,
        (size, size, 3),
        SOURCE_MEAN,
        SOURCE_STD,
        pad=max(1, size // PADDING_FRACTION),
        homepage=homepage,
        class_names=class_names,
    )


def folder_spec(dataset: str, image_size: int) -> DatasetSpec:
    """The spec of a `folder:PATH` source, from its files (indexed once per process).

    Raises:
        ImageFolderError: the folder does not have the layout or the files it needs.
    """
    folder = index_folder(source_argument(dataset))
    splits = folder.splits
    return source_spec(
        dataset,
        image_size,
        len(folder.class_names),
        len(splits["train"].paths),
        len(splits["test"].paths),
        folder.class_names,
    )


# Specs read from the data in this process (`mixmo_tf.data.resolved_spec` fills it): a
# tfds source's spec needs tensorflow_datasets, which this module does not import.
_READ_SPECS: dict[tuple[str, int, str | None], DatasetSpec] = {}


def remember_spec(spec: DatasetSpec, image_size: int, data_dir: str | None) -> None:
    """Keeps the spec read from the data of `spec.name` for `run_spec`."""
    _READ_SPECS[spec.name, image_size, data_dir] = spec


def _spec_from_json(fields: dict) -> DatasetSpec:
    return DatasetSpec(
        **{key: tuple(value) if isinstance(value, list) else value for key, value in fields.items()}
    )


def recorded_spec(model_dir: str) -> DatasetSpec | None:
    """The spec recorded in `<model_dir>/dataset_spec.json` by training, or None.

    Raises:
        DataSourceError: the file is not the JSON of a spec (damaged, or edited).
    """
    path = RunFolder(model_dir).dataset_spec
    if not model_dir or not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as stream:
            return _spec_from_json(json.load(stream))
    except (ValueError, TypeError, AttributeError, RecursionError) as error:
        # Not UTF-8 JSON (ValueError), not an object (AttributeError), other fields
        # (TypeError), nested too deep for the parser (RecursionError).
        raise DataSourceError(
            f"{path} is not the dataset spec training wrote ({error}): restore it from a copy, "
            "or train in a new --model_dir."
        ) from error


def run_spec(dataset: str, image_size: int, data_dir: str | None, model_dir: str) -> DatasetSpec:
    """The spec of a run: fixed for named datasets; else the run's recorded one if it has one,
    else the one read from the data in this process, else (a folder) read now.

    Raises:
        FileNotFoundError: a tfds source whose spec was not read yet (by
            `mixmo_tf.data.resolved_spec`, as training does), or a bad image folder.
    """
    if source_kind(dataset) == "named":
        return DATASETS[dataset]
    known = recorded_spec(model_dir) or _READ_SPECS.get((dataset, image_size, data_dir))
    if known is not None:
        return known
    if source_kind(dataset) == "folder":
        return folder_spec(dataset, image_size)
    raise FileNotFoundError(
        f"The spec of {dataset} comes from its tfds info, not read yet in this process and "
        f"not recorded in {RunFolder(model_dir).dataset_spec}: call "
        "mixmo_tf.data.resolved_spec(dataset, image_size, data_dir) first (training does)."
    )


def record_spec(spec: DatasetSpec, model_dir: str) -> None:
    """Writes the spec of a tfds or folder source to `<model_dir>/dataset_spec.json`."""
    if source_kind(spec.name) == "named":
        return
    text = json.dumps(dataclasses.asdict(spec), indent=2)
    write_text_atomically(RunFolder(model_dir).dataset_spec, text)


def check_unchanged(spec: DatasetSpec, model_dir: str) -> None:
    """Raises DataSourceError if the run in `model_dir` recorded another spec than the data's now.

    A folder with other files, or a tfds dataset of another version, would change the
    stream of a resumed run, and its labels.
    """
    recorded = recorded_spec(model_dir)
    if recorded is not None and recorded != spec:
        changed = [
            field.name
            for field in dataclasses.fields(spec)
            if getattr(recorded, field.name) != getattr(spec, field.name)
        ]
        raise DataSourceError(
            f"The data of {spec.name} changed since the run in {model_dir} started "
            f"({', '.join(changed)} differ from {RunFolder(model_dir).dataset_spec}). Restore "
            "the data it trained on, or train in another --model_dir."
        )
