"""Times the run's own training step in each candidate precision, on synthetic batches.

The step is the real one (`MixMoModel.train_step`: mixing, forward, loss, backward, SGD) of
the run's network at its batch shape; only the images are random. Precisions are timed in
alternating rounds after one untimed step each (its tracing; `mixmo_tf.tuning.timing`).
Run as `python -m mixmo_tf.tuning.step_timing` it is a child process of
`mixmo_tf.tuning.onednn`, timing with oneDNN set otherwise than in its parent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import sys

import keras
import numpy as np
import tensorflow as tf

from mixmo_tf.config.datasets import spec_from_json
from mixmo_tf.config.settings import Config
from mixmo_tf.models.build import build_model
from mixmo_tf.tuning import timing

_SEED = 0


def onednn_enabled() -> bool:
    """Whether TensorFlow's oneDNN kernels are on in this process."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def synthetic_batch(config: Config) -> dict[str, tf.Tensor]:
    """A training batch of `config`'s shape (the pipeline's format) with random content."""
    spec = config.spec
    rng = np.random.default_rng(_SEED)
    slots = (config.batch_size, config.num_members)
    batch = {
        "images": rng.standard_normal((*slots, *spec.image_shape)).astype(np.float32),
        "labels": rng.integers(0, spec.num_classes, slots).astype(np.int32),
    }
    if config.msda != "none":
        batch["partner_images"] = rng.standard_normal(batch["images"].shape).astype(np.float32)
        batch["partner_labels"] = rng.integers(0, spec.num_classes, slots).astype(np.int32)
    return {name: tf.constant(value) for name, value in batch.items()}


class StepTimer:
    """Compiled training steps of `config` in each of `precisions`, traced and ready to time.

    Each precision gets a throwaway model; the global random state is reseeded (training
    seeds it again before it builds its model).
    """

    def __init__(self, config: Config, precisions: tuple[str, ...]):
        batch = synthetic_batch(config)
        keras.utils.set_random_seed(_SEED)
        self._steps = {
            precision: _step_function(dataclasses.replace(config, precision=precision), batch)
            for precision in precisions
        }
        for step in self._steps.values():
            step()  # traces the step function

    def seconds(self, precision: str) -> float:
        """Wall seconds of one more training step in `precision`."""
        return timing.seconds_of(self._steps[precision])


def _step_function(config: Config, batch: dict[str, tf.Tensor]):
    """One compiled training step of a fresh model of `config` per call; waits for the loss."""
    model = build_model(config)
    model.make_train_function()

    def step() -> None:
        float(model.train_function(iter([batch]))["loss"])

    return step


def time_training_steps(
    config: Config, precisions: tuple[str, ...], rounds: int = timing.TIMED_ROUNDS
) -> dict[str, float]:
    """Median seconds of `config`'s training step in each of `precisions`, interleaved."""
    timer = StepTimer(config, precisions)
    return timing.interleaved_medians(
        {precision: functools.partial(timer.seconds, precision) for precision in precisions},
        rounds,
    )


def _child_main() -> None:
    """The timing child of `mixmo_tf.tuning.onednn`, driven line by line on stdin/stdout.

    Reads {"config": ..., "precisions": [...]}, builds and traces the steps, answers
    {"onednn": bool} (ready); then answers each precision name with the seconds of one
    step in it, until stdin closes. Its parent alternates between two such children.
    """
    request = json.loads(sys.stdin.readline())
    fields = request["config"]
    spec = fields["dataset_spec"] and spec_from_json(fields["dataset_spec"])
    with contextlib.redirect_stdout(sys.stderr):
        timer = StepTimer(Config(**{**fields, "dataset_spec": spec}), tuple(request["precisions"]))
    print(json.dumps({"onednn": onednn_enabled()}), flush=True)
    for line in iter(sys.stdin.readline, ""):
        with contextlib.redirect_stdout(sys.stderr):
            seconds = timer.seconds(line.strip())
        print(json.dumps(seconds), flush=True)


if __name__ == "__main__":
    _child_main()
