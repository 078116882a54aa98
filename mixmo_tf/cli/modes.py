"""One handler per `--mode`: each runs its mode on checked inputs and returns its exit code.

Failures a user can act on print one `ERROR:` line (`exit_codes.report_error`) and return
exit code 2 (`report_user_errors`): every `UserError` (`mixmo_tf.config.errors`: a refused
flag, missing data, a locked or unusable folder, a checkpoint of another run, divergence, a
lost worker, nothing to export or predict) with its own message, and an `OSError` (a full
disk, a permission) described. Anything else is a bug and keeps its traceback. The handlers
import the layers they run on first use, so `main.py --help` and flag errors load no
TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import IO

from mixmo_tf import evaluation, importing, serving, training
from mixmo_tf.cli import exit_codes
from mixmo_tf.cli.decoder_messages import decoder_messages_dropped
from mixmo_tf.cli.exit_codes import report_error
from mixmo_tf.config.errors import ConfigError, UserError
from mixmo_tf.config.ranges import TEMPERATURE
from mixmo_tf.config.run_folder import (
    ResultsNotSavedError,
    check_new_run_folder,
    describe_os_error,
    out_of_space,
    space_errors_as_os_errors,
    write_atomically,
)
from mixmo_tf.config.settings import Config
from mixmo_tf.evaluation.options import EvaluationOptions
from mixmo_tf.training import run_guard


def report_user_errors(
    work: Callable[[], int], os_error_line: Callable[[OSError], str] = describe_os_error
) -> int:
    """`work()`'s exit code, or 2 after one `ERROR:` line if it fails in a way the user can
    fix: a `UserError` prints its message; an `OSError` (a full disk, a permission: Python's
    class, not ours to derive) prints `os_error_line(error)`. Any other exception is a bug
    and propagates with its traceback.
    """
    try:
        return work()
    except UserError as error:
        return report_error(str(error))
    except OSError as error:
        return report_error(os_error_line(error))


def check_serving_flags(
    mode: str,
    model_dir: str,
    images: str | None,
    saved_model: str | None,
    temperature: float | None,
) -> None:
    """Raises ConfigError naming the flag when export or predict lacks what it reads, or
    --temperature is outside its range."""
    if temperature is not None:
        TEMPERATURE.check("temperature", temperature)
    if mode == "export" and not model_dir:
        raise ConfigError("--mode=export needs --model_dir=RUN, a folder that training wrote.")
    if mode == "predict":
        if not images:
            raise ConfigError("--mode=predict needs --images, e.g. --images='photos/*.jpg'.")
        if bool(model_dir) == bool(saved_model):
            raise ConfigError(
                "--mode=predict needs exactly one of --model_dir=RUN (its newest checkpoint) and "
                "--saved_model=EXPORT_DIR/<version>."
            )
        if saved_model and temperature is not None:
            raise ConfigError(
                "--temperature applies to --model_dir; a SavedModel keeps its export's "
                "temperature (export again with --temperature to change it)."
            )


def _missing_or_described(error: OSError) -> str:
    """The line of an OSError of training or evaluation: a missing file names itself; any
    other is described (`describe_os_error`)."""
    return str(error) if isinstance(error, FileNotFoundError) else describe_os_error(error)


def _reporting_errors(work: Callable[[], None]) -> int:
    """Runs a training or evaluation `work`; turns the failures it explains into exit codes."""
    import tensorflow as tf

    def reported() -> int:
        try:
            with space_errors_as_os_errors():  # a full disk under TensorFlow's writers too
                work()
        except run_guard.Interrupted as error:
            # SIGTERM / SIGINT: a checkpoint was saved; not an error, but not finished either.
            print(error, file=sys.stderr)
            return exit_codes.INTERRUPTED
        except ResultsNotSavedError as error:
            print(json.dumps(error.results, indent=2))  # the results first: nothing is lost
            return report_error(str(error))
        except (tf.errors.PermissionDeniedError, tf.errors.NotFoundError) as error:
            # A file TensorFlow's file system cannot use (checkpoints, TensorBoard, gs://).
            first_line = error.message.splitlines()[0]
            return report_error(f"{first_line}. Fix the path or its permissions, then rerun.")
        return exit_codes.SUCCESS

    return report_user_errors(reported, _missing_or_described)


def train(config: Config, first: Callable[[], None] | None = None) -> int:
    """`--mode=train`: trains or resumes the run of `config`, after `first` if given (the
    oneDNN measurement, whose data check fails as training's would)."""

    def work() -> None:
        if first is not None:
            first()  # may restart this process (os.execv): before the filter
        with decoder_messages_dropped():
            training.run.train(config)

    return _reporting_errors(work)


def evaluate(runs: Sequence[Config], options: EvaluationOptions) -> int:
    """`--mode=evaluate`: evaluates the runs (one, or an ensemble) and prints the headline
    numbers as JSON on stdout."""

    def work() -> None:
        with decoder_messages_dropped():
            results = evaluation.run.evaluate_runs(runs, options)
        # A note on stderr: stdout carries only the headline's JSON.
        where = evaluation.run.output_dir(runs)
        print(f"Report and figures in {where}; headline numbers:", file=sys.stderr)
        headline = {k: v for k, v in results.items() if isinstance(v, (int, float))}
        print(json.dumps(headline, indent=2))

    return _reporting_errors(work)


def export(model_dir: str, export_dir: str | None, temperature: float | None) -> int:
    """`--mode=export`: exports the run's newest checkpoint; prints the version folder."""

    def work() -> int:
        path = serving.export.export_run(model_dir, export_dir, temperature)
        print(f"Exported {model_dir} to {path}")
        return exit_codes.SUCCESS

    return report_user_errors(work, _space_or_said)


def _space_or_said(error: OSError) -> str:
    """The line of an OSError of the export: a full export folder is described
    (`describe_os_error`); any other says itself."""
    full = out_of_space(error)
    return describe_os_error(full) if full else str(error)


@dataclasses.dataclass(frozen=True)
class ImportInputs:
    """What `--mode=import` imports, checked: the run's Config, the local file, and where a
    downloaded file came from (imported_from.json's "released_row" and "url"; {} for a FILE)."""

    config: Config
    path: str
    origin: dict


def check_import_inputs(
    checkpoint: str | None, flagged: Config, model_dir_given: bool, given: Sequence[str]
) -> ImportInputs:
    """Checks the flags and the file of `--mode=import` without TensorFlow, downloading a
    released row's file or a URL's first (`mixmo_tf.importing.downloads`; once the run folder
    is known to be new); returns what the import will use. Nothing is written before one of
    these errors is raised but the downloaded file, in its cache.

    Args:
        checkpoint: `--checkpoint`: a file, a released row's name, or an http(s) URL.
        flagged: the settings given (for a row, on top of its flagfile).
        model_dir_given: whether `--model_dir` was given (on the command line or a flagfile).
        given: names of the Config fields given.

    Raises:
        UserError: the flags lack the checkpoint or the folder, the folder is not new, the
            name is no file, row or URL (the closest rows named), the download fails, the file
            is refused (damaged, a global that a state dict never holds) or of another
            network than its row, or a flag contradicts it.
        OSError: the file cannot be read, or the download cannot be written.
    """
    authors = importing.authors_checkpoint
    if not checkpoint:
        raise ConfigError(
            "--mode=import needs --checkpoint: the authors' .pt file, a released row's name "
            "(--checkpoint=list lists them) or an http(s):// URL."
        )
    if not model_dir_given:
        raise ConfigError("--mode=import needs --model_dir=RUN, the new run folder to write.")
    check_new_run_folder(flagged.model_dir)
    if os.path.isfile(checkpoint):
        path, origin = checkpoint, {}
        architecture = authors.read_authors_checkpoint(path).architecture
    else:
        row = importing.downloads.checkpoint_row(checkpoint)
        if row is not None:
            # A flag that contradicts the row's network is refused before the download.
            authors.import_config(authors.AuthorsArchitecture(**row.network), flagged, given)
        fetched = importing.downloads.fetch_checkpoint(checkpoint)
        path, architecture = fetched.path, fetched.architecture
        origin = {"released_row": fetched.row.name if fetched.row else None, "url": fetched.url}
    return ImportInputs(authors.import_config(architecture, flagged, given), path, origin)


def import_checkpoint(imported: ImportInputs, flagged: Config, given: Sequence[str]) -> int:
    """`--mode=import`: writes the run folder of an authors' checkpoint; prints what it holds."""
    return report_user_errors(lambda: _import_checkpoint(imported, flagged, given))


def _import_checkpoint(imported: ImportInputs, flagged: Config, given: Sequence[str]) -> int:
    """The import of `import_checkpoint`; its errors a user can fix propagate."""
    _, config, record = importing.pytorch_import.import_run(
        imported.path, flagged, given, imported.origin
    )
    architecture = importing.authors_checkpoint.AuthorsArchitecture(**record["architecture"])
    row = imported.origin.get("released_row")
    recipe = (
        f"the recipe of {row}'s flagfile"
        if row
        else "the file holds the network, not its recipe: the row's --flagfile records that"
    )
    print(
        f"Imported {imported.path} ({architecture.label}, epoch {record['epoch']}) into "
        f"{config.model_dir} at step {record['step']}, recorded as --dataset={config.dataset} "
        f"--mixing={config.mixing} --msda={config.msda} ({recipe})."
    )
    print(
        importing.authors_checkpoint.optimizer_note(record["optimizer"], record["momentum_buffers"])
    )
    return exit_codes.SUCCESS


def predict(
    images: str,
    model_dir: str,
    saved_model: str | None,
    output: str | None,
    temperature: float | None,
) -> int:
    """`--mode=predict`: one JSON line (or CSV row) per file `images` names.

    `output` is written whole at the end (`write_atomically`): a run that fails leaves the
    file it names as it was.

    Returns 0 if every file was predicted, 1 if some could not be read or decoded, 2 if
    nothing could run or the model's outputs are not finite.
    """
    # An OSError reading the model says itself (it names the file); one writing the
    # predictions is described in `_predict`.
    return report_user_errors(
        lambda: _predict(images, model_dir, saved_model, output, temperature), str
    )


def _predict(
    images: str,
    model_dir: str,
    saved_model: str | None,
    output: str | None,
    temperature: float | None,
) -> int:
    """The prediction of `predict`; its errors a user can fix propagate, but for one writing
    the predictions (described with `--output`)."""
    prediction = serving.predict
    paths = prediction.image_paths(images, output)
    if not paths:
        return report_error(f"--images={images} matches no file.")
    if output:
        prediction.check_output(output, paths, saved_model or model_dir)
    if saved_model:
        predictor = prediction.predictor_from_saved_model(saved_model)
    else:
        predictor = prediction.predictor_from_run(model_dir, temperature)
    csv_format = bool(output) and output.lower().endswith(".csv")

    def write(stream: IO[str]) -> tuple[int, int]:
        records = prediction.predict_files(predictor, paths)
        with decoder_messages_dropped():  # one ERROR line per bad file, nothing more
            return prediction.write_predictions(records, stream, sys.stderr, csv_format)

    try:
        counts = _write_output(output, write) if output else write(sys.stdout)
    except OSError as error:  # writing the predictions, to --output or stdout
        return report_error(describe_os_error(error, "--output"))
    predicted, failed = counts
    print(f"Predicted {predicted} of {len(paths)} files; {failed} failed.", file=sys.stderr)
    return exit_codes.SOME_FILES_FAILED if failed else exit_codes.SUCCESS


def _write_output(path: str, write: Callable[[IO[str]], tuple[int, int]]) -> tuple[int, int]:
    """`write(stream)` into the file `path`, replaced only once `write` has finished."""
    counts = []

    def write_file(temporary: str) -> None:
        with open(temporary, "w", newline="", encoding="utf-8") as stream:
            counts.append(write(stream))

    write_atomically(path, write_file)
    return counts[0]
