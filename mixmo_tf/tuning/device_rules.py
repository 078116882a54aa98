"""What `--precision=auto` means on a device that is not timed: the device rule.

Training on a CPU times its own step instead (`mixmo_tf.tuning.precision_choice`): CPU flags
cannot tell whether bfloat16 pays (AMX-BF16 tiles make it several times faster; AVX512_BF16
alone is faster on some CPUs and slower on others; without either it is emulated and much
slower; float16 has no fast CPU kernels). The measurements are on the documentation's speed
page, with the commands that made them.

Elsewhere "auto" follows this rule (`default_precision`): GPUs of compute capability >= 7.0
(tensor cores) get mixed_float16, TensorFlow's recommendation (not measured here: no GPU);
other GPUs float32; multi-worker and TPU runs, whose workers must agree without each
measuring, and work that does not train (import, evaluation), take mixed_bfloat16 on CPUs
with AMX-BF16 and float32 elsewhere.
"""

from __future__ import annotations

import dataclasses

import keras

from mixmo_tf.config.choices import PRECISIONS
from mixmo_tf.config.settings import Config
from mixmo_tf.tuning.machine import CPU_INFO, cpu_flags

_TENSOR_CORE_CAPABILITY = (7, 0)


def cpu_has_amx_bf16(cpu_info_path: str = CPU_INFO) -> bool:
    """Whether this CPU advertises AMX-BF16 tiles (Linux /proc/cpuinfo; False elsewhere)."""
    return "amx_bf16" in cpu_flags(cpu_info_path)


def gpu_capability() -> tuple[int, ...] | None:
    """The compute capability of the first GPU that Keras' backend computes on, `()` if the
    backend does not say it, None without a GPU."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return None
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability")
        return tuple(capability or ())
    if backend == "torch":
        import torch

        return tuple(torch.cuda.get_device_capability(0)) if torch.cuda.is_available() else None
    if backend == "jax":
        import jax

        gpus = [device for device in jax.devices() if device.platform == "gpu"]
        if not gpus:
            return None
        capability = getattr(gpus[0], "compute_capability", "")  # e.g. "8.0"
        return tuple(int(part) for part in capability.split(".") if part.isdigit())
    return None


def default_precision() -> str:
    """The faster precision for this machine's training device (see the module docstring)."""
    capability = gpu_capability()
    if capability is not None:
        has_tensor_cores = capability != () and capability >= _TENSOR_CORE_CAPABILITY
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
