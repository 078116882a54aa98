"""oneDNN for training, chosen by measurement where TensorFlow leaves it off.

TensorFlow 2.21 turns its oneDNN kernels on by default only on x86 CPUs with VNNI, bfloat16
or AMX instructions. On CPUs without them (an avx2-only AMD EPYC) they still made the
training step 1.8-3x faster (bench/results/2026-11-27b/onednn_train_step.jsonl), but
batch-1 serving 23x slower: so only training turns them on, and only where the run's own
step is measured clearly faster with them. TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, when
it is imported: this runs before, and times the step in two child processes, one per
setting (each pays TensorFlow's start-up once; the times are cached, so a machine measures
a network once).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

from mixmo_tf.config.settings import Config
from mixmo_tf.tuning import rules
from mixmo_tf.tuning.machine import ONEDNN_VARIABLE, Machine, onednn_requested, this_machine
from mixmo_tf.tuning.step_times import StepTimeCache, step_key

# Multi-worker and TPU runs: every worker must compute alike, so none measures on its own.
_UNMEASURED_DISTRIBUTIONS = ("multi_worker_mirrored", "tpu")
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class MeasurementError(RuntimeError):
    """A child process could not time the step (the message ends with its last error line)."""


def _gpu_present() -> bool:
    """Whether an NVIDIA GPU is visible (training then runs there, not on the CPU)."""
    return os.path.exists("/dev/nvidia0") and os.environ.get("CUDA_VISIBLE_DEVICES") != ""


def _unmeasured_reason(config: Config, machine: Machine) -> str | None:
    """Why oneDNN stays as TensorFlow sets it for this run, or None if it is measured."""
    if onednn_requested() is not None:
        return ONEDNN_VARIABLE
    if not machine.is_linux_x86 or machine.onednn_on_by_default:
        return "TensorFlow's default"
    if config.distribution in _UNMEASURED_DISTRIBUTIONS:
        return f"TensorFlow's default; not measured for --distribution={config.distribution}"
    if _gpu_present():
        return "TensorFlow's default; training runs on the GPU"
    return None


def time_in_child(config: Config, precisions: tuple[str, ...], onednn: bool) -> dict[str, float]:
    """Step seconds by precision, measured by a child process with oneDNN on or off.

    Raises:
        MeasurementError: the child failed, or TensorFlow did not honour the setting.
    """
    environment = {
        **os.environ,
        ONEDNN_VARIABLE: "1" if onednn else "0",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": os.pathsep.join(
            filter(None, [_PACKAGE_PARENT, os.environ.get("PYTHONPATH")])
        ),
    }
    request = json.dumps({"config": dataclasses.asdict(config), "precisions": list(precisions)})
    process = subprocess.run(
        [sys.executable, "-m", "mixmo_tf.tuning.step_timing"],
        input=request,
        capture_output=True,
        text=True,
        env=environment,
    )
    lines = process.stdout.strip().splitlines()
    if process.returncode != 0 or not lines:
        error = (process.stderr.strip().splitlines() or ["no output"])[-1]
        raise MeasurementError(f"the timing process exited with {process.returncode}: {error}")
    result = json.loads(lines[-1])
    if result["onednn"] != onednn:
        raise MeasurementError(f"TensorFlow ignored {ONEDNN_VARIABLE}={int(onednn)}")
    return result["seconds"]


def choose_onednn(config: Config, cache: StepTimeCache | None = None) -> rules.OnednnChoice:
    """Whether `config`'s training should run with oneDNN, from cached or new step times.

    Call before TensorFlow is imported; `apply` then sets the choice for this process.
    A failed measurement keeps TensorFlow's default and says why.
    """
    machine = this_machine()
    reason = _unmeasured_reason(config, machine)
    if reason is not None:
        return rules.OnednnChoice(
            onednn_requested() if reason == ONEDNN_VARIABLE else machine.onednn_on_by_default,
            reason,
        )
    cache = cache or StepTimeCache()
    precisions = rules.precisions_to_time(config, machine)
    seconds, measured = {}, False
    for onednn in (False, True):
        key = step_key(config, machine, onednn)
        seconds[onednn] = cache.seconds(key)
        if not all(name in seconds[onednn] for name in precisions):
            if not measured:
                print(
                    "Timing the training step with oneDNN off and on (once for this CPU and "
                    "network; TensorFlow leaves oneDNN off on this CPU) ...",
                    flush=True,
                )
            measured = True
            try:
                seconds[onednn] = time_in_child(config, precisions, onednn)
            except MeasurementError as error:
                return rules.OnednnChoice(False, f"TensorFlow's default; not measured: {error}")
            cache.add(key, seconds[onednn])
        seconds[onednn] = {name: seconds[onednn][name] for name in precisions}
    return rules.onednn_from_seconds(seconds, "measured" if measured else "cached")


_applied: list[rules.OnednnChoice] = []


def apply(choice: rules.OnednnChoice) -> None:
    """Sets a measured choice in TF_ENABLE_ONEDNN_OPTS for this process (before TensorFlow is
    imported; any other choice is already TensorFlow's own setting) and keeps it for
    `chosen`."""
    if choice.reason in ("measured", "cached"):
        os.environ[ONEDNN_VARIABLE] = "1" if choice.enabled else "0"
    _applied[:] = [choice]


def chosen(enabled: bool) -> rules.OnednnChoice:
    """This process's oneDNN choice: the one `apply` set, else how TensorFlow decided.

    Args:
        enabled: whether oneDNN is on in this process (TensorFlow says, once imported).
    """
    if _applied and _applied[0].enabled == enabled:
        return _applied[0]
    set_by_user = onednn_requested() is not None
    return rules.OnednnChoice(enabled, ONEDNN_VARIABLE if set_by_user else "TensorFlow's default")
