"""Times the run's own training step in each candidate precision, on synthetic batches.

The step is the real one (`MixMoModel.train_step`: mixing, forward, loss, backward, SGD) of
the run's network at its batch shape; only the images are random. Precisions are timed in
alternating rounds after one untimed step each (its tracing), so they share the machine's
drifts; a precision more than `_CLEARLY_SLOWER` times the fastest after a round is not timed
again. Run as `python -m mixmo_tf.tuning.step_timing` it is the child process that measures
with oneDNN set otherwise than in its parent (`mixmo_tf.tuning.onednn`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import statistics
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from mixmo_tf.config.settings import Config
from mixmo_tf.models.build import build_model

TIMED_ROUNDS = 3
_CLEARLY_SLOWER = 1.5
_SEED = 0


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


def _step_function(config: Config, batch: dict[str, tf.Tensor]):
    """One compiled training step of a fresh model of `config` per call; waits for the loss."""
    model = build_model(config)
    model.make_train_function()

    def step() -> None:
        float(model.train_function(iter([batch]))["loss"])

    return step


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def time_training_steps(
    config: Config, precisions: tuple[str, ...], rounds: int = TIMED_ROUNDS
) -> dict[str, float]:
    """Median seconds of `config`'s training step in each of `precisions`.

    Builds a throwaway model per precision and reseeds the global random state (training
    seeds it again before it builds its model).
    """
    batch = synthetic_batch(config)
    keras.utils.set_random_seed(_SEED)
    steps = {p: _step_function(dataclasses.replace(config, precision=p), batch) for p in precisions}
    for step in steps.values():
        step()  # traces the step function
    durations = {name: [] for name in steps}
    for _ in range(rounds):
        for name in [n for n in steps if _still_timed(n, durations)]:
            durations[name].append(_timed(steps[name]))
    return {name: statistics.median(times) for name, times in durations.items()}


def _still_timed(name: str, durations: dict[str, list[float]]) -> bool:
    """Whether `name` is worth another round: not clearly slower than the fastest so far."""
    if not durations[name]:
        return True
    fastest = min(min(times) for times in durations.values() if times)
    return min(durations[name]) <= _CLEARLY_SLOWER * fastest


def _child_main() -> None:
    """Reads {"config": ..., "precisions": [...]} on stdin and prints {"onednn", "seconds"}."""
    from tensorflow.python.util import _pywrap_util_port

    request = json.load(sys.stdin)
    config = Config(**request["config"])
    with contextlib.redirect_stdout(sys.stderr):
        seconds = time_training_steps(config, tuple(request["precisions"]))
    print(json.dumps({"onednn": bool(_pywrap_util_port.IsMklEnabled()), "seconds": seconds}))


if __name__ == "__main__":
    _child_main()
