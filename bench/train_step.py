"""Times the full MixMo training step (mixing, loss, L2, SGD update) of a WRN on this machine.

Prints one JSON line per configuration: the median seconds per step over the timed steps
after warm-up, images/s (counting the B slots of a batch), versions, threads and cores.
Example: python bench/train_step.py --depth=28 --width=10 --members=2,1
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from mixmo_tf import data
from mixmo_tf.config import Config
from mixmo_tf.experiment import build_model, train_stream

flags.DEFINE_integer("depth", 28, "WRN depth.")
flags.DEFINE_integer("width", 10, "WRN width.")
flags.DEFINE_list("members", ["2", "1"], "Values of M to time (1 = plain network, b=1, no mixing).")
flags.DEFINE_integer("batch_size", 64, "Slots per batch B.")
flags.DEFINE_integer("batch_repetitions", 4, "b for M > 1.")
flags.DEFINE_enum("msda", "none", ["none", "mixup", "cutmix"], "Input mixing for M > 1.")
flags.DEFINE_integer("warmup_steps", 2, "Untimed steps (tracing, allocation).")
flags.DEFINE_integer("timed_steps", 5, "Timed steps; the median is reported.")
FLAGS = flags.FLAGS


class StepTimer(keras.callbacks.Callback):
    """Records the wall time of each training batch."""

    def __init__(self):
        super().__init__()
        self.durations: list[float] = []
        self._start = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.durations.append(time.perf_counter() - self._start)


def time_configuration(num_members: int) -> dict:
    """Median step time of M = `num_members` (M = 1: the plain network, b = 1, no mixing)."""
    single = num_members == 1
    steps = FLAGS.warmup_steps + FLAGS.timed_steps
    config = Config(
        dataset="cifar100",
        depth=FLAGS.depth,
        width=FLAGS.width,
        num_members=num_members,
        mixing="none" if single else "cutmix",
        msda="none" if single else FLAGS.msda,
        batch_size=FLAGS.batch_size,
        batch_repetitions=1 if single else FLAGS.batch_repetitions,
        steps_per_epoch=steps,
        epochs=1,
        model_dir="/tmp/unused",
    )
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (1024, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 100, 1024)
    keras.utils.set_random_seed(0)
    model = build_model(config)
    batches = data.train_dataset(images, labels, config.spec, train_stream(config), 0, steps)
    timer = StepTimer()
    model.fit(batches, epochs=1, steps_per_epoch=steps, callbacks=[timer], verbose=0, shuffle=False)
    median = statistics.median(timer.durations[FLAGS.warmup_steps :])
    return {
        "bench": "train_step",
        "network": f"WRN-{FLAGS.depth}-{FLAGS.width}",
        "members": num_members,
        "batch_size": config.batch_size,
        "batch_repetitions": config.batch_repetitions,
        "msda": config.msda,
        "median_step_s": round(median, 4),
        "images_per_s": round(config.batch_size / median, 2),
        "timed_steps": FLAGS.timed_steps,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "cores": os.cpu_count(),
        "command": " ".join(["python", *sys.argv]),
    }


def main(argv):
    del argv
    for members in FLAGS.members:
        print(json.dumps(time_configuration(int(members))), flush=True)


if __name__ == "__main__":
    app.run(main)
