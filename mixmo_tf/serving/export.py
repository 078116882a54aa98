"""SavedModel export for TF Serving: versioned folders, class names, temperature.

`export_saved_model` writes `DIR/<version>/saved_model.pb` + `variables/` + `assets/`, the
layout TF Serving watches: each export takes the next integer version, is written under a
temporary name that TF Serving ignores and renamed into place when complete, and never
replaces an existing version. The signatures are those of `mixmo_tf.serving.graph`'s
`ServingModule`. `export_run` exports a training run's newest checkpoint with only its folder
as input, computing in float32 whatever precision trained it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tempfile

import keras
import tensorflow as tf

from mixmo_tf.config.datasets import DatasetSpec
from mixmo_tf.config.run_folder import RunFolder, space_errors_as_os_errors
from mixmo_tf.data.class_names import class_names as dataset_class_names
from mixmo_tf.serving.graph import DEFAULT_TOP_K, ServingModule
from mixmo_tf.serving.run_source import (
    SERVING_PRECISION,
    check_export_dir,
    restore_for_serving,
    run_temperature,
)
from mixmo_tf.training.backend import require_tensorflow

CLASS_NAMES_ASSET = "class_names.txt"
EXPORT_INFO_ASSET = "export_info.json"
_TEMPORARY_PREFIX = ".incomplete-"
# What a process of another Keras backend is told: a run of any backend exports on TensorFlow.
_EXPORT = "--mode=export (a TensorFlow SavedModel, written from a run of any backend)"


def _writer_is_gone(name: str) -> bool | None:
    """Whether the export that named its staging folder `name` has ended: True, False, or
    None if the name holds no process id (a staging folder named by an earlier version)."""
    pid = name[len(_TEMPORARY_PREFIX) :].split("-", 1)[0]
    if not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def remove_stale_exports(directory: str) -> None:
    """Removes the staging folders that killed exports left in `directory` (their process
    has ended on this machine) and says so on stderr; names the ones it cannot judge.

    TF Serving ignores them, but they hold a whole model each and would stay forever.
    """
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if not (name.startswith(_TEMPORARY_PREFIX) and os.path.isdir(path)):
            continue
        gone = _writer_is_gone(name)
        if gone:
            shutil.rmtree(path, ignore_errors=True)
            print(
                f"Removed {path}: an export that was stopped before it finished left it.",
                file=sys.stderr,
            )
        elif gone is None:
            print(
                f"Note: {path} is an unfinished export of an older version of this tool; "
                "delete it unless an export is running now.",
                file=sys.stderr,
            )


def _versions(directory: str) -> list[int]:
    """The integer version folders of an export directory."""
    if not os.path.isdir(directory):
        return []
    return [int(name) for name in os.listdir(directory) if name.isdigit()]


def export_saved_model(
    model: keras.Model,
    directory: str,
    spec: DatasetSpec,
    class_names: tuple[str, ...] | None = None,
    temperature: float | None = None,
    top_k: int = DEFAULT_TOP_K,
    info: dict | None = None,
) -> str:
    """Writes `model` as the next version of a TF Serving model folder.

    Args:
        model: a built `MixMoModel`; its prediction is exported as it computes (precision
            included).
        directory: the model's base folder (what TF Serving's `--model_base_path` names).
        spec: the training dataset: input shape and normalisation.
        class_names: label names in label order. Defaults to the dataset's.
        temperature: T dividing the logits; None exports unscaled probabilities (T = 1).
        top_k: classes listed per image. Defaults to 5.
        info: extra facts recorded in `assets/export_info.json` (the source run, its step).

    Returns:
        The new version folder, `directory/<version>`.

    Raises:
        OSError: `directory` cannot be created or written.
        TensorFlowOnlyError: Keras runs on another backend.
    """
    require_tensorflow(_EXPORT)
    names = tuple(class_names or dataset_class_names(spec))
    os.makedirs(directory, exist_ok=True)
    remove_stale_exports(directory)
    staging = tempfile.mkdtemp(prefix=f"{_TEMPORARY_PREFIX}{os.getpid()}-", dir=directory)
    try:
        names_path = os.path.join(staging, CLASS_NAMES_ASSET)
        with open(names_path, "w", encoding="utf-8") as stream:
            stream.write("\n".join(names) + "\n")
        module = ServingModule(model, spec, names, temperature or 1.0, top_k)
        # Copied into assets/: the outputs' `classes` index its lines.
        module.class_names_file = tf.saved_model.Asset(names_path)
        saved = os.path.join(staging, "saved_model")
        with space_errors_as_os_errors():  # an OSError, like every other write's here
            tf.saved_model.save(module, saved, signatures=module.signatures())
        record = {
            "temperature": temperature,
            "num_members": model.num_members,
            "num_classes": model.num_classes,
            "top_k": min(top_k, model.num_classes),
            "dataset": dataclasses.asdict(spec),
            **(info or {}),
        }
        with open(os.path.join(saved, "assets", EXPORT_INFO_ASSET), "w") as stream:
            json.dump(record, stream, indent=2)
        return _publish(saved, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(saved: str, directory: str) -> str:
    """Renames a complete SavedModel to the next free version of `directory`.

    The rename is atomic; if another export took the version meanwhile, the next is tried.
    """
    version = max(_versions(directory), default=0) + 1
    while True:
        target = os.path.join(directory, str(version))
        try:
            os.rename(saved, target)  # fails if `target` exists and is not empty
            return target
        except OSError:
            if not os.path.exists(target):
                raise
            version += 1


def export_run(
    model_dir: str,
    export_dir: str | None = None,
    temperature: float | None = None,
    precision: str = SERVING_PRECISION,
) -> str:
    """Exports the newest checkpoint of a training run; returns its version folder.

    Args:
        model_dir: the run's folder.
        export_dir: the base folder of the versions, not among the run's own files
            (`check_export_dir`). Defaults to `<model_dir>/export`.
        temperature: overrides the run's fitted temperature (`run_source.read_temperature`).
        precision: what the graph computes in. Keep float32: only bench/serving_precision.py
            passes another, to measure a mixed_bfloat16 graph against it (bench/README.md).
    """
    require_tensorflow(_EXPORT)
    if export_dir:
        check_export_dir(model_dir, export_dir, RunFolder(model_dir).exports)
    temperature = run_temperature(model_dir, temperature)
    run = restore_for_serving(model_dir, precision)
    info = {
        "model_dir": os.path.abspath(model_dir),
        "checkpoint": os.path.basename(run.checkpoint),
    }
    return export_saved_model(
        run.model,
        export_dir or RunFolder(model_dir).exports,
        run.config.spec,
        temperature=temperature,
        info=info,
    )
