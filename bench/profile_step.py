"""Where the training step spends its time: TensorFlow profiler op times, by part and kernel.

Profiles `--timed_steps` compiled training steps (after warm-up) of each M with the TF
profiler and sums the executed ops' durations per step: by part of the network (stems,
mixing, convolutions, batch norm, ReLU, residual adds, pooling, heads, and the rest of the
step: mask sampling, loss, L2, optimizer, metrics), by kernel, and the share that runs in
oneDNN kernels (`_Mkl*`). Also counts the traces of the step function after the run
(1 = no retracing). Op times are summed over the executor threads, so on 2 cores they can
exceed the wall time; compare shares, not seconds.

Example: python bench/profile_step.py --networks=16-4 --members=2,1
"""

from __future__ import annotations

import collections
import glob
import os
import tempfile
from typing import Any

import harness
import keras
import tensorflow as tf
from absl import flags
from pipeline_batches import pipeline_batches
from tensorflow.tsl.profiler.protobuf import xplane_pb2
from train_step import define_run_flags, step_config, step_function

from mixmo_tf.models.build import build_model

_PS_PER_MS = 1e9
# Layer-name fragments of the WRN built by mixmo_tf.models, in matching order.
_PARTS = (
    ("stems", "stem_"),
    ("mixing", "feature_mixing"),
    ("heads", "head_"),
    ("batch_norm", "_bn"),
    ("relu", "_relu"),
    ("residual_add", "_add"),
    ("pooling", "/pool"),
    ("convolutions", "_conv"),
    ("convolutions", "_shortcut"),
)
_REST = "rest_of_step"
_TOP_KERNELS = 12


def define_flags(values: flags.FlagValues) -> None:
    """Defines this script's flags on `values` (the same as train_step.py's runs)."""
    define_run_flags(values)
    values.set_default("networks", ["16-4"])


def part_of(op_name: str) -> str:
    """The part of the step an op belongs to, from its name scope."""
    for part, fragment in _PARTS:
        if fragment in op_name:
            return part
    return _REST


def op_times(trace_dir: str) -> list[tuple[str, str, float]]:
    """(op name, kernel, milliseconds) of every op the TF executor ran in the trace."""
    (path,) = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
    space = xplane_pb2.XSpace()
    with open(path, "rb") as stream:
        space.ParseFromString(stream.read())
    ops = []
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):  # executor threads: one event per op
                continue
            for event in line.events:
                label = plane.event_metadata[event.metadata_id].name
                name, _, kernel = label.rpartition(":")
                if name and kernel != "Process":
                    ops.append((name, kernel, event.duration_ps / _PS_PER_MS))
    return ops


def breakdown(ops: list[tuple[str, str, float]], steps: int) -> dict[str, Any]:
    """Per-step op milliseconds by part and by kernel, and the oneDNN share."""
    by_part: collections.Counter = collections.Counter()
    by_kernel: collections.Counter = collections.Counter()
    for name, kernel, milliseconds in ops:
        by_part[part_of(name)] += milliseconds / steps
        by_kernel[kernel] += milliseconds / steps
    total = sum(by_kernel.values())
    onednn = sum(ms for kernel, ms in by_kernel.items() if kernel.startswith("_Mkl"))
    return {
        "op_ms_per_step": total,
        "onednn_share": onednn / total,
        "ms_by_part": dict(by_part.most_common()),
        "ms_by_kernel": dict(by_kernel.most_common(_TOP_KERNELS)),
    }


def count_traces(model: keras.Model) -> list[int]:
    """Makes `model.train_step` count its calls: Python runs it only when TF traces it."""
    traces = [0]
    train_step = model.train_step

    def counted(data):
        traces[0] += 1
        return train_step(data)

    model.train_step = counted
    return traces


def profile_network(network: str, values: flags.FlagValues) -> list[dict[str, Any]]:
    """One record per M of `network`: its profiled op-time breakdown."""
    records = []
    for members in harness.member_counts(values):
        config = step_config(network, members, values)
        keras.utils.set_random_seed(0)
        model = build_model(config)
        traces = count_traces(model)
        step = step_function(model, pipeline_batches(config))
        for _ in range(values.warmup_steps):
            step()
        with tempfile.TemporaryDirectory() as trace_dir:
            tf.profiler.experimental.start(trace_dir)
            for _ in range(values.timed_steps):
                step()
            tf.profiler.experimental.stop()
            ops = op_times(trace_dir)
        records.append(
            {
                **harness.run_record("profile_step", network, config),
                "batch_repetitions": config.batch_repetitions,
                "msda": config.msda,
                "profiled_steps": values.timed_steps,
                "traces": traces[0],
                **breakdown(ops, values.timed_steps),
            }
        )
    return records


def run(values: flags.FlagValues) -> None:
    """Profiles each network of --networks and prints its JSON lines."""
    harness.emit_networks(values, profile_network)


if __name__ == "__main__":
    harness.run_script(define_flags, run)
