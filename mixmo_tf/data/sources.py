"""The spec of a `--dataset` value read from its data, and the check that a resumed run's
data is the data it started on (imports no TensorFlow).

What each kind of source is (named, `tfds:NAME`, `folder:PATH`) and the spec it gets:
`mixmo_tf.config.dataset_names` and `mixmo_tf.config.datasets`. The spec of a tfds or folder
source depends on the data, so a run records the spec it trained with in
`<model_dir>/dataset_spec.json` (`mixmo_tf.config.run_record.record_spec`); evaluation,
export and prediction read it from there (the data need not be on the serving machine), and
a resume whose data changed is refused.
"""

from __future__ import annotations

import dataclasses

from mixmo_tf.config.dataset_names import source_argument, source_kind
from mixmo_tf.config.datasets import DATASETS, DatasetSpec, source_spec
from mixmo_tf.config.errors import UserError
from mixmo_tf.config.run_folder import RunFolder
from mixmo_tf.config.run_record import recorded_spec
from mixmo_tf.data import tfds_loading
from mixmo_tf.data.folder import index_folder


class DataSourceError(UserError, ValueError):
    """The data of a tfds or folder source does not fit the run (changed, or too small)."""


def tfds_prepares(dataset: str) -> bool:
    """Whether tfds prepares (and, per --download, may download) `dataset`'s data: tfds:NAME
    and the named datasets but digits (scikit-learn's, bundled); a folder is read as it is."""
    return source_kind(dataset) == "tfds" or dataset in DATASETS and dataset != "digits"


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


def resolved_spec(dataset: str, image_size: int, data_dir: str | None) -> DatasetSpec:
    """The spec of `--dataset`: fixed for the named datasets, else read from its data (tfds
    info, the folder's files), which must be ready (`mixmo_tf.data.prepare_source`).

    A Config of a tfds or folder source carries it: `Config(..., dataset_spec=resolved_spec(
    dataset, image_size, data_dir))`, as training and the import do.

    Raises:
        FileNotFoundError: the data is missing or unusable (the message says why and how to
            fix it).
    """
    kind = source_kind(dataset)
    if kind == "named":
        return DATASETS[dataset]
    if kind == "folder":
        return folder_spec(dataset, image_size)
    return tfds_loading.tfds_source_spec(dataset, image_size, data_dir)


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
