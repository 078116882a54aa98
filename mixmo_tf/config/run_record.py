"""A run's recorded settings: written at the start of training, read back without TensorFlow.

Modes that read a trained run (evaluate, and export or predict) need only `--model_dir`: the
run folder's `run_config.json` says everything else, and its `dataset_spec.json` the spec of
a tfds or folder source (the Config's `dataset_spec`, which no flag sets). A flag given on
top may only change what does not define the trained model (the fields marked
`changeable_on_resume`, e.g. `--data_dir`, `--eval_batch_size`); any other flag that
disagrees is refused by name before TensorFlow is even imported. A rerun of training in the
same folder may change those fields too, and choose what the run has yet to choose (an
imported run's `--precision=auto`, `settings.not_chosen_yet`), and nothing else
(`record_run_config`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Sequence

from mixmo_tf.config.dataset_names import source_kind
from mixmo_tf.config.datasets import DatasetSpec, spec_from_json
from mixmo_tf.config.errors import ConfigError, MissingFileError, UserError
from mixmo_tf.config.run_folder import RUN_CONFIG, RunFolder, write_text_atomically
from mixmo_tf.config.settings import (
    Config,
    changeable_on_resume,
    complete_recorded,
    not_chosen_yet,
    recorded_fields,
)

# Keys of run_config.json beside the Config's fields: what the run's first start found out
# (the precision and oneDNN choices with their step times). Kept as written, never compared.
RUN_NOTES = ("speed_choices",)


def _settings(recorded: dict) -> dict:
    """The Config fields of a run_config.json's content, completed for older runs."""
    return complete_recorded({k: v for k, v in recorded.items() if k not in RUN_NOTES})


def _may_take(name: str, recorded) -> bool:
    """Whether a run that recorded `recorded` for the field `name` may take another value:
    the field may change on resume, or the run has yet to choose it (`not_chosen_yet`)."""
    return changeable_on_resume(name) or not_chosen_yet(name, recorded)


class RunConfigError(UserError, ValueError):
    """A run folder's run_config.json or dataset_spec.json cannot be read (the message names
    it and the fix)."""


def read_run_config(path: str) -> dict:
    """The content of a run_config.json.

    Raises:
        RunConfigError: it is not readable by this user, or not a JSON object.
    """
    try:
        with open(path, encoding="utf-8") as stream:
            content = json.load(stream)
    except OSError as error:
        raise RunConfigError(
            f"{path} cannot be read ({error.strerror or error}): give this user read access "
            "to the run folder."
        ) from error
    except ValueError as error:  # invalid JSON or UTF-8
        raise RunConfigError(
            f"{path} is not the JSON training wrote ({error}): restore it from a copy, or "
            "train in a new --model_dir."
        ) from error
    if not isinstance(content, dict):
        raise RunConfigError(
            f"{path} is not the JSON training wrote (a {type(content).__name__}, not an "
            "object): restore it from a copy, or train in a new --model_dir."
        )
    return content


class CheckpointMismatchError(UserError, ValueError):
    """The run folder holds a run (checkpoint or settings) of another model."""


def recorded_config(model_dir: str) -> Config:
    """The Config recorded in `<model_dir>/run_config.json` by the run's training.

    The returned Config points at `model_dir` even if the folder was moved since training.

    Raises:
        MissingFileError: `model_dir` holds no run_config.json.
        RunConfigError: it cannot be read, or is not what training writes.
    """
    path = RunFolder(model_dir).run_config
    if not os.path.exists(path):
        raise MissingFileError(
            f"{path} does not exist: --model_dir must be a folder that training wrote "
            "(it records the run's settings there)."
        )
    recorded = _settings(read_run_config(path))
    try:
        config = Config(**{**recorded, "model_dir": model_dir, "dataset_spec": None})
    except TypeError as error:  # a field this version does not know
        raise RunConfigError(
            f"{path} holds settings this version does not know ({error}): it was written by "
            "a newer mixmo-tf, or edited."
        ) from error
    return with_recorded_spec(config)


def record_spec(spec: DatasetSpec, model_dir: str) -> None:
    """Writes the spec of a tfds or folder source to `<model_dir>/dataset_spec.json`."""
    if source_kind(spec.name) == "named":
        return
    text = json.dumps(dataclasses.asdict(spec), indent=2)
    write_text_atomically(RunFolder(model_dir).dataset_spec, text)


def recorded_spec(model_dir: str) -> DatasetSpec | None:
    """The spec recorded in `<model_dir>/dataset_spec.json` by training, or None.

    Raises:
        RunConfigError: the file is not the JSON of a spec (damaged, or edited).
    """
    path = RunFolder(model_dir).dataset_spec
    if not model_dir or not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as stream:
            return spec_from_json(json.load(stream))
    except (ValueError, TypeError, AttributeError, RecursionError) as error:
        # Not UTF-8 JSON (ValueError), not an object (AttributeError), other fields
        # (TypeError), nested too deep for the parser (RecursionError).
        raise RunConfigError(
            f"{path} is not the dataset spec training wrote ({error}): restore it from a copy, "
            "or train in a new --model_dir."
        ) from error


def with_recorded_spec(config: Config) -> Config:
    """`config` carrying the dataset spec its run folder recorded, if it carries none (a tfds
    or folder source given without one); else `config` itself.

    Raises:
        RunConfigError: the recorded spec cannot be read.
        ValueError: the recorded spec is not of the run's dataset and image size.
    """
    if config.dataset_spec is not None or source_kind(config.dataset) == "named":
        return config
    spec = recorded_spec(config.model_dir)
    return config if spec is None else dataclasses.replace(config, dataset_spec=spec)


# Settings that only training reads (its schedule, and the devices it runs on): evaluation
# runs the recorded model on one device, so another value given to it would not be used.
TRAINING_ONLY = (
    "epochs",
    "lr",
    "warmup_epochs",
    "lr_decay_epochs",
    "lr_decay_factor",
    "momentum",
    "l2",
    "checkpoint_every_steps",
    "distribution",
    "tpu",
    "jit_compile",
)


def config_with_flags(recorded: Config, flagged: Config, given: Iterable[str]) -> Config:
    """`recorded` with the flags the user gave applied, where they may differ from the run.

    Args:
        recorded: the run's recorded Config.
        flagged: the Config built from the command line (defaults for flags not given).
        given: names of the Config fields whose flags were given (command line or flagfile).

    Raises:
        ConfigError: a given flag contradicts the recorded run and may not change, or is one
            that evaluation does not read (`TRAINING_ONLY`) given another value than the
            run's; the message names every such flag with both values. A flagfile that
            repeats the run's values passes.
    """
    given = [name for name in given if name != "model_dir"]
    unread = [
        name
        for name in given
        if name in TRAINING_ONLY and getattr(flagged, name) != getattr(recorded, name)
    ]
    if unread:
        described = ", ".join(
            f"--{name}={getattr(flagged, name)!r} (the run has {getattr(recorded, name)!r})"
            for name in unread
        )
        raise ConfigError(
            f"{described}: --mode=evaluate does not read "
            f"{'it' if len(unread) == 1 else 'them'} (only training does; evaluation runs the "
            "recorded model on one device). Drop the flag."
        )
    refused = [
        name
        for name in given
        if getattr(flagged, name) != getattr(recorded, name)
        and not _may_take(name, getattr(recorded, name))
    ]
    if refused:
        described = ", ".join(
            f"--{name}={getattr(flagged, name)!r} but the run has {getattr(recorded, name)!r}"
            for name in refused
        )
        raise ConfigError(
            f"{described} ({recorded.model_dir}/{RUN_CONFIG}). Drop the flag: --model_dir alone "
            "reads every setting of the trained run."
        )
    return dataclasses.replace(recorded, **{name: getattr(flagged, name) for name in given})


def check_one_dataset(configs: Sequence[Config]) -> None:
    """Raises ConfigError unless the runs (of an ensemble) share one dataset."""
    datasets = {config.dataset for config in configs}
    if len(datasets) > 1:
        raise ConfigError(
            "--ensemble_dirs must hold runs of one dataset. Received runs of "
            f"{sorted(datasets)}: " + ", ".join(config.model_dir for config in configs)
        )


def record_run_config(config: Config, folder: str | None = None, notes: dict | None = None) -> None:
    """Writes `config` to `<model_dir>/run_config.json`, refusing to mix two runs in one folder.

    Args:
        config: the run's settings.
        folder: where to write it instead of `config.model_dir` (an import stages its run
            folder under another name before renaming it into place).
        notes: `RUN_NOTES` entries to record; a resumed run keeps those it recorded.

    Raises:
        CheckpointMismatchError: the folder holds a run whose model, method or data-stream
            settings differ (the optimisation schedule and execution settings may change).
    """
    path = RunFolder(folder or config.model_dir).run_config
    current = _as_json(config)
    kept = dict(notes or {})
    if os.path.exists(path):
        content = read_run_config(path)
        # What the run recorded stays; what it lacks (a run imported or recorded before
        # the notes existed) is added.
        kept.update({name: content[name] for name in RUN_NOTES if name in content})
        changed = _changes_allowed(config, content)
        if changed:
            print(f"Resuming {config.model_dir} with changed settings: {changed}.")
    write_text_atomically(path, json.dumps({**kept, **current}, indent=2, sort_keys=True))


def check_run_config(config: Config, undecided: Iterable[str] = ()) -> None:
    """Raises what `record_run_config` would raise for `config`, and writes nothing: a
    training run checks its folder before it measures or builds anything.

    Args:
        config: the run's settings.
        undecided: fields whose value is not known yet and so not compared ("precision"
            while "auto" waits for its measurement); `record_run_config` compares them.

    Raises:
        RunConfigError: the folder's run_config.json cannot be read.
        CheckpointMismatchError: the folder holds a run with other settings.
    """
    path = RunFolder(config.model_dir).run_config
    if os.path.exists(path):
        _changes_allowed(config, read_run_config(path), frozenset(undecided))


def _as_json(config: Config) -> dict:
    """`config`'s recorded fields as run_config.json holds them (tuples as lists)."""
    return json.loads(
        json.dumps({field.name: getattr(config, field.name) for field in recorded_fields()})
    )


def _changes_allowed(config: Config, content: dict, undecided: frozenset = frozenset()) -> str:
    """The settings `config` changes in the recorded run `content`, described ("" if none).

    Raises:
        CheckpointMismatchError: a changed setting may not change on a resume.
    """
    current = _as_json(config)
    recorded = _settings(content)
    # A value the run had yet to choose (an imported run's "auto" precision) is chosen now,
    # not changed.
    changed = sorted(
        name
        for name in current
        if name not in undecided
        and recorded.get(name) != current[name]
        and not not_chosen_yet(name, recorded.get(name))
    )

    def describe(names):
        return ", ".join(f"--{n}: {recorded.get(n)!r} -> {current[n]!r}" for n in names)

    refused = [name for name in changed if not changeable_on_resume(name)]
    if refused:
        raise CheckpointMismatchError(
            f"{config.model_dir} holds a run with other settings ({describe(refused)}). "
            "Use the recorded values to resume it, or another --model_dir for a new run."
        )
    return describe(changed)
