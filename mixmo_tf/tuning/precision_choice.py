"""`--precision=auto` for training: the run's own step timed where the CPU leaves it open.

See `mixmo_tf.tuning.device_rules` for the measurements behind it. The choice is printed
with its step times and recorded in run_config.json; times are cached per CPU, TensorFlow
version, oneDNN setting and network (`mixmo_tf.tuning.step_times`).
"""

from __future__ import annotations

import keras

from mixmo_tf.config.settings import Config
from mixmo_tf.tuning import rules
from mixmo_tf.tuning.device_rules import default_precision, gpu_capability
from mixmo_tf.tuning.machine import this_machine
from mixmo_tf.tuning.step_times import StepTimeCache, step_key
from mixmo_tf.tuning.step_timing import onednn_enabled, time_training_steps

# Workers must train in one precision, so none measures on its own: the device rule decides.
_RULE_DISTRIBUTIONS = ("multi_worker_mirrored", "tpu")


def choose_training_precision(
    config: Config, cache: StepTimeCache | None = None
) -> rules.PrecisionChoice:
    """The precision `config`'s training computes in, and why (see the module docstring).

    "auto" on a CPU times the run's step in each candidate precision the first time this
    machine trains this network (a few seconds for small networks, a few steps of a large
    one) and reads the cached times afterwards; a resumed run keeps its recorded precision.
    """
    if config.precision != "auto":
        return rules.PrecisionChoice(config.precision, "given")
    recorded = rules.recorded_precision(config.model_dir) if config.model_dir else None
    if recorded:
        return rules.PrecisionChoice(recorded, "recorded")
    backend = keras.backend.backend()
    if backend != "tensorflow":
        # The step timing and the device rules measured TensorFlow's kernels.
        return rules.PrecisionChoice("float32", f"auto: measured on TensorFlow only, not {backend}")
    if gpu_capability() is not None or config.distribution in _RULE_DISTRIBUTIONS:
        return rules.PrecisionChoice(default_precision(), "device rule")
    machine = this_machine()
    candidates = rules.precisions_to_time(config, machine)
    if len(candidates) == 1:
        return rules.PrecisionChoice(candidates[0], "no bfloat16 instructions")
    cache = cache or StepTimeCache()
    key = step_key(config, machine, onednn_enabled())
    seconds, reason = cache.seconds(key), "cached"
    if not all(name in seconds for name in candidates):
        print(
            f"Timing the training step in {' and '.join(candidates)} (once for this CPU and "
            "network) ...",
            flush=True,
        )
        seconds, reason = time_training_steps(config, candidates), "measured"
        cache.add(key, seconds)
    seconds = {name: seconds[name] for name in candidates}
    return rules.PrecisionChoice(rules.fastest_precision(seconds), reason, seconds)
