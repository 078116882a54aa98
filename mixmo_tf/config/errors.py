"""The base class of the errors a user can fix, and its general kinds.

A `UserError` is a failure whose message names the problem and the fix in one line: a flag
out of range, a missing dataset or checkpoint, a run folder that is not new, a file of the
wrong kind, a run that diverged, a lost worker. The command line catches this one class and
prints its message as one `ERROR:` line with exit code 2 (`mixmo_tf.cli.modes`), so a new
kind of failure needs no edit there: derive it from `UserError` (or from one of the kinds
below) and raise it.

What does not belong here:

- programming errors (a wrong argument to a Python function of the package, a broken
  invariant): they keep Python's own classes (`TypeError`, `ValueError`, ...) and their
  traceback, which is what a bug report needs;
- TensorFlow's and Keras' own errors, and `OSError` (a full disk, a permission): the package
  does not define them; the command line describes an `OSError` with
  `mixmo_tf.config.run_folder.describe_os_error`;
- stops that are not errors (`mixmo_tf.training.run_guard.Interrupted`, Ctrl-C): they have
  their own exit codes.

A class that was a `ValueError` or `FileNotFoundError` stays one (multiple inheritance), so
code that catches the built-in class keeps working.
"""

from __future__ import annotations


class UserError(Exception):
    """An error the user can fix: its message names the problem and the fix, in one line."""


class ConfigError(UserError, ValueError):
    """A setting is refused: a flag, a `Config` field or a combination of them (names the
    flag, the allowed values and what was received)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the command reads does not exist (a run, its checkpoint or model, an
    export, the data)."""


class UnusableFileError(UserError, ValueError):
    """A file or folder the command reads exists but holds what it cannot use (a damaged
    archive, a temperature file of the wrong form, an output path that would overwrite an
    input)."""
