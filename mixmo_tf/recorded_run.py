"""The settings of a trained run, read back without TensorFlow, and flags checked against them.

Modes that read a trained run (evaluate, and export or predict) need only `--model_dir`:
the run folder's `run_config.json` says everything else. A flag given on top may only
change what does not define the trained model (the fields marked `changeable_on_resume`,
e.g. `--data_dir`, `--eval_batch_size`); any other flag that disagrees is refused by name
before TensorFlow is even imported.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Sequence

from mixmo_tf.config import Config, changeable_on_resume, complete_recorded

RUN_CONFIG = "run_config.json"


def recorded_config(model_dir: str) -> Config:
    """The Config recorded in `<model_dir>/run_config.json` by the run's training.

    The returned Config points at `model_dir` even if the folder was moved since training.

    Raises:
        FileNotFoundError: `model_dir` holds no run_config.json.
    """
    path = os.path.join(model_dir, RUN_CONFIG)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} does not exist: --model_dir must be a folder that training wrote "
            "(it records the run's settings there)."
        )
    with open(path) as stream:
        recorded = complete_recorded(json.load(stream))
    return Config(**{**recorded, "model_dir": model_dir})


def config_with_flags(recorded: Config, flagged: Config, given: Iterable[str]) -> Config:
    """`recorded` with the flags the user gave applied, where they may differ from the run.

    Args:
        recorded: the run's recorded Config.
        flagged: the Config built from the command line (defaults for flags not given).
        given: names of the Config fields whose flags were given (command line or flagfile).

    Raises:
        ValueError: a given flag contradicts the recorded run and may not change; the
            message names every such flag with both values.
    """
    given = [name for name in given if name != "model_dir"]
    refused = [
        name
        for name in given
        if getattr(flagged, name) != getattr(recorded, name) and not changeable_on_resume(name)
    ]
    if refused:
        described = ", ".join(
            f"--{name}={getattr(flagged, name)!r} but the run has {getattr(recorded, name)!r}"
            for name in refused
        )
        raise ValueError(
            f"{described} ({recorded.model_dir}/{RUN_CONFIG}). Drop the flag: --model_dir alone "
            "reads every setting of the trained run."
        )
    return dataclasses.replace(recorded, **{name: getattr(flagged, name) for name in given})


def check_one_dataset(configs: Sequence[Config]) -> None:
    """Raises ValueError unless the runs (of an ensemble) share one dataset."""
    datasets = {config.dataset for config in configs}
    if len(datasets) > 1:
        raise ValueError(
            "--ensemble_dirs must hold runs of one dataset. Received runs of "
            f"{sorted(datasets)}: " + ", ".join(config.model_dir for config in configs)
        )
