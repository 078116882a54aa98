"""The exported SavedModel against `MixMoModel.predict`: throughput, latency, kept kernels.

For each network of --networks, builds the Cut-MixMo model (M=2, seed 0), exports it with
`mixmo_tf.export_saved_model` to a temporary folder and loads it back as a server would
(`tf.saved_model.load`, signatures only). Then, one JSON line each:

- `serving_throughput`: batch --batch_size, interleaved: the model's compiled predict function
  (what `model.predict` runs per batch) on normalised float32 images, the SavedModel's
  `predict_normalized` signature on the same images and its `serving_default` on the uint8
  images (normalisation, uncertainty outputs and top-k included); `over_keras` is each
  median over the Keras one's, `paired_over_keras` the median over rounds of each round's
  time over the Keras call's in the same round (less sensitive to a busy machine).
- `serving_latency`: batch 1, `serving_default` (uint8) and `predict_image_bytes` (a PNG),
  interleaved over --latency_rounds calls: p50 and p99 in milliseconds.
- `serving_graph`: op types of the exported graph (FusedBatchNormV3 kept, no PyFunc), and
  the kernels that ran for one batch through the Keras prediction and through
  `serving_default` (TF profiler): oneDNN's (`_Mkl*`) share of op time, the convolution and
  batch-norm kernels. TensorFlow turns oneDNN on by default only on some CPUs (with
  AVX-512); `TF_ENABLE_ONEDNN_OPTS=1` forces it.

Example: python bench/serving.py --networks=16-4,28-10 --batch_size=256 --members=2
"""

from __future__ import annotations

import collections
import os
import statistics
import tempfile
from collections.abc import Callable
from typing import Any

import harness
import keras
import numpy as np
import tensorflow as tf
from absl import flags
from inference import eval_images, predict_function
from profile_step import breakdown, op_times
from tensorflow.core.protobuf import saved_model_pb2

from mixmo_tf.models.build import build_model
from mixmo_tf.serving.export import export_saved_model
from mixmo_tf.serving.graph import IMAGE_BYTES_SIGNATURE, NORMALIZED_SIGNATURE, SERVING_DEFAULT

_MS = 1e3


def define_flags(values: flags.FlagValues) -> None:
    """Defines this script's flags on `values`."""
    harness.define_model_flags(values, batch_size=256)
    values.set_default("networks", ["16-4", "28-10"])
    values.set_default("members", ["2"])
    flags.DEFINE_integer(
        "latency_rounds", 100, "Timed batch-1 calls per signature.", flag_values=values
    )


def signature_call(function, name: str, value: tf.Tensor) -> Callable[[], None]:
    """One synchronous call of a loaded signature (waits for the probabilities)."""

    def call() -> None:
        function(**{name: value})["probabilities"].numpy()

    return call


def graph_op_counts(path: str) -> collections.Counter:
    """How often each op type occurs in a SavedModel's graph and its functions."""
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as stream:
        saved.ParseFromString(stream.read())
    graph = saved.meta_graphs[0].graph_def
    counts = collections.Counter(node.op for node in graph.node)
    for function in graph.library.function:
        counts.update(node.op for node in function.node_def)
    return counts


def kernel_profile(call: Callable[[], None]) -> dict[str, Any]:
    """Kernels one call ran (TF profiler), as profile_step.py breaks a step down."""
    with tempfile.TemporaryDirectory() as trace_dir:
        tf.profiler.experimental.start(trace_dir)
        call()
        tf.profiler.experimental.stop()
        return breakdown(op_times(trace_dir), steps=1)


def percentiles_ms(durations: list[float]) -> dict[str, float]:
    """p50 and p99 of `durations` (seconds), in milliseconds."""
    return {
        "p50_ms": float(np.percentile(durations, 50)) * _MS,
        "p99_ms": float(np.percentile(durations, 99)) * _MS,
    }


def timing_ratios(timing: dict[str, Any], reference: dict[str, Any], name: str) -> dict[str, float]:
    """`timing` against `reference` (both from `harness.interleaved_medians`), two ways.

    `over_<name>` is the ratio of the medians; `paired_over_<name>` the median over rounds of
    each round's time over the reference's in that round, which a shared machine's drift
    between rounds does not move.
    """
    return {
        f"over_{name}": timing["median_s"] / reference["median_s"],
        f"paired_over_{name}": statistics.median(
            ours / theirs for ours, theirs in zip(timing["durations_s"], reference["durations_s"])
        ),
    }


def time_network(network: str, values: flags.FlagValues) -> list[dict[str, Any]]:
    """The throughput, latency and graph records of each M of `network`."""
    records = []
    for members in harness.member_counts(values):
        config = harness.bench_config(
            network, members, batch_size=values.batch_size, precision=values.precision
        )
        keras.utils.set_random_seed(0)
        model = build_model(config)
        with tempfile.TemporaryDirectory() as directory:
            path = export_saved_model(model, directory, config.spec)
            signatures = tf.saved_model.load(path).signatures
            record = harness.run_record("serving", network, config)
            records += throughput_records(model, signatures, config, record, values)
            records += latency_records(signatures, config, record, values)
            records.append(graph_record(path, model, signatures, config, record))
    return records


def throughput_records(model, signatures, config, record, values) -> list[dict[str, Any]]:
    """Batch throughput of the Keras prediction and the two image signatures, interleaved."""
    normalized = eval_images(config)
    pixels, _ = harness.synthetic_data(config.batch_size, config.spec, seed=0)
    timings = harness.interleaved_medians(
        {
            "keras_predict": predict_function(model, normalized),
            NORMALIZED_SIGNATURE: signature_call(
                signatures[NORMALIZED_SIGNATURE], "images", normalized
            ),
            SERVING_DEFAULT: signature_call(
                signatures[SERVING_DEFAULT], "images", tf.constant(pixels)
            ),
        },
        values.warmup_steps,
        values.timed_steps,
    )
    return [
        {
            **record,
            "bench": "serving_throughput",
            "variant": variant,
            "median_s": timing["median_s"],
            "images_per_s": config.batch_size / timing["median_s"],
            **timing_ratios(timing, timings["keras_predict"], "keras"),
            "timed_steps": len(timing["durations_s"]),
            "durations_s": timing["durations_s"],
        }
        for variant, timing in timings.items()
    ]


def latency_records(signatures, config, record, values) -> list[dict[str, Any]]:
    """Batch-1 latency percentiles of the uint8 and the encoded-image signatures."""
    pixels, _ = harness.synthetic_data(1, config.spec, seed=1)
    timings = harness.interleaved_medians(
        {
            SERVING_DEFAULT: signature_call(
                signatures[SERVING_DEFAULT], "images", tf.constant(pixels)
            ),
            IMAGE_BYTES_SIGNATURE: signature_call(
                signatures[IMAGE_BYTES_SIGNATURE],
                "image_bytes",
                tf.constant([tf.io.encode_png(pixels[0]).numpy()]),
            ),
        },
        values.warmup_steps,
        values.latency_rounds,
    )
    return [
        {
            **record,
            "bench": "serving_latency",
            "batch_size": 1,
            "signature": signature,
            **percentiles_ms(timing["durations_s"]),
            "rounds": len(timing["durations_s"]),
            "durations_s": timing["durations_s"],
        }
        for signature, timing in timings.items()
    ]


def graph_record(path: str, model, signatures, config, record) -> dict[str, Any]:
    """Op types of the exported graph; kernels one batch ran through Keras and the export."""
    op_counts = graph_op_counts(path)
    pixels, _ = harness.synthetic_data(config.batch_size, config.spec, seed=0)
    served = signature_call(signatures[SERVING_DEFAULT], "images", tf.constant(pixels))
    return {
        **record,
        "bench": "serving_graph",
        "graph_op_counts": dict(op_counts.most_common()),
        "fused_batch_norm_ops": op_counts["FusedBatchNormV3"],
        "py_func_ops": sum(op_counts[op] for op in ("PyFunc", "PyFuncStateless", "EagerPyFunc")),
        "keras_predict_kernels": kernel_profile(predict_function(model, eval_images(config))),
        "serving_default_kernels": kernel_profile(served),
    }


def run(values: flags.FlagValues) -> None:
    """Measures each network of --networks and prints its JSON lines."""
    harness.emit_networks(values, time_network)


if __name__ == "__main__":
    harness.run_script(define_flags, run)
