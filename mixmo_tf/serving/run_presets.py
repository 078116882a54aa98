"""A run as a preset: in memory (`run_preset`, what `from_preset` gives for a run folder)
or written (`export_run_preset`, `--mode=export --format=preset`).

The run is read as its SavedModel export reads it: the newest usable checkpoint, in float32,
with the run's fitted temperature (recorded in metadata.json), so that the run, its export and
its preset predict the same. An imported run's preset names the authors' file (its SHA-256,
and its released row when the import recorded one).
"""

from __future__ import annotations

import json
import os

from mixmo_tf.config.errors import UnusableFileError
from mixmo_tf.config.run_folder import RunFolder
from mixmo_tf.importing import released
from mixmo_tf.importing.presets import (
    Preset,
    check_new_preset_folder,
    preset_metadata,
    save_preset,
)
from mixmo_tf.importing.released_presets import published_numbers
from mixmo_tf.models.build import build_model
from mixmo_tf.serving.run_source import check_export_dir, restore_for_serving, run_temperature


def _import_source(model_dir: str) -> dict:
    """What an imported run's imported_from.json says of its file: the SHA-256, and the
    released row (with its published numbers) and URL of a downloaded one; {} for a run
    trained here."""
    path = RunFolder(model_dir).import_record
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as stream:
            record = json.load(stream)
        row = record.get("released_row")
        return {
            "source_sha256": record["sha256"],
            "row": row,
            "published": published_numbers(released.find_row(row) if row else None),
            "source_url": record.get("url"),
        }
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UnusableFileError(
            f"{path} is not the record an import writes ({type(error).__name__}: {error}): "
            "restore it from a copy, or delete it (the preset then names no source file)."
        ) from error


def run_preset(model_dir: str, temperature: float | None = None) -> Preset:
    """The run in `model_dir` as the preset its export would write (nothing is written).

    Args:
        model_dir: the run folder.
        temperature: overrides the run's fitted temperature.

    Raises:
        MissingFileError: the run has no run_config.json or no checkpoint.
        CheckpointUnusableError: none of its checkpoints is usable.
    """
    temperature = run_temperature(model_dir, temperature)
    run = restore_for_serving(model_dir)
    # The restored model keeps the checkpoint's optimizer values pending: compiled later to
    # fine-tune, its new optimizer would receive them (and fail on their shapes). The preset's
    # model is a new one holding the restored weights.
    model = build_model(run.config, with_optimizer=False)
    model.set_weights(run.model.get_weights())
    source = {
        "model_dir": os.path.abspath(model_dir),
        "checkpoint": os.path.basename(run.checkpoint),
        "step": run.step,
        **_import_source(model_dir),
    }
    spec = run.config.spec
    metadata = preset_metadata(model, spec, temperature, source)
    return Preset(model, spec, tuple(metadata["class_names"]), metadata, model_dir)


def export_run_preset(
    model_dir: str, export_dir: str | None = None, temperature: float | None = None
) -> str:
    """Writes the newest checkpoint of a run as a preset folder; returns the folder.

    Args:
        model_dir: the run folder.
        export_dir: the new preset folder (absent or empty), not among the run's own files.
            Defaults to `<model_dir>/preset`.
        temperature: overrides the run's fitted temperature (recorded in metadata.json).

    Raises:
        PresetFolderError: the folder exists and is not empty (nothing is written).
    """
    default = RunFolder(model_dir).preset
    if export_dir:
        check_export_dir(model_dir, export_dir, default)
    directory = export_dir or default
    check_new_preset_folder(directory)  # before the checkpoint is read
    preset = run_preset(model_dir, temperature)
    return save_preset(preset.model, directory, preset.metadata)
