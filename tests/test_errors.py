"""Every error a user can fix is a `UserError`, and the command line reports each in one line.

The walk imports every module of the package and fails on an exception class that does not
derive from `mixmo_tf.config.errors.UserError`, unless the allow-list below names it with
the reason it never reaches a user as an error.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import mixmo_tf
from mixmo_tf.cli import modes
from mixmo_tf.config.errors import ConfigError, MissingFileError, UnusableFileError, UserError
from mixmo_tf.config.ranges import Range
from mixmo_tf.config.settings import Config

# Exception classes of the package that are not UserErrors, each with why.
NOT_USER_ERRORS = {
    # Internal to the torch-file reader: `read_torch_file` turns each into a TorchFileError
    # (a UserError) naming the file before it leaves the module.
    "mixmo_tf.importing.torch_format._Problem": "internal, becomes TorchFileError",
    "mixmo_tf.importing.torch_format._NotTorch": "internal, becomes TorchFileError",
    "mixmo_tf.importing.torch_format._Damaged": "internal, becomes TorchFileError",
    "mixmo_tf.importing.torch_format._Unsupported": "internal, becomes TorchFileError",
    "mixmo_tf.importing.torch_format._Refused": "internal, becomes TorchFileError",
    # Caught by the oneDNN measurement, which then keeps TensorFlow's default and says why.
    "mixmo_tf.tuning.onednn.MeasurementError": "internal, the measurement falls back",
    # Stops, not errors: a checkpoint was saved (exit 3), or a signal ended the command
    # where nothing was saved (130 / 143); KeyboardInterrupts, as Ctrl-C is.
    "mixmo_tf.training.run_guard.Interrupted": "a stop after a checkpoint, exit 3",
    "mixmo_tf.training.run_guard.StoppedAtOnce": "a second Ctrl-C, exit 130",
    "mixmo_tf.cli.exit_codes.Terminated": "SIGTERM stops as Ctrl-C does, exit 143",
}


def _exception_classes() -> dict[str, type]:
    """Every exception class defined in a module of the package, by qualified name."""
    found = {}
    for module_info in pkgutil.walk_packages(mixmo_tf.__path__, "mixmo_tf."):
        module = importlib.import_module(module_info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module.__name__:
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return found


def test_every_exception_class_of_the_package_is_a_user_error_or_allowed():
    classes = _exception_classes()
    not_user = sorted(
        name
        for name, cls in classes.items()
        if not issubclass(cls, UserError) and name not in NOT_USER_ERRORS
    )
    assert not not_user, (
        f"derive these from UserError, or allow-list them with a reason: {not_user}"
    )
    # The walk found the classes it should (a walk that imports nothing passes vacuously).
    assert {"mixmo_tf.data.tfds_loading.DataNotFoundError", *NOT_USER_ERRORS} <= set(classes)
    assert not [name for name in NOT_USER_ERRORS if issubclass(classes[name], UserError)]


@pytest.mark.parametrize(
    "name, builtin",
    [
        ("mixmo_tf.config.run_record.RunConfigError", ValueError),
        ("mixmo_tf.config.run_record.CheckpointMismatchError", ValueError),
        ("mixmo_tf.data.sources.DataSourceError", ValueError),
        ("mixmo_tf.data.folder.ImageFolderError", FileNotFoundError),
        ("mixmo_tf.data.tfds_loading.DataNotFoundError", FileNotFoundError),
        ("mixmo_tf.evaluation.options.OptionError", ValueError),
        ("mixmo_tf.importing.torch_format.TorchFileError", ValueError),
        ("mixmo_tf.importing.authors_checkpoint.AuthorsCheckpointError", ValueError),
        ("mixmo_tf.serving.predict.BrokenModelError", ValueError),
        ("mixmo_tf.training.checkpoints.CheckpointUnusableError", ValueError),
        ("mixmo_tf.training.callbacks.DivergedError", FloatingPointError),
    ],
)
def test_a_user_error_keeps_its_builtin_class(name, builtin):
    # Code that catches the built-in class (user code, `pytest.raises(ValueError)`) still does.
    module, _, class_name = name.rpartition(".")
    cls = getattr(importlib.import_module(module), class_name)
    assert issubclass(cls, UserError) and issubclass(cls, builtin)


def test_the_config_refuses_with_a_config_error_that_is_a_value_error():
    with pytest.raises(ConfigError, match="--num_members=1 is the single network"):
        Config(num_members=1, mixing="cutmix")
    with pytest.raises(ConfigError, match=r"--lr must be a finite number"):
        Range(0.0, 1.0).check("lr", float("nan"))
    assert issubclass(ConfigError, ValueError)


def test_a_missing_file_error_says_only_its_message():
    error = MissingFileError("run/model.keras does not exist: train the run first.")
    assert str(error) == "run/model.keras does not exist: train the run first."
    assert isinstance(error, FileNotFoundError) and isinstance(error, UserError)


class _NewKind(UserError):
    """A kind of failure no handler lists: it must still be reported, not a traceback."""


def test_a_new_user_error_in_a_mode_is_one_error_line_with_exit_2(monkeypatch, capsys, tmp_path):
    def export_run(model_dir, export_dir, temperature):
        raise _NewKind("the run cannot be exported: do this instead.")

    monkeypatch.setattr(mixmo_tf.serving.export, "export_run", export_run)
    assert modes.export(str(tmp_path / "run"), None, None) == 2
    captured = capsys.readouterr()
    assert captured.err == "ERROR: the run cannot be exported: do this instead.\n"
    assert captured.out == ""


@pytest.mark.parametrize("error", [ConfigError, UnusableFileError, MissingFileError])
def test_each_kind_of_user_error_is_reported_by_its_message(capsys, error):
    def work() -> int:
        raise error("what is wrong: what to do.")

    assert modes.report_user_errors(work) == 2
    assert capsys.readouterr().err == "ERROR: what is wrong: what to do.\n"


def test_an_os_error_is_described_and_a_bug_keeps_its_traceback(capsys, tmp_path):
    def full_disk() -> int:
        raise PermissionError(13, "Permission denied", str(tmp_path / "x"))

    assert modes.report_user_errors(full_disk) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ERROR: {tmp_path / 'x'} cannot be used (Permission denied")

    def bug() -> int:
        raise ValueError("a programming error")

    with pytest.raises(ValueError, match="a programming error"):
        modes.report_user_errors(bug)


def test_a_new_user_error_in_the_flag_checks_is_one_error_line_with_exit_2(monkeypatch, capsys):
    from absl import flags

    from mixmo_tf.cli import app, flag_use

    def refuse(values, runs):
        raise _NewKind("--dataset=digits is refused here: give another.")

    monkeypatch.setattr(flag_use, "check_flags_used", refuse)
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["main.py", "--dataset=digits"])
    try:
        with pytest.raises(SystemExit) as exit_:
            app.main(["main.py"])
    finally:
        flags.FLAGS.unparse_flags()
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "ERROR: --dataset=digits is refused here: give another.\n"
