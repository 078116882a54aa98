"""What a speed measurement depends on, read without TensorFlow: the CPU, TensorFlow's
version, whether oneDNN will be on, and where measured step times are kept.

Read before TensorFlow starts, because TF_ENABLE_ONEDNN_OPTS only counts if it is set before
`import tensorflow` (TensorFlow reads it once).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import json
import os
import platform

CPU_INFO = "/proc/cpuinfo"
ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
BACKEND_VARIABLE = "KERAS_BACKEND"
# The folder of this package's caches; default: $XDG_CACHE_HOME/mixmo_tf or ~/.cache/mixmo_tf.
CACHE_VARIABLE = "MIXMO_TF_CACHE"
# The /proc/cpuinfo flags that decide how fast bfloat16 and oneDNN are.
SPEED_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "avx_ne_convert",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)
# TensorFlow 2.21 turns oneDNN on by default on Linux x86 CPUs with one of these
# (tensorflow/core/util/port.cc, DefaultOneDnnPolicy); elsewhere it is off unless asked for.
ONEDNN_DEFAULT_FLAGS = (
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)
# Instructions that compute in bfloat16 natively; without them every bfloat16 operation is
# emulated in float32, which makes a training step many times slower (bench/README.md).
BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16", "avx_ne_convert")
_TRUE = ("1", "true")
_FALSE = ("0", "false")


@dataclasses.dataclass(frozen=True)
class Machine:
    """The facts a measured step time is valid for.

    Attributes:
        cpu_model: the CPU's model name.
        cpu_flags: which of `SPEED_FLAGS` the CPU has.
        tensorflow: the installed TensorFlow's version.
        is_linux_x86: whether TensorFlow's oneDNN default rule applies (Linux on x86-64).
    """

    cpu_model: str
    cpu_flags: tuple[str, ...]
    tensorflow: str
    is_linux_x86: bool

    @property
    def has_bfloat16_instructions(self) -> bool:
        """Whether bfloat16 can be faster than float32 here at all."""
        return any(flag in self.cpu_flags for flag in BFLOAT16_FLAGS)

    @property
    def onednn_on_by_default(self) -> bool:
        """Whether TensorFlow turns oneDNN on here when TF_ENABLE_ONEDNN_OPTS is not set."""
        return self.is_linux_x86 and any(flag in self.cpu_flags for flag in ONEDNN_DEFAULT_FLAGS)


def _cpu_info_field(key: str, cpu_info: str) -> str | None:
    """The value of the first `key` line of a /proc/cpuinfo-style file, or None."""
    try:
        with open(cpu_info) as stream:
            for line in stream:
                if line.split(":", 1)[0].strip() == key:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


@functools.cache
def tensorflow_version() -> str:
    """The installed TensorFlow's version, from its package metadata (without importing it)."""
    for distribution in importlib.metadata.packages_distributions().get("tensorflow", []):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def cpu_model(cpu_info: str = CPU_INFO) -> str:
    """The CPU's model name (Linux /proc/cpuinfo; `platform.processor()` elsewhere)."""
    return _cpu_info_field("model name", cpu_info) or platform.processor() or "unknown"


def cpu_flags(cpu_info: str = CPU_INFO) -> tuple[str, ...]:
    """Which of `SPEED_FLAGS` this CPU has (Linux /proc/cpuinfo; none known elsewhere)."""
    present = set((_cpu_info_field("flags", cpu_info) or "").split())
    return tuple(flag for flag in SPEED_FLAGS if flag in present)


def this_machine(cpu_info: str = CPU_INFO) -> Machine:
    """This machine's `Machine`."""
    return Machine(
        cpu_model=cpu_model(cpu_info),
        cpu_flags=cpu_flags(cpu_info),
        tensorflow=tensorflow_version(),
        is_linux_x86=platform.system() == "Linux" and platform.machine() in ("x86_64", "AMD64"),
    )


def onednn_requested() -> bool | None:
    """What TF_ENABLE_ONEDNN_OPTS asks for: True, False, or None if it is unset or not one
    of the values TensorFlow reads (0, 1, true, false)."""
    value = os.environ.get(ONEDNN_VARIABLE, "").strip().lower()
    return True if value in _TRUE else False if value in _FALSE else None


def cache_folder() -> str:
    """The folder of this package's caches (MIXMO_TF_CACHE, else the user's cache folder:
    XDG_CACHE_HOME if it is an absolute path, as the XDG Base Directory specification
    requires, else ~/.cache)."""
    if os.environ.get(CACHE_VARIABLE):
        return os.environ[CACHE_VARIABLE]
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mixmo_tf")


def keras_backend() -> str:
    """The backend Keras will compute with, read as Keras reads it (KERAS_BACKEND, else the
    "backend" of $KERAS_HOME/keras.json or ~/.keras/keras.json, else TensorFlow) without
    importing Keras, which would start TensorFlow before its oneDNN setting is made."""
    if os.environ.get(BACKEND_VARIABLE):
        return os.environ[BACKEND_VARIABLE]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json"), encoding="utf-8") as stream:
            backend = json.load(stream).get("backend")
    except (OSError, ValueError, AttributeError):
        backend = None
    return backend if isinstance(backend, str) else "tensorflow"
