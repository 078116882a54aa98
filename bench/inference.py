"""Times the ensemble prediction of MixMo against the plain network's, interleaved.

A prediction is `MixMoModel.predict_step` through Keras's compiled predict function (what
`model.predict` runs per batch): the same normalised image goes to every member's stem,
the shared core runs once and every head predicts. The batch comes from the real
evaluation pipeline on synthetic CIFAR-shaped data, made before timing. Prints one JSON line
per (network, M) and one MixMo / plain time ratio line per network.

Example: python bench/inference.py --networks=28-10 --members=2,1 --batch_size=256
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import harness
import tensorflow as tf
from absl import flags

from mixmo_tf import data
from mixmo_tf.config import Config
from mixmo_tf.models import MixMoModel


def define_flags(values: flags.FlagValues) -> None:
    """Defines this script's flags on `values`."""
    harness.define_model_flags(values, batch_size=256)


def eval_images(config: Config) -> tf.Tensor:
    """One batch of normalised images `(batch, 32, 32, 3)` from the evaluation pipeline."""
    images, labels = harness.synthetic_data(config.batch_size, config.spec, seed=0)
    batches = data.eval_dataset(images, labels, config.spec, config.batch_size, num_batches=1)
    return next(iter(batches))["images"]


def predict_function(model: MixMoModel, images: tf.Tensor) -> Callable[[], None]:
    """One compiled ensemble prediction of `images` per call; waits for the probabilities."""
    model.make_predict_function()

    def predict() -> None:
        model.predict_function([images])["ensemble"].numpy()

    return predict


def prediction_record(network: str, config: Config, timing: dict, flops: float) -> dict[str, Any]:
    """The JSON record of one (network, M) from its timing and FLOPs per batch."""
    median = timing["median_s"]
    return {
        **harness.run_record("inference", network, config),
        "median_s": median,
        **harness.throughput(median, config.batch_size, flops),
        "timed_steps": len(timing["durations_s"]),
        "durations_s": timing["durations_s"],
        "inference_gflop_per_batch": flops / harness.GIGA,
    }


def time_network(network: str, values: flags.FlagValues) -> list[dict[str, Any]]:
    """Records of every M of `network`, timed interleaved, and the ratio records."""
    configs = {
        m: harness.bench_config(
            network,
            m,
            batch_size=values.batch_size,
            batch_repetitions=1,
            precision=values.precision,
            jit_compile=values.jit_compile,
        )
        for m in harness.member_counts(values)
    }
    timings, models = harness.time_models(
        configs,
        lambda model, config: predict_function(model, eval_images(config)),
        values.warmup_steps,
        values.timed_steps,
    )
    records = [
        prediction_record(
            network,
            config,
            timings[m],
            harness.inference_flops(models[m].network, config.batch_size),
        )
        for m, config in configs.items()
    ]
    medians = {m: timing["median_s"] for m, timing in timings.items()}
    return records + harness.ratio_records("inference_ratio", network, "median_s", medians)


def run(values: flags.FlagValues) -> None:
    """Times each network of --networks and prints its JSON lines."""
    harness.emit_networks(values, time_network)


if __name__ == "__main__":
    harness.run_script(define_flags, run)
