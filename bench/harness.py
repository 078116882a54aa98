"""Measurement helpers shared by the bench/ scripts: environment, timing, memory, FLOPs, flags.

Every script prints one JSON line per measurement through `emit`, which adds the environment
(backend and versions, threads, cores, CPU model, oneDNN, the command), so each line stands on
its own. Timings interleave the compared variants (`interleaved_medians`) so that a shared
machine's slow drifts hit all of them alike, and report medians over timed rounds after warm-up.

This module runs on every Keras backend and imports no TensorFlow of its own: what differs
between the backends is in `frameworks`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import frameworks
import keras
import numpy as np
from absl import app, flags

from mixmo_tf.config import Config
from mixmo_tf.config.backbones import backbone_entry
from mixmo_tf.config.choices import PRECISIONS
from mixmo_tf.config.datasets import DatasetSpec
from mixmo_tf.models import MixMoModel, MixMoNetwork
from mixmo_tf.models.build import build_model
from mixmo_tf.tuning import machine
from mixmo_tf.tuning.device_rules import resolve_device_defaults

PLAIN = 1  # M of the plain single network, the baseline of every ratio.
GIGA = 1e9  # FLOPs per GFLOP
_CPU_INFO = machine.CPU_INFO  # tests point it at a file of their own
# The CPU flags each result line records.
_RECORDED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
_PROCESS_STATUS = "/proc/self/status"
# A network as [backbone:]depth-width, e.g. 28-10 (a WRN) or preact_resnet:18-2.
_NETWORK = re.compile(r"(?:(?P<backbone>[a-z0-9_]+):)?(?P<depth>\d+)-(?P<width>\d+)")
# The dataset a backbone is benchmarked on: its paper dataset's shapes (data is synthetic).
_BENCH_DATASETS = {"wrn": "cifar100", "preact_resnet": "tiny_imagenet"}

_Key = TypeVar("_Key")


# ---- environment and output ------------------------------------------------------------------


def _proc_field(path: str, key: str) -> str | None:
    """Value after the colon of the first `key` line of a /proc-style file, or None."""
    try:
        with open(path) as stream:
            for line in stream:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name (`mixmo_tf.tuning.machine`)."""
    return machine.cpu_model(_CPU_INFO)


def cpu_flags() -> list[str]:
    """The CPU features behind this project's precision and speed figures that this CPU has.

    AVX-512 BF16 and AMX-BF16 decide whether bfloat16 is fast (bench/README.md).
    """
    return [flag for flag in machine.cpu_flags(_CPU_INFO) if flag in _RECORDED_FLAGS]


def machine_environment() -> dict[str, Any]:
    """What a measurement depends on besides its settings and the backend, and its command."""
    return {
        "keras": keras.__version__,
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        # Other work on a shared machine slows a measurement: the 1-minute load average.
        "load_average": round(os.getloadavg()[0], 2),
        "command": "python " + " ".join(sys.argv),
    }


def environment() -> dict[str, Any]:
    """What a measurement depends on besides its own settings, and the command that made it:
    the backend's framework, threads and device (`frameworks.framework_facts`) and the
    machine."""
    return {**frameworks.framework_facts(), **machine_environment()}


@contextlib.contextmanager
def progress_to_stderr() -> Iterator[None]:
    """Sends what library code prints (progress bars, tfds notices) to stderr, keeping
    stdout for the JSON lines."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def emit(record: dict[str, Any], measured_here: bool = True) -> None:
    """Prints `record` plus `environment()` as one JSON line, flushed at once.

    With `measured_here` False (a record of measurements made in child processes, which
    holds their backend's facts) only `machine_environment()` is added.
    """
    environment_fields = environment() if measured_here else machine_environment()
    print(json.dumps({**record, **environment_fields}), flush=True)


# ---- timing ----------------------------------------------------------------------------------


def interleaved_medians(
    functions: Mapping[_Key, Callable[[], None]], warmup: int, timed: int
) -> dict[_Key, dict[str, Any]]:
    """Times the functions in alternating rounds (A, B, A, B, ...) and takes medians.

    Interleaving makes slow drifts of a shared machine (other jobs, thermal state) hit every
    function alike, so their ratio stays meaningful. Each function must synchronise itself
    (return only once its work is done).

    Args:
        functions: what to time, by name.
        warmup: untimed rounds first (tracing, compilation, allocation).
        timed: timed rounds, >= 1.

    Returns:
        Per name `{"median_s": median seconds, "durations_s": every timed duration}`.
    """
    if timed < 1:
        raise ValueError(f"timed must be >= 1. Received: timed={timed}")
    durations: dict[_Key, list[float]] = {name: [] for name in functions}
    for round_index in range(warmup + timed):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            elapsed = time.perf_counter() - start
            if round_index >= warmup:
                durations[name].append(elapsed)
    return {
        name: {"median_s": statistics.median(times), "durations_s": times}
        for name, times in durations.items()
    }


def time_models(
    configs: Mapping[_Key, Config],
    prepare: Callable[[MixMoModel, Config], Callable[[], None]],
    warmup: int,
    timed: int,
) -> tuple[dict[_Key, dict[str, Any]], dict[_Key, MixMoModel]]:
    """Builds each config's model (seed 0) and times `prepare(model, config)`'s functions.

    The functions are timed interleaved (`interleaved_medians`), so the configurations of one
    comparison share the machine's drifts.

    Returns:
        The timings by key, and the models by key (for their FLOP counts).
    """
    models, functions = {}, {}
    for key, config in configs.items():
        keras.utils.set_random_seed(0)
        models[key] = build_model(config)
        functions[key] = prepare(models[key], config)
    return interleaved_medians(functions, warmup, timed), models


def run_record(bench: str, network: str, config: Config) -> dict[str, Any]:
    """The fields naming what was measured: bench, network, M, batch, precision, XLA."""
    return {
        "bench": bench,
        "network": network_name(network),
        "members": config.num_members,
        "batch_size": config.batch_size,
        "precision": config.precision,
        "jit_compile": config.jit_compile,
    }


def throughput(median_s: float, images: int, flops: float) -> dict[str, float]:
    """Images per second and achieved GFLOP/s of work taking `median_s` seconds."""
    return {"images_per_s": images / median_s, "achieved_gflops": flops / GIGA / median_s}


def ratio_records(
    bench: str, network: str, quantity: str, by_members: Mapping[int, float]
) -> list[dict[str, Any]]:
    """One record per MixMo M of `network`: its `quantity` over the plain network's (M = 1).

    Empty when the plain network was not measured.
    """
    if PLAIN not in by_members:
        return []
    return [
        {
            "bench": bench,
            "network": network_name(network),
            "members": members,
            "quantity": quantity,
            "mixmo_over_plain": value / by_members[PLAIN],
        }
        for members, value in by_members.items()
        if members != PLAIN
    ]


def emit_networks(
    values: flags.FlagValues,
    time_network: Callable[[str, flags.FlagValues], list[dict[str, Any]]],
) -> None:
    """Measures each network of --networks with `time_network` and emits its records.

    Each record gets this process's peak resident memory so far (which covers every
    configuration measured in the process until then).
    """
    for network in values.networks:
        for record in time_network(network, values):
            emit({**record, "peak_rss_mib": peak_rss_mib()})


# ---- data and memory -------------------------------------------------------------------------


def synthetic_data(
    num_examples: int, spec: DatasetSpec, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Random data shaped like `spec`'s in memory: uint8 `(N, H, W, C)`, int64 `(N,)`.

    Benchmarks need the shapes and dtypes of the real data, not its content, and no download.
    """
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (num_examples, *spec.image_shape), dtype=np.uint8)
    labels = rng.integers(0, spec.num_classes, num_examples, dtype=np.int64)
    return images, labels


def synthetic_batches(config: Config, count: int, seed: int) -> list[dict[str, Any]]:
    """`count` training batches of `config`'s shapes with random content, as backend tensors.

    The training step's input (what the pipeline yields, `mixmo_tf.data.train_dataset`):
    `images` `(B, M, H, W, C)` float32 normalised, `labels` `(B, M)` int32, and with input
    mixing `partner_images` / `partner_labels` of the same shapes. Made without tf.data, so
    that a step can be timed on any backend; the step's work does not depend on the content.
    """
    rng = np.random.default_rng(seed)
    slots = (config.batch_size, config.num_members)
    names = ("images", "labels")
    if config.msda != "none":
        names += ("partner_images", "partner_labels")
    return [
        {
            name: keras.ops.convert_to_tensor(
                rng.integers(0, config.spec.num_classes, slots, dtype=np.int32)
                if name.endswith("labels")
                else rng.standard_normal((*slots, *config.spec.image_shape), dtype=np.float32)
            )
            for name in names
        }
        for _ in range(count)
    ]


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB so far.

    VmHWM of /proc/self/status (Linux), else `getrusage` ru_maxrss (KiB on Linux).
    """
    high_water = _proc_field(_PROCESS_STATUS, "VmHWM")  # e.g. "654321 kB"
    if high_water:
        return int(high_water.split()[0]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- compute ---------------------------------------------------------------------------------


def matmul_ceiling_gflops(dtype: str, size: int = 4096, repeats: int = 5) -> float:
    """This machine's achieved GFLOP/s on a square `size` matmul in `dtype`.

    The practical ceiling a convolution network's training can approach: 2 * size^3 FLOPs
    per product, median of `repeats` timed products after one warm-up, compiled as the
    backend compiles a training step (`frameworks.compiled`). The product is summed inside
    the function (size^2 adds, negligible) so that reading one scalar synchronises without
    copying the matrix out.

    Args:
        dtype: "float32", "bfloat16" or "float16".
        size: matrix side.
        repeats: timed products.
    """
    operands = np.random.default_rng(0).random((2, size, size), dtype=np.float32)
    left, right = (keras.ops.cast(operand, dtype) for operand in operands)
    product_sum = frameworks.compiled(lambda a, b: keras.ops.sum(keras.ops.matmul(a, b)))
    timing = interleaved_medians(
        {"matmul": lambda: float(product_sum(left, right))}, warmup=1, timed=repeats
    )
    return 2 * size**3 / GIGA / timing["matmul"]["median_s"]


def compute_dtype(precision: str) -> str:
    """The dtype layers compute in under the Keras policy `precision` (resolved)."""
    return keras.DTypePolicy(precision).compute_dtype


def _forward_flops(layer: keras.layers.Layer) -> float:
    """Forward FLOPs per image of the Conv2D and Dense layers in `layer` (nested models too).

    A layer's forward pass costs 2 * output positions * kernel size: for a convolution
    2 * H_out * W_out * k_h * k_w * C_in * C_out, for a dense layer 2 * in * out (one multiply
    and one add per weight and position). Each layer is assumed to be called once in its
    network (true of the parts of a `MixMoNetwork`).
    """
    if isinstance(layer, keras.Model):
        return sum(_forward_flops(inner) for inner in layer.layers)
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
        return 2.0 * math.prod(layer.output.shape[1:-1]) * math.prod(layer.kernel.shape)
    return 0.0


def _part_flops(network: MixMoNetwork) -> tuple[float, float]:
    """(forward FLOPs per image of all stems, of the core and all heads) of `network`."""
    stems = sum(_forward_flops(stem) for stem in network.stems)
    rest = _forward_flops(network.core) + sum(_forward_flops(head) for head in network.heads)
    return stems, rest


def inference_flops(network: MixMoNetwork, batch_size: int) -> float:
    """Forward FLOPs of the Conv2D and Dense layers of `network` for `batch_size` inputs.

    Read from the network's parts (`_forward_flops`). Biases, batch norm, activations,
    pooling and the mixing are not counted: they are a small fraction of a ResNet's work.
    Every member's stem and head counts, as the ensemble prediction runs them all.
    """
    stems, rest = _part_flops(network)
    return batch_size * (stems + rest)


def training_flops(network: MixMoNetwork, batch_size: int) -> float:
    """Conv2D and Dense FLOPs of one training step of `network` on `batch_size` inputs.

    Counting rule: forward FLOPs as in `inference_flops`; the backward pass costs a weight
    gradient and an input gradient of the same size as the forward pass, so the core and
    heads cost 3x their forward FLOPs. The stems cost 2x: they read the images, whose
    gradient nothing needs. (Exact for one-layer stems, as the WRN's and PreActResNet's; a
    deeper stem's later layers would need their input gradient, which this leaves out.)
    """
    stems, rest = _part_flops(network)
    return batch_size * (2 * stems + 3 * rest)


# ---- configurations and flags ----------------------------------------------------------------


def parse_network(network: str) -> tuple[str, int, int]:
    """(backbone, depth, width) of a network written "[backbone:]depth-width".

    The backbone defaults to wrn: "28-10" is WRN-28-10, "preact_resnet:18-2" PreActResNet-18-2.
    """
    match = _NETWORK.fullmatch(network)
    if not match:
        raise ValueError(
            "A network is [backbone:]depth-width, e.g. 28-10 or preact_resnet:18-2. "
            f"Received: {network!r}"
        )
    return match["backbone"] or "wrn", int(match["depth"]), int(match["width"])


def network_name(network: str) -> str:
    """ "28-10" -> "WRN-28-10" (the name bench/results uses); otherwise the backbone's label."""
    backbone, depth, width = parse_network(network)
    if backbone == "wrn":
        return f"WRN-{depth}-{width}"
    return backbone_entry(backbone).label(depth, width)


def bench_config(network: str, members: int, **fields: Any) -> Config:
    """The Config of one benchmarked run, "auto" precision resolved by the device rule.

    The dataset is the backbone's paper dataset (CIFAR-100 for the WRN, Tiny ImageNet for
    PreActResNet; CIFAR-100 for others): it sets the image shape and the classes.

    M > 1 is Cut-MixMo; M = 1 is the plain network: no mixing, b = 1 and no input mixing,
    whatever `fields` say, so one set of flags describes both sides of a comparison.

    Args:
        network: "[backbone:]depth-width".
        members: M.
        **fields: other Config fields (batch_size, precision, ...).
    """
    backbone, depth, width = parse_network(network)
    if members == PLAIN:
        fields.update(batch_repetitions=1, msda="none")
    config = Config(
        dataset=_BENCH_DATASETS.get(backbone, "cifar100"),
        model_dir="/tmp/unused",
        backbone=backbone,
        depth=depth,
        width=width,
        num_members=members,
        mixing="none" if members == PLAIN else "cutmix",
        **fields,
    )
    return resolve_device_defaults(config)


def member_counts(values: flags.FlagValues) -> list[int]:
    """The --members flag as integers."""
    return [int(members) for members in values.members]


# What --precisions may name: every precision but "auto", which the scripts would resolve to
# one of these anyway and so compare a precision with itself.
PRECISION_CHOICES = tuple(p for p in PRECISIONS if p != "auto")


class _PrecisionListParser(flags.ListParser):
    """A comma-separated list of distinct precisions, each one of PRECISION_CHOICES."""

    def parse(self, argument: str | list[str]) -> list[str]:
        """The precisions of `argument`; a ValueError naming the first unknown or repeated one."""
        names = super().parse(argument)
        if not names:
            raise ValueError(f"name at least one precision of {', '.join(PRECISION_CHOICES)}")
        for name in names:
            if name not in PRECISION_CHOICES:
                raise ValueError(
                    f"{name!r} is not a precision; choose from {', '.join(PRECISION_CHOICES)}"
                )
            if names.count(name) > 1:
                raise ValueError(f"{name!r} is named twice; name each precision once")
        return names


def define_precisions_flag(values: flags.FlagValues, default: list[str], help_text: str) -> None:
    """Defines --precisions on `values`: a comma-separated list, e.g. float32,mixed_bfloat16.

    Given more than once it is refused rather than keeping only the last value (what absl
    does with a list flag), so a command repeating it (--precisions=float32
    --precisions=mixed_bfloat16) fails loudly instead of measuring one precision.
    """
    flags.DEFINE(
        _PrecisionListParser(),
        "precisions",
        default,
        f"{help_text} Comma-separated, given once.",
        flag_values=values,
        serializer=flags.CsvListSerializer(","),
        allow_overwrite=False,
    )


def define_model_flags(values: flags.FlagValues, batch_size: int) -> None:
    """Defines the flags of the scripts that time networks, on `values`."""
    flags.DEFINE_list(
        "networks",
        ["28-10", "16-4", "10-1"],
        "Networks as [backbone:]depth-width: 28-10 is WRN-28-10, preact_resnet:18-2 is "
        "PreActResNet-18-2 (on Tiny ImageNet's shapes).",
        flag_values=values,
    )
    flags.DEFINE_list(
        "members",
        ["2", "1"],
        "Values of M to compare (1 = the plain network: no mixing, b = 1, no MSDA).",
        flag_values=values,
    )
    # Rejected at parse time rather than after the first networks' timings.
    flags.register_validator(
        "networks",
        lambda networks: all(_NETWORK.fullmatch(network) for network in networks),
        "--networks must be written [backbone:]depth-width, e.g. 28-10,preact_resnet:18-2.",
        flag_values=values,
    )
    flags.register_validator(
        "members",
        lambda members: all(m.isdigit() and int(m) >= 1 for m in members),
        "--members must be positive integers, e.g. 2,1.",
        flag_values=values,
    )
    flags.DEFINE_integer("batch_size", batch_size, "Images (slots) per batch.", flag_values=values)
    flags.DEFINE_enum(
        "precision",
        "auto",
        list(PRECISIONS),
        "Compute precision; auto takes the device rule (mixmo_tf.tuning.device_rules."
        "default_precision), not a training run's measurement, and is recorded resolved.",
        flag_values=values,
    )
    flags.DEFINE_bool("jit_compile", False, "Compile with XLA.", flag_values=values)
    flags.DEFINE_integer(
        "warmup_steps", 2, "Untimed rounds (tracing, allocation).", flag_values=values
    )
    flags.DEFINE_integer(
        "timed_steps", 5, "Timed rounds; the median is reported.", flag_values=values
    )


def run_script(
    define_flags: Callable[[flags.FlagValues], None],
    run: Callable[[flags.FlagValues], None],
) -> None:
    """Entry point of a bench script: its flags on absl's global FLAGS, then `run(FLAGS)`.

    Only the script run as __main__ touches the global FLAGS; tests call `define_flags` and
    `run` on fresh FlagValues, so scripts imported together never clash.
    """
    defined_before = set(flags.FLAGS)
    define_flags(flags.FLAGS)
    # absl lists in --help the flags of the module that defined them; the shared ones come
    # from this module, so declare every new flag a key flag of the script (absl's name for
    # the main module is sys.argv[0]).
    for name in sorted(set(flags.FLAGS) - defined_before):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])

    def main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
        run(flags.FLAGS)

    app.run(main)
