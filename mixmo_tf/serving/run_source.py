"""A trained run as serving reads it: its newest checkpoint in float32, its fitted
temperature, and where its exports may go (imports no TensorFlow of its own).

The SavedModel export, the prediction from a run and the run's preset all read a run through
these, so that the three answer the same for the same run.
"""

from __future__ import annotations

import json
import math
import os

from mixmo_tf.config.errors import ConfigError, UnusableFileError
from mixmo_tf.config.run_folder import RunFolder
from mixmo_tf.config.run_record import recorded_config
from mixmo_tf.training.checkpoints import RestoredRun, restore_run

# Serving computes in float32 whatever precision trained the run (variables are float32 in
# every precision): it runs on any CPU or GPU, with the paper's numerics.
SERVING_PRECISION = "float32"


def read_temperature(model_dir: str) -> float | None:
    """The temperature fitted for a run, from `<model_dir>/temperature.json`, if there is one.

    The file is `{"temperature": T}` with T > 0 (written by the run's calibration).

    Raises:
        UnusableFileError: the file exists but holds no valid temperature.
    """
    path = RunFolder(model_dir).temperature
    if not os.path.exists(path):
        return None
    try:
        with open(path) as stream:
            temperature = float(json.load(stream)["temperature"])
    except (ValueError, KeyError, TypeError) as error:
        raise UnusableFileError(
            f'{path} must be {{"temperature": <number > 0>}} ({error!r}); fix or remove it, '
            "or pass --temperature."
        ) from error
    if not (math.isfinite(temperature) and temperature > 0):
        raise UnusableFileError(f"{path} holds temperature {temperature}; it must be > 0.")
    return temperature


def run_temperature(model_dir: str, temperature: float | None = None) -> float | None:
    """`temperature` if given (checked), else the run's fitted one, else None."""
    if temperature is None:
        return read_temperature(model_dir)
    if not (math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"--temperature must be > 0. Received: temperature={temperature}")
    return temperature


def check_export_dir(model_dir: str, export_dir: str, default: str) -> None:
    """Refuses an `--export_dir` among the run's own files: the run folder itself or a folder
    of its checkpoints, logs or evaluation, where the export would mix with them.

    Args:
        model_dir: the run folder.
        export_dir: the folder given.
        default: the folder used without `--export_dir`, named in the message.

    Raises:
        ConfigError: naming the flag and the default.
    """
    folder = RunFolder(model_dir)
    target = os.path.realpath(export_dir)
    if target == os.path.realpath(model_dir) or any(
        os.path.commonpath([os.path.realpath(taken), target]) == os.path.realpath(taken)
        for taken in (folder.checkpoints, folder.logs, folder.evaluation)
    ):
        raise ConfigError(
            f"--export_dir={export_dir} is {model_dir} or lies in its checkpoints, logs or "
            f"eval folder, among the run's own files: omit it (the default is {default}) or "
            "name a folder of its own."
        )


def restore_for_serving(model_dir: str, precision: str = SERVING_PRECISION) -> RestoredRun:
    """The run in `model_dir` at its newest checkpoint, computing in `precision` (float32)."""
    return restore_run(recorded_config(model_dir), precision=precision)
