"""Defaults measured on this machine (the training precision, oneDNN) and the device rules.

- `machine`: the CPU, TensorFlow's version, oneDNN's default (no TensorFlow);
- `step_times`: the cache of measured step times (no TensorFlow);
- `rules`: which precisions are timed and which time wins (no TensorFlow);
- `timing`: alternating rounds and medians (no TensorFlow);
- `onednn`: oneDNN on or off for training, timed in two child processes (no TensorFlow:
  the choice must be set before a process imports it);
- `step_timing`: times the run's own training step (also the child process of `onednn`);
- `precision_choice`: `--precision=auto` for a training run;
- `device_rules`: `--precision=auto` where nothing is timed (GPUs, TPUs, several workers,
  work that does not train).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=[
        "device_rules",
        "machine",
        "onednn",
        "precision_choice",
        "rules",
        "step_timing",
        "step_times",
        "timing",
    ],
)
