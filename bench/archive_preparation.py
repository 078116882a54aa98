"""How long the first run takes to prepare CIFAR from the official archive, once.

Writes a full-size archive in the official binary format (random pixels, the real sizes:
50,000 training and 10,000 test images) into a fresh tfds data folder's manual-download
place, then times `mixmo_tf.data.ensure_prepared`, which builds the tfds dataset from it
with tfds' own CIFAR builder (what `main.py` does when it finds the archive there). Prints
one JSON line per dataset.

Example: python bench/archive_preparation.py --datasets=cifar100
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import harness
from absl import flags

from mixmo_tf.data import dataset_spec, ensure_prepared
from mixmo_tf.data.tfds_loading import manual_dir

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPOSITORY, "tests"))  # the tests' writer of CIFAR archives

from helpers.cifar_archive import write_cifar_archive  # noqa: E402

_ARCHIVE_DATASETS = ("cifar10", "cifar100")


def define_flags(values: flags.FlagValues) -> None:
    """Defines this script's flags on `values`."""
    flags.DEFINE_multi_enum(
        "datasets", ["cifar100"], _ARCHIVE_DATASETS, "Datasets to prepare.", flag_values=values
    )


def time_preparation(name: str) -> dict:
    """Prepares `name` from a full-size archive in a temporary data folder; the record."""
    spec = dataset_spec(name)
    with tempfile.TemporaryDirectory() as data_dir:
        archive = write_cifar_archive(manual_dir(data_dir), name, spec.num_train, spec.num_test)
        archive_mib = os.path.getsize(archive["path"]) / 2**20
        with harness.progress_to_stderr():
            start = time.perf_counter()
            ensure_prepared(spec, data_dir)
            seconds = time.perf_counter() - start
    return {
        "bench": "archive_preparation",
        "dataset": name,
        "num_train": spec.num_train,
        "num_test": spec.num_test,
        "archive_mib": round(archive_mib, 1),
        "preparation_s": seconds,
    }


def run(values: flags.FlagValues) -> None:
    """Times the preparation of each dataset of --datasets and prints its JSON line."""
    for name in values.datasets:
        harness.emit(time_preparation(name))


if __name__ == "__main__":
    harness.run_script(define_flags, run)
