"""oneDNN for training, chosen by measurement where TensorFlow leaves it off.

TensorFlow 2.21 turns its oneDNN kernels on by default only on x86 CPUs with VNNI, bfloat16
or AMX instructions. On CPUs without them (an avx2-only AMD EPYC) they can still make the
training step several times faster, but they make batch-1 serving much slower (the figures
are on the documentation's speed page): so only training turns them on, and only where the
run's own step is measured clearly faster with them. TensorFlow reads TF_ENABLE_ONEDNN_OPTS
once, when it is imported, so the step is timed in two child processes, one per setting, in
alternating rounds (each pays TensorFlow's start-up once; the times are cached, so a machine
measures a network once), and the choice applies to a process that has not imported
TensorFlow yet (`mixmo_tf.cli.onednn_start` restarts the command for it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator

from mixmo_tf.config.settings import Config
from mixmo_tf.tuning import rules, timing
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
        return rules.TENSORFLOW_DEFAULT
    if config.distribution in _UNMEASURED_DISTRIBUTIONS:
        return f"{rules.TENSORFLOW_DEFAULT}; not measured for --distribution={config.distribution}"
    if _gpu_present():
        return f"{rules.TENSORFLOW_DEFAULT}; training runs on the GPU"
    return None


class _TimingChild:
    """A `mixmo_tf.tuning.step_timing` process with oneDNN on or off, timing on demand."""

    def __init__(self, config: Config, precisions: tuple[str, ...], enabled: bool):
        self.enabled = enabled
        environment = {
            **os.environ,
            ONEDNN_VARIABLE: "1" if enabled else "0",
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "PYTHONPATH": os.pathsep.join(
                filter(None, [_PACKAGE_PARENT, os.environ.get("PYTHONPATH")])
            ),
        }
        self._errors = tempfile.TemporaryFile("w+")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "mixmo_tf.tuning.step_timing"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._errors,
            text=True,
            env=environment,
        )
        request = {"config": dataclasses.asdict(config), "precisions": list(precisions)}
        self._send(json.dumps(request))

    def _send(self, line: str) -> None:
        try:
            self._process.stdin.write(line + "\n")
            self._process.stdin.flush()
        except BrokenPipeError:
            pass  # the child ended: _answer reports why

    def _answer(self):
        line = self._process.stdout.readline()
        if not line:
            code = self._process.wait()
            self._errors.seek(0)
            error = (self._errors.read().strip().splitlines() or ["no output"])[-1]
            raise MeasurementError(f"the timing process exited with {code}: {error}")
        return json.loads(line)

    def wait_until_ready(self) -> None:
        """Waits for the traced steps; checks TensorFlow honoured the oneDNN setting."""
        if self._answer()["onednn"] != self.enabled:
            raise MeasurementError(f"TensorFlow ignored {ONEDNN_VARIABLE}={int(self.enabled)}")

    def seconds(self, precision: str) -> float:
        """Wall seconds of one training step in `precision`, timed by the child."""
        self._send(precision)
        return float(self._answer())

    def stop(self) -> None:
        """Ends the child now, mid-step (the command was stopped, or the other child failed)."""
        with contextlib.suppress(OSError):
            self._process.terminate()

    def close(self) -> None:
        """Ends the child (it exits when its input closes)."""
        with contextlib.suppress(OSError):
            self._process.stdin.close()
        try:
            self._process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._errors.close()


@contextlib.contextmanager
def _stops_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM that arrive inside are delivered when it ends (to the handlers in
    place before), so that a child process being started is first registered, and then ended
    by the clean-up, rather than left running unknown."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals are delivered to the main thread only
        return
    received = []
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {
        stop: signal.signal(stop, lambda signum, _: received.append(signum)) for stop in stops
    }
    try:
        yield
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, handler)
        for signum in received:
            signal.raise_signal(signum)


def time_in_children(config: Config, precisions: tuple[str, ...]) -> dict[bool, dict[str, float]]:
    """Step seconds by precision with oneDNN off (False) and on (True), timed by two child
    processes in alternating rounds (both are built and traced first).

    Raises:
        MeasurementError: a child failed, or TensorFlow did not honour the setting.
    """
    children = []
    try:
        for enabled in (False, True):
            with _stops_deferred():
                children.append(_TimingChild(config, precisions, enabled))
        for child in children:
            child.wait_until_ready()
        medians = timing.interleaved_medians(
            {
                (child.enabled, precision): functools.partial(child.seconds, precision)
                for child in children
                for precision in precisions
            }
        )
    except BaseException:
        # Ctrl-C, SIGTERM or a failed child: the others end now, not after their step.
        for child in children:
            child.stop()
        raise
    finally:
        for child in children:
            child.close()
    return {
        child.enabled: {precision: medians[child.enabled, precision] for precision in precisions}
        for child in children
    }


def choose_onednn(
    config: Config, cache: StepTimeCache | None = None, measure: bool = True
) -> rules.OnednnChoice | None:
    """Whether `config`'s training should run with oneDNN, from cached or new step times.

    Args:
        config: the training run.
        cache: the step times (default: the user's cache folder).
        measure: time the step in child processes if the cache lacks it; if False, return
            None instead.

    A failed measurement keeps TensorFlow's default and says why.
    """
    machine = this_machine()
    reason = _unmeasured_reason(config, machine)
    if reason is not None:
        return rules.OnednnChoice(
            onednn_requested() if reason == ONEDNN_VARIABLE else machine.onednn_on_by_default,
            reason,
        )
    recorded = rules.recorded_onednn(config.model_dir) if config.model_dir else None
    if recorded is not None:
        return recorded  # a resumed run keeps its kernels, so it resumes exactly
    cache = cache or StepTimeCache()
    precisions = rules.precisions_to_time(config, machine)
    keys = {enabled: step_key(config, machine, enabled) for enabled in (False, True)}
    seconds = {enabled: cache.seconds(key) for enabled, key in keys.items()}
    measured = not all(name in seconds[on] for on in keys for name in precisions)
    if measured and not measure:
        return None
    if measured:
        print(
            "Timing the training step with oneDNN off and on (TensorFlow leaves it off on this "
            "CPU; once for this CPU and network) ...",
            flush=True,
        )
        try:
            seconds = time_in_children(config, precisions)
        except MeasurementError as error:
            return rules.OnednnChoice(False, f"{rules.TENSORFLOW_DEFAULT}; not measured: {error}")
        for enabled, key in keys.items():
            cache.add(key, seconds[enabled])
    seconds = {on: {name: seconds[on][name] for name in precisions} for on in keys}
    return rules.onednn_from_seconds(seconds, "measured" if measured else "cached")


_applied: list[rules.OnednnChoice] = []


def apply(choice: rules.OnednnChoice) -> None:
    """Sets a measured choice in TF_ENABLE_ONEDNN_OPTS for this process (before TensorFlow is
    imported; any other choice is already TensorFlow's own setting) and keeps it for
    `chosen`."""
    if choice.reason in rules.MEASURED:
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
    reason = ONEDNN_VARIABLE if set_by_user else rules.TENSORFLOW_DEFAULT
    return rules.OnednnChoice(enabled, reason)
