"""Compute precision: the `--precision` choices, how "auto" is decided, the Keras policy.

Variables stay float32 in every mode (Keras mixed policies); only the compute dtype of the
layers changes, and `MixMoModel` casts the logits back to float32 before the loss, the
probabilities and the metrics.

Training with "auto" on a CPU measures (`mixmo_tf.tuning.precision_choice`): CPU flags
cannot tell whether bfloat16 pays. With AMX-BF16 tiles mixed_bfloat16 made the MixMo
WRN-28-10 step 3.5x faster than float32 (Intel Xeon, 2026-11-26); with AVX512_BF16 alone it
made the WRN-16-4 step 1.46x slower on an Intel Xeon and 1.7x faster on an AMD EPYC (issue
17). So the run's own step is timed in both, once per CPU, TensorFlow version, oneDNN
setting and network (`mixmo_tf.tuning`). Without bfloat16 instructions bfloat16 is emulated
(14.7x slower for the WRN-16-4 step on an avx2-only EPYC) and not timed; float16
has no fast CPU kernels (123x slower on WRN-10-1) and is never chosen on a CPU.

Elsewhere "auto" follows a rule (`default_precision`): GPUs of compute capability >= 7.0
(tensor cores) get mixed_float16, TensorFlow's recommendation (no GPU was available to
measure it here); other GPUs float32; multi-worker and TPU runs, whose workers must agree
without each measuring, and work that does not train (import, evaluation), take
mixed_bfloat16 on CPUs with AMX-BF16 and float32 elsewhere.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import keras
import tensorflow as tf

from mixmo_tf.config.choices import PRECISIONS
from mixmo_tf.config.settings import Config
from mixmo_tf.tuning.machine import CPU_INFO, cpu_flags

_TENSOR_CORE_CAPABILITY = (7, 0)


def cpu_has_amx_bf16(cpu_info_path: str = CPU_INFO) -> bool:
    """Whether this CPU advertises AMX-BF16 tiles (Linux /proc/cpuinfo; False elsewhere)."""
    return "amx_bf16" in cpu_flags(cpu_info_path)


def default_precision() -> str:
    """The faster precision for this machine's training device (see the module docstring)."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability")
        has_tensor_cores = capability is not None and tuple(capability) >= _TENSOR_CORE_CAPABILITY
        return "mixed_float16" if has_tensor_cores else "float32"
    return "mixed_bfloat16" if cpu_has_amx_bf16() else "float32"


def resolve_precision(precision: str) -> str:
    """`precision` itself, or this machine's default for "auto"."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {PRECISIONS}. Received: {precision!r}")
    return default_precision() if precision == "auto" else precision


def resolve_device_defaults(config: Config) -> Config:
    """`config` with `precision="auto"` replaced by this machine's choice.

    The resolved value is what `run_config.json` records, so a resume on a machine that
    would choose differently is refused instead of silently changing the numerics.
    """
    return dataclasses.replace(config, precision=resolve_precision(config.precision))


@contextlib.contextmanager
def dtype_policy(precision: str) -> Iterator[None]:
    """Layers and models created inside use the Keras dtype policy `precision`.

    The global policy is restored on exit, so building one mixed-precision model leaves
    later models (and other tests in the process) in float32.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(resolve_precision(precision))
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
