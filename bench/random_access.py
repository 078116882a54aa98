"""Random-access reads of a tfds split: tfds' own `data_source` against this project's cache.

Streaming a tfds split needs rows by index (every batch is a gather of seeded indices). tfds
offers `builder.as_data_source()` on ArrayRecord-prepared data, which decodes each image's
JPEG per read; `mixmo_tf.data.cache` decodes once into a uint8 `.npy` that is memory-mapped
(`ImageCache`). Both are built here from the same synthetic images (a tfds builder defined
below, prepared as ArrayRecord), then read in interleaved blocks of --batches random batches
of --batch_size distinct indices; one JSON line per reader gives images/s. The images are
random 8x8-pixel blocks, so their JPEGs are about as small as photos' (noise would make
decoding slower than real data).

Example: python bench/random_access.py --num_examples=10000 --image_size=64
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

import harness
import numpy as np
import tensorflow_datasets as tfds
from absl import flags

from mixmo_tf.data.streamed import ImageCache

_CLASSES = 10


def define_flags(values: flags.FlagValues) -> None:
    """Defines this script's flags on `values`."""
    flags.DEFINE_integer("num_examples", 10_000, "Images in the split.", flag_values=values)
    flags.DEFINE_integer("image_size", 64, "Side of the images.", flag_values=values)
    flags.DEFINE_integer("batch_size", 64, "Indices per read.", flag_values=values)
    flags.DEFINE_integer("batches", 50, "Reads per timed block.", flag_values=values)
    flags.DEFINE_integer("timed_blocks", 5, "Timed blocks per reader.", flag_values=values)


def _builder(images: np.ndarray, labels: np.ndarray, data_dir: str):
    """A tfds builder of `images` (JPEG-encoded, as tfds stores images) and `labels`."""

    class SyntheticImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(shape=images.shape[1:]),
                        "label": tfds.features.ClassLabel(num_classes=_CLASSES),
                    }
                ),
                supervised_keys=("image", "label"),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for index, (image, label) in enumerate(zip(images, labels)):
                yield index, {"image": image, "label": int(label)}

    return SyntheticImages(data_dir=data_dir, file_format="array_record")


def run(values: flags.FlagValues) -> None:
    """Times both readers on the same random batches; prints their JSON lines."""
    rng = np.random.default_rng(0)
    shape = (values.num_examples, values.image_size, values.image_size, 3)
    # Blocks of 8x8 pixels: JPEGs as small as a photo's, not noise's.
    blocks = rng.integers(0, 256, (shape[0], shape[1] // 8, shape[2] // 8, 3), dtype=np.uint8)
    images = blocks.repeat(8, axis=1).repeat(8, axis=2)
    labels = rng.integers(0, _CLASSES, values.num_examples)
    batches = [
        rng.choice(values.num_examples, values.batch_size, replace=False)
        for _ in range(values.batches)
    ]
    with tempfile.TemporaryDirectory(prefix="random_access_") as folder:
        builder = _builder(images, labels, folder)
        with contextlib.redirect_stdout(sys.stderr):  # tfds' notes; stdout is JSON lines
            builder.download_and_prepare()
        source = builder.as_data_source(split="train")
        np.save(os.path.join(folder, "cache.npy"), images)
        cache = ImageCache(os.path.join(folder, "cache.npy"))
        readers = {
            "tfds_data_source": lambda: [source.__getitems__(b.tolist()) for b in batches],
            "npy_cache": lambda: [cache.take(b) for b in batches],
        }
        timings = harness.interleaved_medians(readers, warmup=1, timed=values.timed_blocks)
    for reader, timing in timings.items():
        harness.emit(
            {
                "bench": "random_access",
                "reader": reader,
                "num_examples": values.num_examples,
                "image_shape": list(shape[1:]),
                "batch_size": values.batch_size,
                "batches": values.batches,
                "median_block_s": timing["median_s"],
                "images_per_s": values.batches * values.batch_size / timing["median_s"],
                "block_durations": timing["durations_s"],
            }
        )


if __name__ == "__main__":
    harness.run_script(define_flags, run)
