"""How long importing a MixMo authors' WRN-28-10 checkpoint takes end to end, and its memory.

Writes the synthetic checkpoint of bench/read_torch_file.py (the authors' WRN-28-10 M=2
CIFAR-100 state-dict names and shapes, random values: 146.5 MB of weights; with the SGD
momentum buffers, as the authors save it, ~293 MB) in either torch.save format, then imports
it with `load_pytorch_checkpoint(path, model_dir, precision="float32")`: read the file,
infer the network, build and compile the Keras model, assign its weights, BN statistics and
momentum buffers, and (with a run folder) write run_config.json, the TF checkpoint with the
optimizer state, model.keras and imported_from.json.

Every measurement runs in a fresh process (so that its peak memory is this work's alone),
this script as a child, measured as bench/read_torch_file.py measures (VmRSS and VmHWM of
/proc/self/status; getrusage's ru_maxrss would start at the parent's peak). The child
imports TensorFlow, Keras and the import API first; its RSS then (`baseline_rss_mib`,
most of it TensorFlow) is the baseline, and `peak_rss_growth_mib` its peak RSS
over that baseline during the import. Kinds of child:
- "folder" / "memory": one `load_pytorch_checkpoint` call, with a new run folder / without
  (the model in memory only). Their times and peaks are the headline figures.
- "folder_phases" / "memory_phases" (--phases): the same work through the lower-level
  functions, each phase timed, with its peak RSS over the baseline (VmHWM is reset at each
  phase's start by writing 5 to /proc/self/clear_refs) and the RSS it leaves behind: read
  (`read_authors_checkpoint`), build (`import_config` and `build_model`: WRN, SGD slots),
  assign (`assign_authors_state`), then the file's arrays are dropped as `import_run` drops
  them (what they held resident: the mapped file), then write (`write_imported_run`). After
  them, the folder's two large writes are repeated alone (a TF checkpoint, `model.save`) to
  show what each adds.
The files were just written, so they are read from the page cache. Children of one round
run interleaved (file by file, kind by kind); after --warmup_rounds untimed rounds, times
are medians over --rounds rounds, memory peaks their maxima. One JSON line per (file,
folder or not), with the targets: an import <= 10 s and a peak RSS growth <= 3x the file.

Example: python bench/import_checkpoint.py --rounds=3
"""

from __future__ import annotations

import functools
import gc
import json
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import read_torch_file as read_bench  # bench/read_torch_file.py: the checkpoint, the children
from absl import flags

_MAX_SECONDS = 10.0  # the targets
_MAX_GROWTH_OVER_FILE = 3.0
_CONTENTS = {"momentum": True, "weights": False}  # name: with momentum buffers
_FORMATS = {"zip": False, "legacy": True}  # name: legacy torch.save format
_TARGETS = ("folder", "memory")  # a run folder written, or the model in memory only
_PHASES_SUFFIX = "_phases"
_PRECISION = "float32"
_MIB = 2**20


def define_flags(values: flags.FlagValues) -> None:
    """Defines this script's flags on `values`."""
    flags.DEFINE_string(
        "network",
        "28-10",
        "The WRN as depth-width (M=2, CIFAR-100's 100 classes); 28-10 is the authors'.",
        flag_values=values,
    )
    flags.DEFINE_integer("rounds", 3, "Timed rounds of each child.", flag_values=values)
    flags.DEFINE_integer(
        "warmup_rounds", 1, "Untimed rounds first (caches, page cache).", flag_values=values
    )
    flags.DEFINE_list(
        "contents",
        list(_CONTENTS),
        "Files to import: momentum (weights and SGD momentum buffers, as the authors save "
        "them: ~293 MB for WRN-28-10), weights (no optimizer state: ~146 MB).",
        flag_values=values,
    )
    flags.DEFINE_list(
        "formats", list(_FORMATS), "torch.save formats: zip, legacy.", flag_values=values
    )
    flags.DEFINE_list(
        "targets",
        list(_TARGETS),
        "folder: import into a new run folder; memory: the model only (no model_dir).",
        flag_values=values,
    )
    flags.DEFINE_bool(
        "phases",
        True,
        "Also time each phase (read, build, assign, write) in a child of its own.",
        flag_values=values,
    )
    flags.DEFINE_string(
        "directory",
        "",
        "Where to write the files and run folders (default: a temporary folder, removed).",
        flag_values=values,
    )
    flags.register_validator(
        "network",
        lambda network: re.fullmatch(r"\d+-\d+", network) is not None,
        "--network is a WRN's depth-width, e.g. 28-10.",
        flag_values=values,
    )
    for name, allowed in (("contents", _CONTENTS), ("formats", _FORMATS), ("targets", _TARGETS)):
        flags.register_validator(
            name,
            lambda chosen, allowed=allowed: bool(chosen) and set(chosen) <= set(allowed),
            f"--{name} takes some of {', '.join(allowed)}.",
            flag_values=values,
        )


# ---- one measurement, in a fresh process -----------------------------------------------


def _mib(kib: int) -> float:
    return kib / 1024


def _reset_peak() -> None:
    """Sets VmHWM to the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def _timed_phase(
    work: Callable[[], Any], baseline_kib: int, phases: dict[str, dict[str, float]], name: str
) -> Any:
    """Runs `work`, recording its seconds, its peak RSS and the RSS after it (MiB over
    `baseline_kib`) as `phases[name]`; returns what `work` returns."""
    _reset_peak()
    start = time.perf_counter()
    result = work()
    phases[name] = {
        "s": time.perf_counter() - start,
        "peak_growth_mib": _mib(read_bench._status_kib("VmHWM") - baseline_kib),
        "rss_growth_after_mib": _mib(read_bench._status_kib("VmRSS") - baseline_kib),
    }
    return result


def _variables_mib(variables: list) -> float:
    """The size of `variables`' values (from their shapes and dtypes: nothing is copied)."""
    return sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize for v in variables) / _MIB


def _size_mib(path: str) -> float:
    """The size of a file, or of the files under a folder."""
    if os.path.isfile(path):
        return os.path.getsize(path) / _MIB
    return sum(
        os.path.getsize(os.path.join(folder, name)) / _MIB
        for folder, _, names in os.walk(path)
        for name in names
    )


def measure(path: str, kind: str) -> dict[str, Any]:
    """One import of `path` by this process (`kind`: see the module's docstring): seconds,
    RSS before TensorFlow, the baseline RSS after the imports, peak RSS growth over it."""
    rss_start_kib = read_bench._status_kib("VmRSS")
    start = time.perf_counter()
    import harness  # TensorFlow, Keras and the project: all before the baseline

    from mixmo_tf.config import Config
    from mixmo_tf.importing import authors_checkpoint, pytorch_import
    from mixmo_tf.models import build
    from mixmo_tf.training import checkpoints
    from mixmo_tf.tuning.device_rules import resolve_device_defaults

    imports_s = time.perf_counter() - start
    target, phased = kind.removesuffix(_PHASES_SUFFIX), kind.endswith(_PHASES_SUFFIX)
    scratch = tempfile.mkdtemp(prefix="import_checkpoint_", dir=os.path.dirname(path))
    model_dir = os.path.join(scratch, "run") if target == "folder" else None
    try:
        with harness.progress_to_stderr():
            baseline_kib = read_bench._status_kib("VmRSS")
            record: dict[str, Any] = {
                "rss_before_tensorflow_mib": _mib(rss_start_kib),
                "imports_s": imports_s,
                "baseline_rss_mib": _mib(baseline_kib),
            }
            start = time.perf_counter()
            if not phased:
                pytorch_import.load_pytorch_checkpoint(path, model_dir, precision=_PRECISION)
                record["import_s"] = time.perf_counter() - start
                record["peak_rss_growth_mib"] = _mib(read_bench._status_kib("VmHWM") - baseline_kib)
                record["rss_growth_after_mib"] = _mib(
                    read_bench._status_kib("VmRSS") - baseline_kib
                )
                return record
            phases: dict[str, dict[str, float]] = {}
            checkpoint = _timed_phase(
                lambda: authors_checkpoint.read_authors_checkpoint(path),
                baseline_kib,
                phases,
                "read",
            )
            # As load_pytorch_checkpoint: the run folder records the config unresolved.
            config = authors_checkpoint.import_config(
                checkpoint.architecture,
                Config(precision=_PRECISION, model_dir=model_dir or ""),
                given=["precision"],
            )
            resolved = resolve_device_defaults(config)
            model = _timed_phase(lambda: build.build_model(resolved), baseline_kib, phases, "build")
            step = _timed_phase(
                lambda: pytorch_import.assign_authors_state(
                    model, checkpoint, resolved.derived_steps_per_epoch
                ),
                baseline_kib,
                phases,
                "assign",
            )
            # What the file's arrays (the mapped file) hold resident once the model has them;
            # `import_run` drops them so before writing the folder.
            imported = pytorch_import.import_record(checkpoint, step) if model_dir else None
            before_kib = read_bench._status_kib("VmRSS")
            checkpoint = None
            gc.collect()
            record["released_by_dropping_the_file_mib"] = _mib(
                before_kib - read_bench._status_kib("VmRSS")
            )
            if model_dir:
                _timed_phase(
                    lambda: pytorch_import.write_imported_run(model, config, imported),
                    baseline_kib,
                    phases,
                    "write",
                )
            record["import_s"] = time.perf_counter() - start
            record["phases"] = phases
            record["peak_rss_growth_mib"] = max(p["peak_growth_mib"] for p in phases.values())
            record["model_variables_mib"] = _variables_mib(model.weights)
            record["optimizer_variables_mib"] = _variables_mib(model.optimizer.variables)
            if model_dir:
                # The folder's two large writes alone: peak RSS over the RSS before each.
                record["write_parts"] = {}
                writes = {
                    "checkpoint": lambda folder: checkpoints.save(
                        checkpoints.checkpoint_manager(model, folder), step
                    ),
                    "keras_save": lambda folder: model.save(os.path.join(folder, "model.keras")),
                }
                for name, write in writes.items():
                    folder = tempfile.mkdtemp(dir=scratch)
                    before_kib = read_bench._status_kib("VmRSS")
                    _timed_phase(
                        functools.partial(write, folder), before_kib, record["write_parts"], name
                    )
                record["folder_mib"] = {
                    name: _size_mib(os.path.join(model_dir, name)) for name in os.listdir(model_dir)
                }
            return record
    finally:
        shutil.rmtree(scratch)


# ---- the benchmark ---------------------------------------------------------------------


def _median(rounds: list[dict[str, Any]], key: str) -> float:
    return statistics.median(measured[key] for measured in rounds)


def _phase_summary(rounds: list[dict[str, Any]], field: str) -> dict[str, dict[str, float]]:
    """Per phase (or write part): median seconds, maximal peak, median RSS left after it."""
    return {
        name: {
            "median_s": statistics.median(measured[field][name]["s"] for measured in rounds),
            "peak_growth_mib": max(measured[field][name]["peak_growth_mib"] for measured in rounds),
            "rss_growth_after_mib": statistics.median(
                measured[field][name]["rss_growth_after_mib"] for measured in rounds
            ),
        }
        for name in rounds[0][field]
    }


def summary_line(
    path: str, whole: list[dict[str, Any]], phased: list[dict[str, Any]]
) -> dict[str, Any]:
    """The line of one file and target: medians of the times, maxima of the memory peaks, and
    (if measured) the phases'."""
    file_mib = os.path.getsize(path) / _MIB
    growth = max(measured["peak_rss_growth_mib"] for measured in whole)
    median_s = _median(whole, "import_s")
    record = {
        "file_mib": file_mib,
        "rounds": len(whole),
        "median_import_s": median_s,
        "import_durations_s": [measured["import_s"] for measured in whole],
        "rss_before_tensorflow_mib": _median(whole, "rss_before_tensorflow_mib"),
        "median_imports_s": _median(whole, "imports_s"),
        "baseline_rss_mib": _median(whole, "baseline_rss_mib"),
        "peak_rss_growth_mib": growth,
        "peak_rss_growth_over_file": growth / file_mib,
        "rss_growth_after_mib": _median(whole, "rss_growth_after_mib"),
        "within_targets": median_s <= _MAX_SECONDS and growth <= _MAX_GROWTH_OVER_FILE * file_mib,
    }
    if phased:
        record["phases"] = _phase_summary(phased, "phases")
        record["phases_median_total_s"] = _median(phased, "import_s")
        record["phases_peak_rss_growth_mib"] = max(m["peak_rss_growth_mib"] for m in phased)
        record["released_by_dropping_the_file_mib"] = _median(
            phased, "released_by_dropping_the_file_mib"
        )
        record["model_variables_mib"] = phased[0]["model_variables_mib"]
        record["optimizer_variables_mib"] = phased[0]["optimizer_variables_mib"]
        if "write_parts" in phased[0]:
            record["write_parts"] = _phase_summary(phased, "write_parts")
            record["folder_mib"] = phased[0]["folder_mib"]
    return record


def run(values: flags.FlagValues) -> None:
    """Writes the files, measures each (file, target) round by round in children, prints
    one line each."""
    import harness  # TensorFlow, for the environment record: only here, not at import

    _, depth, width = harness.parse_network(values.network)
    directory = values.directory or tempfile.mkdtemp(prefix="import_checkpoint_")
    kinds = [(target, target) for target in values.targets]
    if values.phases:
        kinds += [(target, target + _PHASES_SUFFIX) for target in values.targets]
    try:
        paths = {}
        for content in values.contents:
            checkpoint = read_bench.wrn_checkpoint(_CONTENTS[content], depth=depth, width=width)
            for name in values.formats:
                paths[content, name] = os.path.join(
                    directory, f"wrn{depth}-{width}_m2_{content}_{name}.pt"
                )
                read_bench.write_torch_file(checkpoint, paths[content, name], _FORMATS[name])
            del checkpoint
        measured: dict[tuple[str, str, str], list[dict[str, Any]]] = {
            (*file, kind): [] for file in paths for _, kind in kinds
        }
        script = os.path.abspath(__file__)
        for round_index in range(values.warmup_rounds + values.rounds):
            for file, path in paths.items():
                for _, kind in kinds:
                    record = read_bench.child_record(path, kind, script=script)
                    if round_index >= values.warmup_rounds:
                        measured[(*file, kind)].append(record)
        for (content, name), path in paths.items():
            for target in values.targets:
                harness.emit(
                    {
                        "bench": "import_checkpoint",
                        "network": harness.network_name(values.network),
                        "members": 2,
                        "precision": _PRECISION,
                        "momentum_buffers": _CONTENTS[content],
                        "format": name,
                        "run_folder": target == "folder",
                        **summary_line(
                            path,
                            measured[content, name, target],
                            measured.get((content, name, target + _PHASES_SUFFIX), []),
                        ),
                    }
                )
    finally:
        if not values.directory:
            shutil.rmtree(directory)


if __name__ == "__main__":
    if sys.argv[1:2] == [read_bench._CHILD]:
        print(json.dumps(measure(*sys.argv[2:4])))
    else:
        import harness

        harness.run_script(define_flags, run)
