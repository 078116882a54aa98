"""How long `read_torch_file` takes on a WRN-28-10 MixMo checkpoint, and how much memory.

Writes a synthetic checkpoint shaped like the MixMo authors' WRN-28-10 M=2 CIFAR-100 one, in
both torch.save formats (tests/helpers/torch_writer.py): {"epoch", "classifier_state_dict"
(their 158 names and shapes: 36,619,368 float32 values, 146.5 MB),
"classifier_optimizer_state_dict" (SGD: a momentum buffer per parameter, as the authors save
it)}. With the momentum buffers (the default) the file is ~293 MB; --nomomentum leaves them
out: ~146 MB, the weights alone.

Each measurement runs in a fresh process that imports only numpy and the reader. One times
`read_torch_file`, then touches every tensor (a sum over each, as a conversion to TensorFlow
reads them all) and reports its peak RSS over its RSS before the read; another reports
tracemalloc's peak of the Python allocations during the read. The peak is VmHWM of
/proc/self/status, not getrusage's ru_maxrss: on Linux a child's ru_maxrss starts at its
parent's peak (fork, then exec), which here holds TensorFlow and the written checkpoint (a
small child of a large process reports about its parent's peak at once; VmHWM, its own). The
files were just written, so they come from the page cache (a cold read adds the disk's
time). The formats alternate round by round, after one untimed round. One JSON line per
format, with the targets: a read <= 10 s and a peak memory growth <= 3x the file size.

Example: python bench/read_torch_file.py --rounds=5
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import numpy as np
from absl import flags

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPOSITORY, "tests"))  # the tests' writer of torch.save files

from helpers.torch_writer import write_torch_file  # noqa: E402

from mixmo_tf.importing.torch_format import read_torch_file  # noqa: E402

_CHILD = "--child"  # argv[1] of a measuring child: --child PATH KIND
_KINDS = ("time", "tracemalloc")
_MAX_SECONDS = 10.0  # the targets
_MAX_GROWTH_OVER_FILE = 3.0
_STEM_CHANNELS = 16


def define_flags(values: flags.FlagValues) -> None:
    """Defines this script's flags on `values`."""
    flags.DEFINE_integer("rounds", 5, "Timed rounds per format.", flag_values=values)
    flags.DEFINE_bool(
        "momentum",
        True,
        "Include the optimizer's momentum buffers (~293 MB file); without, ~146 MB.",
        flag_values=values,
    )
    flags.DEFINE_string(
        "directory",
        "",
        "Where to write the files (default: a temporary folder, removed).",
        flag_values=values,
    )


# ---- the checkpoint --------------------------------------------------------------------


def wrn_state_shapes(
    depth: int = 28, width: int = 10, members: int = 2, classes: int = 100
) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of the authors' WideResNetMixMo state dict, in its order: M stems, three
    groups of (depth - 4) / 6 pre-activation blocks, the final batch norm, M heads."""
    shapes = [(f"list_conv1.{m}.weight", (_STEM_CHANNELS, 3, 3, 3)) for m in range(members)]
    channels = _STEM_CHANNELS
    for group, out_channels in enumerate((16 * width, 32 * width, 64 * width), start=1):
        for block in range((depth - 4) // 6):
            name = f"layer{group}.{block}"
            shapes += _batch_norm_shapes(f"{name}.bn1", channels)
            shapes.append((f"{name}.conv1.weight", (out_channels, channels, 3, 3)))
            shapes += _batch_norm_shapes(f"{name}.bn2", out_channels)
            shapes.append((f"{name}.conv2.weight", (out_channels, out_channels, 3, 3)))
            if channels != out_channels:
                shapes.append((f"{name}.shortcut.0.weight", (out_channels, channels, 1, 1)))
            channels = out_channels
    shapes += _batch_norm_shapes("bn1", channels)
    for m in range(members):
        shapes += [(f"list_fc.{m}.weight", (classes, channels)), (f"list_fc.{m}.bias", (classes,))]
    return shapes


def _batch_norm_shapes(name: str, channels: int) -> list[tuple[str, tuple[int, ...]]]:
    fields = ("weight", "bias", "running_mean", "running_var")
    return [(f"{name}.{field}", (channels,)) for field in fields] + [
        (f"{name}.num_batches_tracked", ())
    ]


def wrn_checkpoint(
    momentum: bool, seed: int = 0, depth: int = 28, width: int = 10
) -> dict[str, Any]:
    """A checkpoint as the authors' Learner saves it, random values of the right shapes
    (of WRN-28-10 M=2 by default)."""
    rng = np.random.default_rng(seed)
    state = collections.OrderedDict()
    for name, shape in wrn_state_shapes(depth, width):
        if name.endswith("num_batches_tracked"):
            state[name] = np.array(0, np.int64)
        elif name.endswith("running_var"):  # a variance, which the import checks is >= 0
            state[name] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        else:
            state[name] = rng.standard_normal(shape, dtype=np.float32)
    parameters = [
        name for name in state if not name.rsplit(".", 1)[1].startswith(("running", "num"))
    ]
    buffers = {
        index: {"momentum_buffer": rng.standard_normal(state[name].shape, dtype=np.float32)}
        for index, name in enumerate(parameters)
    }
    group = {"lr": 0.1, "momentum": 0.9, "dampening": 0, "weight_decay": 0, "nesterov": True}
    optimizer = {
        "state": buffers if momentum else {},
        "param_groups": [{**group, "params": list(range(len(parameters)))}],
    }
    return {
        "epoch": 300,
        "classifier_state_dict": state,
        "classifier_optimizer_state_dict": optimizer,
    }


# ---- one measurement, in a fresh process -----------------------------------------------


def _tensors(value: Any) -> Iterator[np.ndarray]:
    """Every array in a read checkpoint."""
    if isinstance(value, np.ndarray):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


def _status_kib(field: str) -> int:
    """A memory field of /proc/self/status in KiB: VmRSS (resident now), VmHWM (peak)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def measure(path: str, kind: str) -> dict[str, Any]:
    """One read of `path` by this process. "time": the read's and the touch's seconds, and
    peak RSS over RSS before the read (MiB); "tracemalloc": the read's peak of Python
    allocations (MiB; the mapped file is not one)."""
    if kind == "tracemalloc":
        tracemalloc.start()
        read_torch_file(path)
        return {"tracemalloc_peak_mib": tracemalloc.get_traced_memory()[1] / 2**20}
    rss_before = _status_kib("VmRSS")
    start = time.perf_counter()
    checkpoint = read_torch_file(path)
    read_s = time.perf_counter() - start
    tensors = list(_tensors(checkpoint))
    start = time.perf_counter()
    for tensor in tensors:
        np.sum(tensor, dtype=np.float64)
    touch_s = time.perf_counter() - start
    return {
        "read_s": read_s,
        "touch_s": touch_s,
        "tensors": len(tensors),
        "rss_growth_mib": (_status_kib("VmHWM") - rss_before) / 1024,
    }


def child_record(path: str, kind: str, script: str = os.path.abspath(__file__)) -> dict[str, Any]:
    """`measure(path, kind)` in a fresh process (this script as a child), or what `script`
    prints as `script --child PATH KIND` (another bench script's measurement)."""
    command = [sys.executable, script, _CHILD, path, kind]
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    if finished.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{finished.stderr}")
    return json.loads(finished.stdout)


# ---- the benchmark ---------------------------------------------------------------------


def _format_record(path: str, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The line of one format: medians of the times, maxima of the memory peaks."""
    file_mib = os.path.getsize(path) / 2**20
    read_times = [measured["read_s"] for measured in rounds]
    growth = max(measured["rss_growth_mib"] for measured in rounds)
    median_read_s = statistics.median(read_times)
    return {
        "file_mib": file_mib,
        "tensors": rounds[0]["tensors"],
        "median_read_s": median_read_s,
        "read_durations_s": read_times,
        "median_touch_s": statistics.median(measured["touch_s"] for measured in rounds),
        "peak_rss_growth_mib": growth,
        "peak_rss_growth_over_file": growth / file_mib,
        "tracemalloc_peak_mib": max(measured["tracemalloc_peak_mib"] for measured in rounds),
        "within_targets": median_read_s <= _MAX_SECONDS
        and growth <= _MAX_GROWTH_OVER_FILE * file_mib,
    }


def run(values: flags.FlagValues) -> None:
    """Writes the checkpoint in both formats, measures each round by round, prints lines."""
    import harness  # TensorFlow, for the environment record: only here, not in the children

    directory = values.directory or tempfile.mkdtemp(prefix="read_torch_file_")
    try:
        checkpoint = wrn_checkpoint(values.momentum)
        paths = {}
        for name, legacy in (("zip", False), ("legacy", True)):
            paths[name] = os.path.join(directory, f"wrn28-10_m2_{name}.pt")
            write_torch_file(checkpoint, paths[name], legacy=legacy)
        del checkpoint
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in paths}
        for round_index in range(1 + values.rounds):  # round 0 is untimed
            for name, path in paths.items():
                measured = {
                    key: value for kind in _KINDS for key, value in child_record(path, kind).items()
                }
                if round_index:
                    rounds[name].append(measured)
        for name, path in paths.items():
            harness.emit(
                {
                    "bench": "read_torch_file",
                    "format": name,
                    "momentum_buffers": values.momentum,
                    **_format_record(path, rounds[name]),
                }
            )
    finally:
        if not values.directory:
            shutil.rmtree(directory)


if __name__ == "__main__":
    if sys.argv[1:2] == [_CHILD]:
        print(json.dumps(measure(*sys.argv[2:4])))
    else:
        import harness

        harness.run_script(define_flags, run)
