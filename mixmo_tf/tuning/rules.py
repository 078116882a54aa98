"""How measured step times become choices: which precisions to time, which one wins, and
what is said and recorded about it.

bfloat16 changes the numerics (layers compute in 8-bit mantissas), and oneDNN changes the
kernels: each is taken only when it makes the step clearly faster (`CLEARLY_FASTER`), so
noise between two equal settings keeps the default (float32, TensorFlow's oneDNN setting).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from mixmo_tf.config.run_folder import RunFolder
from mixmo_tf.config.run_record import RunConfigError, read_run_config
from mixmo_tf.config.settings import Config
from mixmo_tf.tuning.machine import ONEDNN_VARIABLE, Machine

# A setting other than the default must bring the step to at most this share of its time.
CLEARLY_FASTER = 0.9
REFERENCE = "float32"
# Reasons of a choice that comes from step times (now, from the cache, or the run's record).
MEASURED = ("measured", "cached", "recorded")
# The reason of a oneDNN setting that is TensorFlow's default for this CPU (a suffix may say
# why it was not measured); ONEDNN_VARIABLE is the reason of the user's own setting.
TENSORFLOW_DEFAULT = "TensorFlow's default"
BFLOAT16 = "mixed_bfloat16"


def _recorded(model_dir: str) -> dict:
    """The run_config.json of a run folder, or {} (no run there yet, or unreadable: the
    run's own checks report that)."""
    path = RunFolder(model_dir).run_config
    try:
        return read_run_config(path) if os.path.exists(path) else {}
    except RunConfigError:
        return {}


def recorded_precision(model_dir: str) -> str | None:
    """The precision a run folder's training recorded, or None (no run there yet)."""
    precision = _recorded(model_dir).get("precision")
    return precision if isinstance(precision, str) and precision != "auto" else None


def recorded_onednn(model_dir: str) -> OnednnChoice | None:
    """The oneDNN setting a run's first start measured, or None (not measured there)."""
    choices = _recorded(model_dir).get("speed_choices")
    onednn = choices.get("onednn") if isinstance(choices, dict) else None
    if not isinstance(onednn, dict) or onednn.get("reason") not in MEASURED:
        return None
    return OnednnChoice(bool(onednn.get("enabled")), "recorded", dict(onednn.get("seconds", {})))


def precisions_to_time(config: Config, machine: Machine) -> tuple[str, ...]:
    """The precisions `config`'s training may run in on this CPU, in preference order.

    A given precision is the only one; "auto" keeps the precision a resumed run recorded,
    and otherwise weighs float32 against mixed_bfloat16 where the CPU computes in bfloat16.
    Without bfloat16 instructions, bfloat16 is emulated in float32 and many times slower
    (bench/README.md), so it is not timed.
    """
    if config.precision != "auto":
        return (config.precision,)
    recorded = recorded_precision(config.model_dir) if config.model_dir else None
    if recorded:
        return (recorded,)
    return (REFERENCE, BFLOAT16) if machine.has_bfloat16_instructions else (REFERENCE,)


def fastest_precision(seconds: dict[str, float]) -> str:
    """The precision to train in, given its step times: float32 unless another is clearly
    faster (the first of `seconds` is the reference when float32 was not timed)."""
    reference = REFERENCE if REFERENCE in seconds else next(iter(seconds))
    best = min(seconds, key=seconds.get)
    return best if seconds[best] <= CLEARLY_FASTER * seconds[reference] else reference


def _seconds_text(seconds: dict[str, float]) -> str:
    return ", ".join(f"{seconds[name]:.3g} s in {name}" for name in seconds)


@dataclasses.dataclass(frozen=True)
class PrecisionChoice:
    """The precision a training run computes in, and why.

    Attributes:
        precision: the chosen precision.
        reason: "given" (--precision), "recorded" (the resumed run's), "measured" (now),
            "cached" (measured before on this machine), "no bfloat16 instructions",
            "device rule" (GPUs and multi-worker runs: `tuning.device_rules.default_precision`),
            or why another Keras backend than TensorFlow was not measured.
        seconds: the step times behind a measured or cached choice, by precision.
    """

    precision: str
    reason: str
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    def message(self) -> str:
        """The line a run prints about it."""
        text = f"Precision: {self.precision}"
        if self.reason in ("measured", "cached") and len(self.seconds) > 1:
            other = next(name for name in self.seconds if name != self.precision)
            return (
                f"{text} (auto, {self.reason} on this CPU: training step "
                f"{_seconds_text(self.seconds)}; --precision={other} trains in {other})."
            )
        if self.reason == "no bfloat16 instructions":
            return (
                f"{text} (auto: this CPU has no bfloat16 instructions, where bfloat16 is "
                "emulated and slower; --precision=mixed_bfloat16 trains in it anyway)."
            )
        return f"{text} ({'--precision' if self.reason == 'given' else self.reason})."

    def record(self) -> dict[str, Any]:
        """What run_config.json keeps of it."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class OnednnChoice:
    """Whether a training process runs TensorFlow's oneDNN kernels, and why.

    Attributes:
        enabled: oneDNN on.
        reason: "TF_ENABLE_ONEDNN_OPTS" (set by the user), "TensorFlow's default",
            "measured", "cached", "recorded" (a resumed run keeps its first start's), or
            why it was not measured.
        seconds: the step times behind a measured or cached choice: {"off"/"on": seconds}
            of the precision each would train in.
    """

    enabled: bool
    reason: str
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    def message(self) -> str:
        """The line a run prints about it."""
        state = "on" if self.enabled else "off"
        if self.reason == "recorded":
            return f"oneDNN: {state} (as the run's first start measured)."
        if self.reason in ("measured", "cached"):
            other, toggled = ("0", "off") if self.enabled else ("1", "on")
            return (
                f"oneDNN: {state} ({self.reason} on this CPU, where TensorFlow leaves it off: "
                f"training step {self.seconds['on']:.3g} s with it, {self.seconds['off']:.3g} s "
                f"without; TF_ENABLE_ONEDNN_OPTS={other} turns it {toggled})."
            )
        return f"oneDNN: {state} ({self.reason})."

    def record(self) -> dict[str, Any]:
        """What run_config.json keeps of it."""
        return dataclasses.asdict(self)

    @property
    def worth_saying(self) -> bool:
        """Whether a run prints it: every choice but the user's setting or TensorFlow's
        plain default."""
        return self.reason not in (ONEDNN_VARIABLE, TENSORFLOW_DEFAULT)


def onednn_from_seconds(seconds: dict[bool, dict[str, float]], reason: str) -> OnednnChoice:
    """The oneDNN choice from the step times with it off and on (each by precision), each
    setting in the precision it would train in. Off is TensorFlow's default where this is
    asked, so on must be clearly faster."""
    best = {enabled: times[fastest_precision(times)] for enabled, times in seconds.items()}
    enabled = best[True] <= CLEARLY_FASTER * best[False]
    return OnednnChoice(enabled, reason, {"off": best[False], "on": best[True]})
