"""CIFAR, Tiny ImageNet and `tfds:NAME` datasets through tensorflow-datasets.

`ensure_prepared` finds prepared tfds data in `data_dir`. When the data is not prepared
but the official archive lies in tfds' manual-download folder (`<data_dir>/downloads/manual`),
it prepares `data_dir` from that archive: with tfds' own CIFAR builder, reading the local
file instead of its URL, or with this package's Tiny ImageNet builder
(`mixmo_tf.data.tiny_imagenet`). Otherwise it downloads if `--download` allows it
(`mixmo_tf.data.downloads`: `auto` checks in seconds that the host answers) and else fails
at once with instructions: tfds' own download would retry for minutes on a machine with no
network. `ensure_tfds_prepared` and `tfds_source_spec` do the same for `tfds:NAME`.
Importing tensorflow_datasets does not import TensorFlow, so specs are read without it.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import urllib.parse

import numpy as np

from mixmo_tf.config.dataset_names import source_argument
from mixmo_tf.config.datasets import DatasetSpec, source_spec
from mixmo_tf.config.errors import MissingFileError
from mixmo_tf.config.run_folder import write_atomically
from mixmo_tf.data import downloads


class DataNotFoundError(MissingFileError):
    """The dataset is neither prepared in data_dir nor available as a local archive."""


def default_data_dir() -> str:
    """tfds' data folder: $TFDS_DATA_DIR or ~/tensorflow_datasets."""
    return os.environ.get("TFDS_DATA_DIR") or os.path.join(
        os.path.expanduser("~"), "tensorflow_datasets"
    )


def manual_dir(data_dir: str) -> str:
    """Where tfds looks for manually downloaded archives under `data_dir`."""
    return os.path.join(data_dir, "downloads", "manual")


def _builder_class(spec: DatasetSpec):
    import tensorflow_datasets as tfds

    if spec.name == "tiny_imagenet":
        from mixmo_tf.data.tiny_imagenet import TinyImagenet  # registers "tiny_imagenet"

        return TinyImagenet
    return tfds.builder_cls(spec.name)


def _archive_builder(spec: DatasetSpec, archive_path: str, data_dir: str):
    """tfds' own builder for `spec`, reading `archive_path` instead of downloading its URL.

    The official builder checks downloads against recorded checksums; reading a local file
    skips that, so the archive's integrity is checked by extracting it instead.
    """
    base = _builder_class(spec)

    class _LocalArchiveDownloads:
        def __init__(self, download_manager):
            self._download_manager = download_manager

        def download_and_extract(self, url):
            return self._download_manager.extract(archive_path)

    class LocalArchiveBuilder(base, skip_registration=True):
        name = base.name

        def _split_generators(self, dl_manager):
            return super()._split_generators(_LocalArchiveDownloads(dl_manager))

    return LocalArchiveBuilder(data_dir=data_dir)


def _check_archive(spec: DatasetSpec, archive_path: str) -> None:
    try:
        if spec.name == "tiny_imagenet":
            from mixmo_tf.data.tiny_imagenet import check_archive

            check_archive(archive_path)
        else:
            with tarfile.open(archive_path, "r:gz") as archive:
                archive.getmembers()
    except (tarfile.TarError, OSError, EOFError, ValueError) as error:
        raise DataNotFoundError(
            f"The archive {archive_path} is corrupt or incomplete ({error}). Download it again "
            f"from {spec.homepage} and place it there."
        ) from error


def prepare_from_archive(spec: DatasetSpec, archive_path: str, data_dir: str) -> None:
    """Writes prepared tfds data for `spec` into `data_dir` from the official archive."""
    import tensorflow_datasets as tfds

    _check_archive(spec, archive_path)
    if spec.name == "tiny_imagenet":  # reads the manual folder itself
        builder = _builder_class(spec)(data_dir=data_dir)
    else:
        builder = _archive_builder(spec, archive_path, data_dir)
    download_dir = os.path.join(data_dir, "downloads", f"{spec.name}_local")
    # tfds reuses an extraction named after the archive file, so a replaced archive would be
    # ignored in favour of the previous (e.g. wrong) one's extraction. Once the data is
    # prepared, the extraction (~180 MB for CIFAR) is not needed either.
    shutil.rmtree(download_dir, ignore_errors=True)
    try:
        builder.download_and_prepare(
            download_dir=download_dir,
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir(data_dir)),
        )
    except Exception as error:  # tfds raises many types; all mean the archive is unusable.
        raise DataNotFoundError(
            f"Could not prepare {spec.name} from {archive_path}: {error}. Is it the official "
            f"binary archive ({spec.archive_name}) from {spec.homepage}?"
        ) from error
    finally:
        shutil.rmtree(download_dir, ignore_errors=True)


def _no_download_reason(download: str, url: str | None) -> str:
    """Why nothing was downloaded, for the missing-data messages."""
    if download == "never":
        return "--download=never"
    host = urllib.parse.urlparse(url or "").hostname or "its download host"
    return (
        f"{host} did not answer within {downloads.REACHABILITY_TIMEOUT_S:g} s "
        "(--download=auto; --download=always skips the check)"
    )


def _missing_data_message(spec: DatasetSpec, data_dir: str, download: str, url: str) -> str:
    return (
        f"{spec.name} is not prepared in --data_dir={data_dir} and no archive was found at "
        f"{os.path.join(manual_dir(data_dir), spec.archive_name)}; nothing was downloaded: "
        f"{_no_download_reason(download, url)}. Either:\n"
        f"  1. pass --data_dir=DIR where DIR holds tfds data prepared elsewhere "
        f"(e.g. by `tfds build {spec.name} --data_dir=DIR` on a machine with network), or\n"
        f"  2. download {spec.archive_name} from {spec.homepage} and place it in "
        f"{manual_dir(data_dir)}/; it is prepared on the next run."
    )


def _builder_url(builder) -> str:
    """The first URL a tfds builder downloads (from its checksums), else its homepage."""
    return next(iter(builder.url_infos or {}), "") or builder.info.homepage


def _download_archive(url: str, path: str) -> None:
    """Downloads `url` to `path`, complete or not at all."""
    import urllib.request

    write_atomically(path, lambda partial: urllib.request.urlretrieve(url, partial))


def _download_and_prepare(name: str, prepare, url: str, data_dir: str) -> None:
    """Calls `prepare()`, which downloads `name` from `url`; its failures become one message."""
    try:
        prepare()
    except DataNotFoundError:
        raise
    except Exception as error:  # network and tfds errors of many types
        raise DataNotFoundError(
            f"Downloading {name} from {url} into --data_dir={data_dir} failed ({error}). "
            "Run again to retry, or prepare the data elsewhere and pass its --data_dir."
        ) from error


def ensure_prepared(spec: DatasetSpec, data_dir: str | None, download: str = "never") -> str:
    """Returns the data_dir holding prepared `spec`, preparing it from a local archive if found.

    Args:
        download: "never", "auto" (download if the host answers within seconds) or
            "always"; the library's default is never, the command line's auto.

    Raises:
        DataNotFoundError: neither prepared data nor the archive is there (or it is corrupt),
            and no download was allowed (or it failed).
    """
    data_dir = data_dir or default_data_dir()
    builder = _builder_class(spec)(data_dir=data_dir)
    if builder.is_prepared():
        return data_dir
    archive_path = os.path.join(manual_dir(data_dir), spec.archive_name)
    if os.path.exists(archive_path):
        prepare_from_archive(spec, archive_path, data_dir)
        return data_dir
    # Tiny ImageNet's builder reads the manual folder only: the zip is downloaded there.
    url = spec.homepage if spec.name == "tiny_imagenet" else _builder_url(builder)
    if not downloads.may_download(download, url):
        raise DataNotFoundError(_missing_data_message(spec, data_dir, download, url))

    def prepare() -> None:
        if spec.name == "tiny_imagenet":
            _download_archive(url, archive_path)
            prepare_from_archive(spec, archive_path, data_dir)
        else:
            builder.download_and_prepare()

    _download_and_prepare(spec.name, prepare, url, data_dir)
    return data_dir


def tfds_builder(name: str, data_dir: str):
    """tfds' builder of the `tfds:NAME` dataset `name`.

    Raises:
        DataNotFoundError: tfds has no dataset of that name.
    """
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        first_line = str(error).strip().splitlines()[0]
        raise DataNotFoundError(
            f"--dataset=tfds:{name}: tfds has no such dataset ({first_line}). Use a name of "
            "https://www.tensorflow.org/datasets/catalog/overview (e.g. tfds:oxford_flowers102)."
        ) from error


def ensure_tfds_prepared(name: str, data_dir: str | None, download: str) -> str:
    """Returns the data_dir holding the prepared tfds dataset `name`, downloading it if
    `download` allows.

    Raises:
        DataNotFoundError: unknown name, or not prepared and not downloaded.
    """
    data_dir = data_dir or default_data_dir()
    builder = tfds_builder(name, data_dir)
    if builder.is_prepared():
        return data_dir
    url = _builder_url(builder)
    if not downloads.may_download(download, url):
        raise DataNotFoundError(
            f"tfds:{name} is not prepared in --data_dir={data_dir}; nothing was downloaded: "
            f"{_no_download_reason(download, url)}. Either pass --data_dir=DIR where DIR holds "
            f"it prepared elsewhere (`tfds build {name} --data_dir=DIR` on a machine with "
            "network), or run where its host is reachable."
        )
    _download_and_prepare(f"tfds:{name}", builder.download_and_prepare, url, data_dir)
    return data_dir


def _classification_keys(builder, name: str) -> tuple[str, str]:
    """The (image, label) feature names of an image-classification tfds dataset."""
    import tensorflow_datasets as tfds

    keys = builder.info.supervised_keys
    features = builder.info.features
    if (
        not isinstance(keys, tuple)
        or len(keys) != 2
        or not all(isinstance(key, str) for key in keys)
        or not isinstance(features[keys[0]], tfds.features.Image)
        or not isinstance(features[keys[1]], tfds.features.ClassLabel)
    ):
        raise DataNotFoundError(
            f"tfds:{name} is not an image-classification dataset (its supervised keys {keys!r} "
            "are not an image and a class label). Choose one whose `as_supervised` gives "
            "(image, label)."
        )
    return keys


def tfds_splits(builder, name: str) -> dict[str, int]:
    """Examples of the "train" and "test" splits of a prepared tfds dataset.

    Raises:
        DataNotFoundError: a split is missing; the message lists the dataset's splits.
    """
    splits = builder.info.splits
    missing = [split for split in ("train", "test") if split not in splits]
    if missing:
        raise DataNotFoundError(
            f"tfds:{name} has no {' or '.join(repr(m) for m in missing)} split (it has "
            f"{sorted(splits)}); tfds:NAME sources train on 'train' and test on 'test'. Put its "
            "images into folder:PATH with train/ and test/ instead."
        )
    return {split: splits[split].num_examples for split in ("train", "test")}


def tfds_source_spec(dataset: str, image_size: int, data_dir: str | None) -> DatasetSpec:
    """The spec of a prepared `tfds:NAME` source, from its tfds info.

    Raises:
        DataNotFoundError: unknown, not prepared, no image classification, a split missing.
    """
    name = source_argument(dataset)
    data_dir = data_dir or default_data_dir()
    builder = tfds_builder(name, data_dir)
    if not builder.is_prepared():
        raise DataNotFoundError(
            f"tfds:{name} is not prepared in --data_dir={data_dir}: train with "
            "--download=auto (or always) on a machine with network, or pass the --data_dir "
            "where it was prepared."
        )
    _, label_key = _classification_keys(builder, name)
    sizes = tfds_splits(builder, name)
    labels = builder.info.features[label_key]
    return source_spec(
        dataset,
        image_size,
        labels.num_classes,
        sizes["train"],
        sizes["test"],
        tuple(labels.names),
        homepage=builder.info.homepage or "",
    )


def load_tfds_split(
    spec: DatasetSpec, split: str, data_dir: str | None, download: str = "never"
) -> tuple[np.ndarray, np.ndarray]:
    """Images `(N, H, W, C)` uint8 and labels `(N,)` int64 of a prepared tfds split, in memory."""
    import tensorflow_datasets as tfds

    data_dir = ensure_prepared(spec, data_dir, download)
    try:
        dataset = tfds.load(
            spec.name,
            split=split,
            data_dir=data_dir,
            download=False,
            as_supervised=True,
            batch_size=-1,
        )
    except Exception as error:  # tfds raises many types; all mean the data is unreadable.
        raise DataNotFoundError(
            f"Could not read {spec.name}/{split} from {data_dir}: {error}. Delete "
            f"{os.path.join(data_dir, spec.name)} and prepare it again."
        ) from error
    images, labels = tfds.as_numpy(dataset)
    return images, labels.astype(np.int64)
