"""Predictions for image files (`--mode=predict`): the serving graph's answer for each file.

The files go through the exported `predict_image_bytes` signature (a SavedModel's, or the
same function built in memory from a run's checkpoint), so a prediction here is what TF
Serving answers for the same bytes. A file that cannot be read or decoded is reported with
the reason and skipped; the others are still predicted. Nothing is written over an input:
`check_output` refuses an `--output` that is one of the images or lies in the model's folder,
and `image_paths` leaves out an earlier output that a folder or pattern matches.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import IO, Any

import numpy as np
import tensorflow as tf

from mixmo_tf.config.errors import ConfigError, MissingFileError, UnusableFileError, UserError
from mixmo_tf.data.class_names import class_names
from mixmo_tf.data.folder import is_image_file
from mixmo_tf.serving.export import CLASS_NAMES_ASSET
from mixmo_tf.serving.graph import IMAGE_BYTES_SIGNATURE, ServingModule, image_bytes_function
from mixmo_tf.serving.run_source import restore_for_serving, run_temperature
from mixmo_tf.training.backend import is_tensorflow

DEFAULT_BATCH_SIZE = 32
_SUMMARY_FIELDS = ("class", "confidence", "entropy", "mutual_information", "disagreement")


@dataclasses.dataclass(frozen=True)
class Predictor:
    """The serving function for encoded images and the names of its classes.

    Attributes:
        predict_bytes: `(N,)` string tensor of JPEG / PNG files -> the serving outputs.
        class_names: the name of each label, in label order.
        source: the SavedModel or run folder it serves, named when its outputs are broken.
    """

    predict_bytes: Callable[[tf.Tensor], Mapping[str, tf.Tensor]]
    class_names: tuple[str, ...]
    source: str


class BrokenModelError(UserError, ValueError):
    """The model answers with non-finite probabilities: its weights are broken."""


def predictor_from_saved_model(path: str) -> Predictor:
    """The `predict_image_bytes` signature of an exported version folder (`DIR/<version>`).

    Raises:
        MissingFileError: `path` holds no SavedModel of `mixmo_tf.serving.export`, or one
            that does not load.
        UnusableFileError: its class-names asset does not hold one line per class.
    """
    names_path = os.path.join(path, "assets", CLASS_NAMES_ASSET)
    if not (tf.saved_model.contains_saved_model(path) and os.path.exists(names_path)):
        raise MissingFileError(
            f"{path} is not a version folder written by --mode=export (it needs saved_model.pb "
            f"and assets/{CLASS_NAMES_ASSET}); pass e.g. --saved_model=RUN/export/1."
        )
    try:
        signatures = tf.saved_model.load(path).signatures
    except (OSError, ValueError) as error:  # a damaged saved_model.pb, missing variables
        raise MissingFileError(
            f"{path} holds a SavedModel that does not load ({error}); export the run again "
            "with --mode=export."
        ) from error
    if IMAGE_BYTES_SIGNATURE not in signatures:
        raise MissingFileError(
            f"{path} is a SavedModel without the {IMAGE_BYTES_SIGNATURE} signature of "
            "--mode=export (it has: " + ", ".join(sorted(signatures)) + ")."
        )
    signature = signatures[IMAGE_BYTES_SIGNATURE]
    with open(names_path, encoding="utf-8") as stream:
        names = tuple(stream.read().splitlines())
    num_classes = signature.structured_outputs["probabilities"].shape[-1]
    if len(names) != num_classes:
        raise UnusableFileError(
            f"{names_path} has {len(names)} lines but the model has {num_classes} classes: "
            "restore the file the export wrote (one class name per line, in label order)."
        )
    return Predictor(lambda image_bytes: signature(image_bytes=image_bytes), names, path)


def predictor_from_run(model_dir: str, temperature: float | None = None) -> Predictor:
    """The serving function of a run's newest checkpoint, built in memory (nothing written):
    the serving graph on TensorFlow, the same decoding and outputs around the model's own
    calls on the other Keras backends (`graph.image_bytes_function`)."""
    temperature = run_temperature(model_dir, temperature)
    run = restore_for_serving(model_dir)
    spec = run.config.spec
    names = tuple(class_names(spec))
    if not is_tensorflow():  # the model's logits computed on its own backend
        predict = image_bytes_function(run.model, spec, names, temperature or 1.0)
        return Predictor(predict, names, model_dir)
    module = ServingModule(run.model, spec, names, temperature or 1.0)
    return Predictor(module.predict_image_bytes, module.class_names, model_dir)


def image_paths(pattern: str, output: str | None = None) -> list[str]:
    """The files `--images` names: an existing file as it is (`scan[1].png` is a name, not
    a pattern matching scan1.png), a folder's files, or a glob pattern's files, sorted.

    A folder or pattern leaves out `output` if it is not an image: the predictions of an
    earlier run written among the images are the file this run replaces, not an input.
    """
    if os.path.isfile(pattern):
        return [pattern]
    if os.path.isdir(pattern):
        pattern = os.path.join(pattern, "*")
    paths = sorted(path for path in glob.glob(pattern, recursive=True) if not os.path.isdir(path))
    if output and os.path.isfile(output) and not _starts_like_an_image(output):
        paths = [path for path in paths if not _same_file(path, output)]
    return paths


def _same_file(path: str, other: str) -> bool:
    """Whether two names are the same file; False if `path` cannot be reached (a broken link
    among the images is reported when it is read, like any unreadable file)."""
    try:
        return os.path.samefile(path, other)
    except OSError:
        return False


def _starts_like_an_image(path: str) -> bool:
    """Whether the file's first bytes are an image format's signature (or it cannot be read:
    then it is treated as the image it may be)."""
    try:
        return is_image_file(path)
    except OSError:
        return True


def check_output(output: str, images: Sequence[str], model_folder: str) -> None:
    """Refuses an `--output` that writing would destroy an input with.

    Raises:
        ConfigError: `output` is a folder, one of the `images` (the same file by any name), or
            lies inside `model_folder` (the run or SavedModel: its files are the model).
    """
    if os.path.isdir(output):
        raise ConfigError(f"--output={output} is a folder: name the file to write.")
    if os.path.exists(output):
        for image in images:
            if _same_file(image, output):
                raise ConfigError(
                    f"--output={output} is one of the --images files ({image}): writing the "
                    "predictions would destroy it. Name another file."
                )
    folder = os.path.realpath(model_folder)
    if os.path.commonpath([folder, os.path.realpath(output)]) == folder:
        raise ConfigError(
            f"--output={output} lies inside {model_folder}, the model's folder: the "
            "predictions could replace a file of the model. Write them elsewhere."
        )


# A file the graph refuses: its check or decoder fails (InvalidArgumentError); graphs
# exported by earlier versions, whose check message holds the file's raw bytes, fail to
# format it for a file that does not start with UTF-8 text (UnicodeDecodeError).
_BAD_FILE_ERRORS = (tf.errors.InvalidArgumentError, UnicodeDecodeError)


def _error_summary(error: tf.errors.OpError | UnicodeDecodeError) -> str:
    """The line of a graph error that says what was wrong (a failed check, a decoder's error).

    TensorFlow puts it just before the `[[{{node ...}}]]` line, after the stack of the
    Python code that defined the op.
    """
    if isinstance(error, UnicodeDecodeError):
        return "not a JPEG or PNG file (its first bytes are binary, not an image signature)"
    lines = [line.strip() for line in error.message.splitlines() if line.strip()]
    node_line = next((i for i, line in enumerate(lines) if line.startswith("[[")), len(lines))
    return lines[node_line - 1] if node_line else error.message


def _check_finite(outputs: Mapping[str, tf.Tensor], paths: Sequence[str], source: str) -> None:
    """Raises BrokenModelError if a probability or uncertainty is NaN or Inf: the images
    reach the network as finite pixels, so only broken weights give them."""
    finite = np.ones(len(paths), bool)
    for value in outputs.values():
        if value.dtype.is_floating:
            values = value.numpy().reshape(len(paths), -1)
            finite &= np.isfinite(values).all(axis=1)
    if not finite.all():
        raise BrokenModelError(
            f"{source} gives NaN or Inf probabilities (for {paths[int(np.argmin(finite))]}): "
            "its weights are broken. Predict with a run or an export whose weights are finite."
        )


def _records(
    paths: Sequence[str], outputs: Mapping[str, tf.Tensor], predictor: Predictor
) -> list[dict]:
    """One prediction record per file from a batch's outputs.

    Raises:
        BrokenModelError: the outputs are not finite.
    """
    _check_finite(outputs, paths, predictor.source)
    names = predictor.class_names
    member_classes = np.argmax(outputs["member_probabilities"].numpy(), axis=-1)
    top_class = outputs["classes"].numpy()[:, 0]
    top_score = outputs["scores"].numpy()[:, 0]
    return [
        {
            "path": path,
            "class": names[top_class[i]],
            "confidence": float(top_score[i]),
            "entropy": float(outputs["entropy"][i]),
            "mutual_information": float(outputs["mutual_information"][i]),
            "disagreement": float(outputs["disagreement"][i]),
            "member_classes": [names[c] for c in member_classes[i]],
        }
        for i, path in enumerate(paths)
    ]


def _read(path: str) -> bytes | str:
    """The file's bytes, or the reason it cannot be read."""
    try:
        with open(path, "rb") as stream:
            return stream.read()
    except OSError as error:
        return error.strerror or str(error)


def predict_files(
    predictor: Predictor, paths: Iterable[str], batch_size: int = DEFAULT_BATCH_SIZE
) -> Iterator[dict[str, Any]]:
    """A record per file, in order: its prediction, or `{"path", "error"}`.

    Files go through the graph in batches; a batch holding an undecodable file is retried
    file by file, so one bad file costs the others nothing but time.

    Raises:
        BrokenModelError: the model gives non-finite probabilities.
    """
    paths = list(paths)
    for start in range(0, len(paths), batch_size):
        batch = [(path, _read(path)) for path in paths[start : start + batch_size]]
        for path, content in batch:
            if isinstance(content, str):
                yield {"path": path, "error": content}
        readable = [(path, content) for path, content in batch if isinstance(content, bytes)]
        if not readable:
            continue
        try:
            outputs = predictor.predict_bytes(tf.constant([content for _, content in readable]))
            yield from _records([path for path, _ in readable], outputs, predictor)
        except _BAD_FILE_ERRORS:
            for path, content in readable:
                try:
                    outputs = predictor.predict_bytes(tf.constant([content]))
                    yield from _records([path], outputs, predictor)
                except _BAD_FILE_ERRORS as error:
                    yield {"path": path, "error": _error_summary(error)}


def write_predictions(
    records: Iterable[dict[str, Any]],
    stream: IO[str],
    errors: IO[str],
    csv_format: bool,
) -> tuple[int, int]:
    """Writes prediction records as JSON lines (or CSV) and failures as `ERROR:` lines.

    Args:
        records: from `predict_files`.
        stream: where predictions go.
        errors: where `ERROR: <path>: <reason>` lines go.
        csv_format: CSV with a header (members as `member_<i>_class` columns) instead of
            JSON lines.

    Returns:
        (predicted files, failed files).
    """
    predicted = failed = 0
    writer = None
    for record in records:
        if "error" in record:
            failed += 1
            print(f"ERROR: {record['path']}: {record['error']}", file=errors, flush=True)
            continue
        predicted += 1
        if not csv_format:
            print(json.dumps(record, allow_nan=False), file=stream, flush=True)
            continue
        members = record.pop("member_classes")
        if writer is None:
            member_fields = [f"member_{i}_class" for i in range(len(members))]
            writer = csv.DictWriter(stream, ["path", *_SUMMARY_FIELDS, *member_fields])
            writer.writeheader()
        writer.writerow({**record, **{f"member_{i}_class": c for i, c in enumerate(members)}})
    return predicted, failed
