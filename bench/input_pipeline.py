"""Throughput of the training input pipeline alone, without partners and with them.

`mixmo_tf.data.train_dataset` (index shuffle, batch repetition, member permutations,
per-slot crop and flip, normalisation, and partners for input MSDA) on synthetic data, no
model, from each --sources storage: `memory` (one constant, as CIFAR), `cache` (a memory-
mapped uint8 .npy, as Tiny ImageNet and tfds:NAME stream) or `folder` (one JPEG per image,
decoded and resized per batch, as folder:PATH). The pipelines compared are read in
interleaved blocks after a warm-up, each block the steps [0, --block_batches) through a fresh
iterator; one JSON line per (source, --msda value) gives the median block's images/s,
counting the B slots of a batch and, separately, the B x M augmented member images (and
partner images). The project's target is >= 3,000 slot images/s on 2 cores.

Example: python bench/input_pipeline.py --msda=none,cutmix
         python bench/input_pipeline.py --sources=memory,cache,folder --image_size=64 \
             --num_examples=10000 --msda=none
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Callable
from typing import Any

import harness
import numpy as np
import tensorflow as tf
from absl import flags

from mixmo_tf import data
from mixmo_tf.config import Config
from mixmo_tf.config.datasets import source_spec
from mixmo_tf.data.streamed import ImageCache, ImageFiles
from mixmo_tf.training.run import train_stream

SOURCES = ("memory", "cache", "folder")
# Classes of the synthetic folder (its images are spread over them).
FOLDER_CLASSES = 10

# The network only shapes the Config; the pipeline does not depend on it.
NETWORK = "28-10"


def define_flags(values: flags.FlagValues) -> None:
    """Defines this script's flags on `values`."""
    flags.DEFINE_integer(
        "num_examples", 50_000, "Images in memory (CIFAR: 50,000).", flag_values=values
    )
    flags.DEFINE_integer("batch_size", 64, "Slots per batch B.", flag_values=values)
    flags.DEFINE_integer("batch_repetitions", 4, "b.", flag_values=values)
    flags.DEFINE_integer(
        "members", 2, "M (1: the plain network's stream, b = 1).", flag_values=values
    )
    flags.DEFINE_list(
        "msda",
        ["none", "cutmix"],
        "Pipelines to compare: none (no partners), mixup or cutmix (with partners).",
        flag_values=values,
    )
    flags.DEFINE_integer(
        "warmup_batches", 20, "Untimed batches first, per pipeline.", flag_values=values
    )
    flags.DEFINE_integer("block_batches", 200, "Batches per timed block.", flag_values=values)
    flags.DEFINE_integer(
        "timed_blocks", 5, "Timed blocks per pipeline; the median is reported.", flag_values=values
    )
    flags.DEFINE_list(
        "sources",
        ["memory"],
        f"Storages of the images to compare: {', '.join(SOURCES)}.",
        flag_values=values,
    )
    flags.DEFINE_integer(
        "image_size",
        0,
        "Side of the synthetic images (0: CIFAR's 32; e.g. 64 for Tiny ImageNet's shape).",
        flag_values=values,
    )


def pipeline_config(msda: str, values: flags.FlagValues) -> Config:
    """The Config whose training stream is measured: CIFAR's real epoch length."""
    return harness.bench_config(
        NETWORK,
        values.members,
        batch_size=values.batch_size,
        batch_repetitions=values.batch_repetitions,
        msda=msda,
    )


def block_function(dataset: tf.data.Dataset) -> Callable[[], None]:
    """A function reading every batch of `dataset` through a fresh iterator.

    Each block starts and ends with an idle pipeline: nothing prefetches in the background
    while another pipeline is timed, and no block starts with batches made in advance.
    """

    def read_all() -> None:
        for _ in dataset:
            pass

    return read_all


def warm_up(dataset: tf.data.Dataset, batches: int) -> None:
    """Reads the first `batches` batches of `dataset` (at most all), untimed.

    The iterator is dropped afterwards, which stops its background work.
    """
    for _ in itertools.islice(dataset, batches):
        pass


def pipeline_record(
    config: Config, timing: dict, block_batches: int, num_examples: int
) -> dict[str, Any]:
    """The JSON record of one pipeline from the timing of its blocks."""
    median = timing["median_s"]
    batches_per_s = block_batches / median
    member_images_per_s = batches_per_s * config.batch_size * config.num_members
    record = {
        "bench": "input_pipeline",
        "batch_size": config.batch_size,
        "batch_repetitions": config.batch_repetitions,
        "members": config.num_members,
        "msda": config.msda,
        "partners": config.msda != "none",
        "num_examples": num_examples,
        "block_batches": block_batches,
        "median_block_s": median,
        "images_per_s": batches_per_s * config.batch_size,
        "member_images_per_s": member_images_per_s,
        "timed_blocks": len(timing["durations_s"]),
        "block_durations": timing["durations_s"],
    }
    if record["partners"]:
        record["partner_images_per_s"] = member_images_per_s
    return record


def _stored(source: str, images: np.ndarray, folder: str):
    """`images` in the storage `source`, written under `folder` if it is a file storage."""
    if source == "memory":
        return images
    if source == "cache":
        path = os.path.join(folder, "images.npy")
        np.save(path, images)
        return ImageCache(path)
    paths = []
    for index, image in enumerate(images):
        class_folder = os.path.join(folder, "train", str(index % FOLDER_CLASSES))
        os.makedirs(class_folder, exist_ok=True)
        paths.append(os.path.join(class_folder, f"{index}.jpg"))
        with open(paths[-1], "wb") as stream:
            stream.write(tf.io.encode_jpeg(image, quality=90).numpy())
    return ImageFiles(paths, images.shape[1:])


def run(values: flags.FlagValues) -> None:
    """Times the pipeline of each (source, --msda value), interleaved; prints JSON lines."""
    configs = {msda: pipeline_config(msda, values) for msda in values.msda}
    spec = next(iter(configs.values())).spec
    if values.image_size:
        spec = source_spec("synthetic", values.image_size, spec.num_classes, 0, 0, ())
    images, labels = harness.synthetic_data(values.num_examples, spec, seed=0)
    blocks, records = {}, {}
    with tempfile.TemporaryDirectory(prefix="input_pipeline_") as folder:
        for source in values.sources:
            os.makedirs(os.path.join(folder, source))
            stored = _stored(source, images, os.path.join(folder, source))
            for msda, config in configs.items():
                dataset = data.train_dataset(
                    stored, labels, spec, train_stream(config), 0, values.block_batches
                )
                warm_up(dataset, values.warmup_batches)
                blocks[source, msda] = block_function(dataset)
                records[source, msda] = config
        timings = harness.interleaved_medians(blocks, warmup=0, timed=values.timed_blocks)
    for (source, msda), config in records.items():
        record = pipeline_record(config, timings[source, msda], values.block_batches, len(labels))
        record.update(source=source, image_shape=list(spec.image_shape))
        harness.emit(record)


if __name__ == "__main__":
    harness.run_script(define_flags, run)
