"""CIFAR and Tiny ImageNet through tensorflow-datasets, without ever waiting on a download.

`load_tfds_split` reads prepared tfds data from `data_dir`. When the data is not prepared
but the official archive lies in tfds' manual-download folder (`<data_dir>/downloads/manual`),
it prepares `data_dir` from that archive: with tfds' own CIFAR builder, reading the local
file instead of its URL, or with this package's Tiny ImageNet builder
(`mixmo_tf.data.tiny_imagenet`). Otherwise it fails at once with instructions: tfds' own
download would retry for minutes on a machine with no network.
"""

from __future__ import annotations

import os
import shutil
import tarfile

import numpy as np

from mixmo_tf.data.specs import CIFAR_HOMEPAGE, DatasetSpec  # noqa: F401  (tests read it)


class DataNotFoundError(FileNotFoundError):
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
    # ignored in favour of the previous (e.g. wrong) one's extraction. Once prepared, the
    # extraction (~180 MB for CIFAR) is no longer needed either.
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


def _missing_data_message(spec: DatasetSpec, data_dir: str) -> str:
    return (
        f"{spec.name} is not prepared in --data_dir={data_dir} and no archive was found at "
        f"{os.path.join(manual_dir(data_dir), spec.archive_name)}. This tool never downloads "
        "(offline machines would retry for minutes). Either:\n"
        f"  1. pass --data_dir=DIR where DIR holds tfds data prepared elsewhere "
        f"(e.g. by `tfds build {spec.name} --data_dir=DIR` on a machine with network), or\n"
        f"  2. download {spec.archive_name} from {spec.homepage} and place it in "
        f"{manual_dir(data_dir)}/; it is prepared on the next run."
    )


def ensure_prepared(spec: DatasetSpec, data_dir: str | None) -> str:
    """Returns the data_dir holding prepared `spec`, preparing it from a local archive if found.

    Raises:
        DataNotFoundError: neither prepared data nor the archive is there (or it is corrupt).
    """
    data_dir = data_dir or default_data_dir()
    builder = _builder_class(spec)(data_dir=data_dir)
    if builder.is_prepared():
        return data_dir
    archive_path = os.path.join(manual_dir(data_dir), spec.archive_name)
    if not os.path.exists(archive_path):
        raise DataNotFoundError(_missing_data_message(spec, data_dir))
    prepare_from_archive(spec, archive_path, data_dir)
    return data_dir


def load_tfds_split(
    spec: DatasetSpec, split: str, data_dir: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """Images `(N, H, W, C)` uint8 and labels `(N,)` int64 of a prepared tfds split, in memory."""
    import tensorflow_datasets as tfds

    data_dir = ensure_prepared(spec, data_dir)
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
