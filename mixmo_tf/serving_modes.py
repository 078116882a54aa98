"""`--mode=export` and `--mode=predict`: what they need, what they print, their exit codes.

Exit codes: 0 success; 1 `predict` could not read or decode some files (the others were
predicted); 2 nothing done: no run, no checkpoint, no SavedModel, no matching file, or an
export folder that cannot be written. Every failure prints one `ERROR:` line on stderr.
"""

from __future__ import annotations

import sys

from mixmo_tf import checkpointing

SUCCESS, SOME_FILES_FAILED, FAILED = 0, 1, 2


def check_flags(
    mode: str,
    model_dir: str,
    images: str | None,
    saved_model: str | None,
    temperature: float | None,
) -> None:
    """Raises ValueError naming the flag when `mode` lacks what it reads."""
    if mode == "export" and not model_dir:
        raise ValueError("--mode=export needs --model_dir=RUN, a folder that training wrote.")
    if mode == "predict":
        if not images:
            raise ValueError("--mode=predict needs --images, e.g. --images='photos/*.jpg'.")
        if bool(model_dir) == bool(saved_model):
            raise ValueError(
                "--mode=predict needs exactly one of --model_dir=RUN (its newest checkpoint) and "
                "--saved_model=EXPORT_DIR/<version>."
            )
        if saved_model and temperature is not None:
            raise ValueError(
                "--temperature applies to --model_dir; a SavedModel keeps its export's "
                "temperature (export again with --temperature to change it)."
            )


def _fail(error: Exception) -> int:
    print(f"ERROR: {error}", file=sys.stderr)
    return FAILED


def export(model_dir: str, export_dir: str | None, temperature: float | None) -> int:
    """Exports the run's newest checkpoint; prints the version folder written."""
    from mixmo_tf.export import export_run

    try:
        path = export_run(model_dir, export_dir, temperature)
    except (OSError, ValueError, checkpointing.CheckpointMismatchError) as error:
        # No run or checkpoint (FileNotFoundError), an unwritable export folder, a bad
        # temperature file: the message says what to do, a traceback would not.
        return _fail(error)
    print(f"Exported {model_dir} to {path}")
    return SUCCESS


def predict(
    images: str,
    model_dir: str,
    saved_model: str | None,
    output: str | None,
    temperature: float | None,
) -> int:
    """Predicts every file `images` names; one JSON line (or CSV row) per file."""
    from mixmo_tf import prediction

    paths = prediction.image_paths(images)
    if not paths:
        return _fail(FileNotFoundError(f"--images={images} matches no file."))
    try:
        if saved_model:
            predictor = prediction.predictor_from_saved_model(saved_model)
        else:
            predictor = prediction.predictor_from_run(model_dir, temperature)
        stream = open(output, "w", newline="") if output else sys.stdout
    except (OSError, ValueError, checkpointing.CheckpointMismatchError) as error:
        return _fail(error)
    try:
        csv_format = bool(output) and output.lower().endswith(".csv")
        records = prediction.predict_files(predictor, paths)
        predicted, failed = prediction.write_predictions(records, stream, sys.stderr, csv_format)
    finally:
        if output:
            stream.close()
    print(f"Predicted {predicted} of {len(paths)} files; {failed} failed.", file=sys.stderr)
    return SOME_FILES_FAILED if failed else SUCCESS
