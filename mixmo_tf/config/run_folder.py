"""A run folder: the name of every file and folder in it, and how files are written there.

Training, evaluation, export and prediction all address `<model_dir>` through `RunFolder`,
so a file's name is written once. Every file the project writes whole (run_config.json,
model.keras, reports, caches) goes through `write_atomically`: it is written under a
temporary name in the same folder and renamed into place, so a crash or a full disk leaves
the previous version or nothing, never a truncated file; a folder written whole (an imported
run) likewise goes through `new_folder_atomically`. Both follow the umask, so other users of
a shared run folder can read it. Imports no TensorFlow.

Layout of `<model_dir>`::

    run_config.json        the run's settings (`mixmo_tf.config.run_record`)
    dataset_spec.json      the data it trained on (`mixmo_tf.config.run_record`)
    run.lock               held by the training process (`mixmo_tf.training.run_guard`)
    checkpoints/           weights and optimizer state (`mixmo_tf.training.checkpoints`)
    logs/                  TensorBoard: train/, validation/ (per epoch), eval/ (evaluation)
    model.keras            the final model
    temperature.json       T fitted on --validation_split by evaluation
    eval/                  results.json, report.md and the figures; eval/ensemble/ for
                           an ensemble of runs (--ensemble_dirs)
    export/<version>/      SavedModels for TF Serving (`mixmo_tf.serving.export`)
    preset/                the run as a preset (`mixmo_tf.serving.presets`)
    imported_from.json     the authors' file an imported run came from
                           (`mixmo_tf.importing.pytorch_import`)
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import re
import resource
import shutil
import tempfile
from collections.abc import Callable, Iterator

from mixmo_tf.config.errors import UserError

RUN_CONFIG = "run_config.json"
DATASET_SPEC = "dataset_spec.json"
LOCK = "run.lock"
CHECKPOINTS = "checkpoints"
LOGS = "logs"
FINAL_MODEL = "model.keras"
TEMPERATURE = "temperature.json"
EVALUATION = "eval"
EXPORTS = "export"
PRESET = "preset"
IMPORT_RECORD = "imported_from.json"
# Inside the evaluation folder.
RESULTS = "results.json"
REPORT = "report.md"
RELIABILITY_FIGURE = "reliability.png"
SEVERITY_FIGURE = "corruption_severity.png"
OOD_FIGURE = "ood_scores.png"
ENSEMBLE_EVALUATION = "ensemble"
# Inside logs/: Keras' TensorBoard callback writes train/ and validation/.
VALIDATION_LOGS = "validation"
# How `write_atomically` names a file while it is being written.
PARTIAL_PREFIX = ".partial-"


@dataclasses.dataclass(frozen=True)
class RunFolder:
    """The paths of a run folder `path` (nothing is created or read here)."""

    path: str

    def _join(self, *names: str) -> str:
        return os.path.join(self.path, *names)

    @property
    def run_config(self) -> str:
        return self._join(RUN_CONFIG)

    @property
    def dataset_spec(self) -> str:
        return self._join(DATASET_SPEC)

    @property
    def lock(self) -> str:
        return self._join(LOCK)

    @property
    def checkpoints(self) -> str:
        return self._join(CHECKPOINTS)

    @property
    def logs(self) -> str:
        return self._join(LOGS)

    @property
    def validation_logs(self) -> str:
        return self._join(LOGS, VALIDATION_LOGS)

    @property
    def evaluation_logs(self) -> str:
        return self._join(LOGS, EVALUATION)

    @property
    def final_model(self) -> str:
        return self._join(FINAL_MODEL)

    @property
    def temperature(self) -> str:
        return self._join(TEMPERATURE)

    @property
    def evaluation(self) -> str:
        return self._join(EVALUATION)

    @property
    def ensemble_evaluation(self) -> str:
        return self._join(EVALUATION, ENSEMBLE_EVALUATION)

    @property
    def exports(self) -> str:
        return self._join(EXPORTS)

    @property
    def preset(self) -> str:
        return self._join(PRESET)

    @property
    def import_record(self) -> str:
        return self._join(IMPORT_RECORD)


class RunFolderError(UserError):
    """A folder or file of the run cannot be used (created, written or read)."""


def check_new_run_folder(path: str) -> None:
    """Raises RunFolderError unless `path` is absent or an empty folder (a run starts there)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise RunFolderError(f"{path} is a file: give a new folder as --model_dir.")
    if os.path.isdir(path) and os.listdir(path):
        raise RunFolderError(
            f"{path} is not empty: an import writes a new run folder. Give a new --model_dir "
            "(or delete that one)."
        )


class ResultsNotSavedError(RunFolderError):
    """Results were computed but could not be written; `results` holds them, to print."""

    def __init__(self, message: str, results: dict):
        super().__init__(message)
        self.results = results


def describe_os_error(error: OSError, flag: str | None = None) -> str:
    """One line naming the path, the reason and the fix, for a folder or file that failed.

    Args:
        error: the failure.
        flag: the flag that chose the path (e.g. "--model_dir"), if one did.
    """
    fix = f"Choose another {flag}" if flag else "Fix the path or its permissions, then rerun"
    if error.errno == errno.ENOTDIR:
        hint = ": a part of that path is a regular file, not a folder"
    elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = ": this user cannot write there"
    elif error.errno in OUT_OF_SPACE and error.filename:
        hint = f": {space_left(os.path.dirname(os.path.abspath(error.filename)), error.errno)}"
        fix = f"{space_fix(error.errno)}, then rerun"
    else:
        hint = ""
    reason = error.strerror or str(error)
    return f"{error.filename or 'A path'} cannot be used ({reason}{hint}). {fix}."


# Write failures that mean the room ran out: a full disk, a used-up quota, a file size limit.
OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def out_of_space(error: BaseException) -> OSError | None:
    """`error` as an OSError (ENOSPC, EDQUOT, EFBIG) if it is a write that ran out of room,
    else None.

    TensorFlow's file errors carry no errno, only the text "<path>; <strerror>", and their
    codes (RESOURCE_EXHAUSTED, OUT_OF_RANGE) are shared with other failures. HDF5's (a Keras
    weights file's) name the file and the errno in their text.
    """
    if isinstance(error, OSError) and error.errno in OUT_OF_SPACE:
        return error
    text = str(error)
    written = re.search(r"filename = '([^']+)'.*?errno = (\d+)", text, re.DOTALL)
    if written and int(written.group(2)) in OUT_OF_SPACE:
        number = int(written.group(2))
        return OSError(number, os.strerror(number), written.group(1))
    if isinstance(error, OSError):
        return None
    for number in OUT_OF_SPACE:
        found = re.search(rf"(\S+); {re.escape(os.strerror(number))}", text)
        if found:
            return OSError(number, os.strerror(number), found.group(1))
    return None


@contextlib.contextmanager
def space_errors_as_os_errors() -> Iterator[None]:
    """Inside, a TensorFlow write that runs out of room (checkpoints, SavedModels, TensorBoard
    events) raises the OSError it stands for, which `describe_os_error` explains."""
    try:
        yield
    except Exception as error:
        full = out_of_space(error)
        if full is None or full is error:
            raise
        raise full from error


def megabytes(size: int) -> str:
    """`size` bytes for people: "12.3 MiB"."""
    return f"{size / 2**20:.1f} MiB"


def space_left(folder: str, number: int) -> str:
    """What room is left in `folder` after the out-of-space failure `number` (an errno)."""
    if number == errno.EFBIG:
        limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
        if limit == resource.RLIM_INFINITY:
            return "the file system's largest file is smaller"
        return f"this process may write files of at most {megabytes(limit)} (ulimit -f)"
    if number == errno.EDQUOT:
        return "this user's disk quota there is used up"
    try:
        return f"{megabytes(shutil.disk_usage(folder).free)} are free there"
    except OSError:
        return "the disk is full"


def space_fix(number: int) -> str:
    """What to do after the out-of-space failure `number` (an errno), as a clause."""
    if number == errno.EFBIG:
        return "Raise the file size limit (ulimit -f) or write elsewhere"
    return "Free some space there (or choose another folder)"


def is_local_path(path: str) -> bool:
    """Whether `path` is on a POSIX file system (not gs://, s3://, hdfs://...)."""
    return "://" not in path


def ensure_writable_folder(path: str, flag: str = "--model_dir") -> None:
    """Creates `path` if needed and checks that files can be written in it.

    Raises:
        RunFolderError: the folder cannot be created or written, with the path and the fix.
    """
    if not is_local_path(path):
        return
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write_test_{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        raise RunFolderError(describe_os_error(error, flag)) from error


def _umask() -> int:
    """The process's umask: read from /proc on Linux (no window with another umask for other
    threads), else set and restored."""
    try:
        with open("/proc/self/status") as stream:
            for line in stream:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def follow_umask(path: str) -> None:
    """Gives the file or folder `path` the permissions a plain `open` or `os.mkdir` gives under
    the current umask (`tempfile` creates its files 0600 and folders 0700, which other users of
    a shared run folder, e.g. a serving container, cannot read)."""
    base = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, base & ~_umask())


def write_atomically(path: str, write: Callable[[str], None], suffix: str = "") -> None:
    """Has `write(temporary_path)` write the file, then renames it to `path`.

    The temporary file lies in `path`'s folder (so the rename is atomic) and is removed if
    `write` fails. The file gets the permissions of a plain `open` under the current umask,
    so other users of a shared run folder can read it.

    Args:
        path: the file's final path; its folder is created if needed.
        write: writes the whole file at the path it is given.
        suffix: the temporary name's ending, for writers that insist on one (".keras",
            ".npy").
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=PARTIAL_PREFIX, suffix=suffix)
    os.close(handle)
    try:
        write(temporary)
        follow_umask(temporary)
        os.replace(temporary, path)
    except OSError as error:
        if error.errno is None or error.filename not in (temporary, None):
            raise
        # Named by the file being written (a writer's stream errors name none, and the
        # temporary name is gone): the message then says how much room its folder has.
        raise OSError(error.errno, error.strerror, path) from error
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


@contextlib.contextmanager
def new_folder_atomically(path: str) -> Iterator[str]:
    """Inside, the caller fills a staging folder (the value yielded); on a normal exit it is
    renamed to `path`, on any exception removed: a failed or interrupted writer leaves no half
    folder. The folder follows the umask, as one `os.makedirs` creates.

    Raises:
        RunFolderError: `path` exists and is not an empty folder (`check_new_run_folder`).
    """
    check_new_run_folder(path)
    target = os.path.abspath(path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    staging = tempfile.mkdtemp(
        prefix=f".{os.path.basename(target)}.partial-", dir=os.path.dirname(target)
    )
    try:
        follow_umask(staging)
        yield staging
        if os.path.isdir(target):
            os.rmdir(target)  # empty (checked above); rename cannot replace a folder
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_text_atomically(path: str, text: str) -> None:
    """Writes `text` (UTF-8) to `path` with `write_atomically`."""

    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as stream:
            stream.write(text)

    write_atomically(path, write)
