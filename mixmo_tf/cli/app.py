"""The command line: `python main.py --flagfile=flags/<experiment>.flags [--mode=...]`.

Flags become one Config, checked before anything is built; only then does TensorFlow start
and the mode's handler (`mixmo_tf.cli.modes`) run. `--help` lists the MixMo flags grouped
by topic without loading TensorFlow.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Iterator

from absl import app, flags, logging

from mixmo_tf.cli import exit_codes, flag_use, modes, onednn_start, released_rows
from mixmo_tf.cli import flags as mixmo_flags
from mixmo_tf.config import run_record
from mixmo_tf.config.errors import ConfigError
from mixmo_tf.config.settings import Config
from mixmo_tf.evaluation.options import EvaluationOptions

mixmo_flags.define_flags()


@contextlib.contextmanager
def _stderr_discarded() -> Iterator[None]:
    """Sends file descriptor 2 to /dev/null inside the block.

    TensorFlow 2.21 writes some lines at import, before it reads TF_CPP_MIN_LOG_LEVEL (with
    oneDNN on: "oneDNN custom operations are on ..."). An import error still shows: its
    traceback is printed after the block.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _start_tensorflow(quiet: bool) -> None:
    """Imports TensorFlow, without its C++ start-up lines if `quiet`."""
    with _stderr_discarded() if quiet else contextlib.nullcontext():
        import tensorflow  # noqa: F401


def _recorded_runs(config: Config) -> list[Config]:
    """The recorded Configs of the runs to evaluate: --model_dir, or --ensemble_dirs.

    Flags given on top apply where they may differ from a run (e.g. --data_dir) and are
    refused where they contradict it (ConfigError naming them).
    """
    given = mixmo_flags.given_fields(flags.FLAGS)
    folders = flags.FLAGS.ensemble_dirs or [config.model_dir]
    if not flags.FLAGS.ensemble_dirs and not flags.FLAGS["model_dir"].present:
        raise ConfigError("--mode=evaluate needs --model_dir=RUN (a folder training wrote).")
    runs = [
        run_record.config_with_flags(run_record.recorded_config(folder), config, given)
        for folder in folders
    ]
    run_record.check_one_dataset(runs)
    return runs


def _evaluation_inputs(config: Config) -> tuple[list[Config], EvaluationOptions]:
    """The runs and options of --mode=evaluate (UserError if unusable)."""
    runs = _recorded_runs(config)
    options = EvaluationOptions(
        corruptions=flags.FLAGS.corruptions,
        corruptions_dir=flags.FLAGS.corruptions_dir,
        ood_dataset=flags.FLAGS.ood_dataset,
    )
    options.check(runs[0].dataset)
    return runs, options


def main(argv: list[str], quiet_tensorflow: bool = False) -> None:
    """Runs the mode chosen by --mode with the Config built from the flags; exits with its code.

    Args:
        argv: what absl left of the command line (the program name only, if well formed).
        quiet_tensorflow: discard what TensorFlow prints while it is imported.
    """
    if len(argv) > 1:
        sys.exit(
            exit_codes.report_error(
                f"Unexpected arguments (flags start with --): {' '.join(argv[1:])}"
            )
        )
    # The one catch of the errors a user can fix: a refused flag or input (before TensorFlow
    # starts), or any that a mode's handler lets through.
    sys.exit(modes.report_user_errors(functools.partial(_run_mode, quiet_tensorflow)))


def _run_mode(quiet_tensorflow: bool) -> int:
    """Checks the flags and what they name, then starts TensorFlow and runs the mode; returns
    its exit code.

    Raises:
        UserError: a flag or the file or folder it names is refused (before TensorFlow).
        OSError: a file the checks read cannot be read.
    """
    values = flags.FLAGS
    if values.checkpoint == released_rows.LIST:
        print(released_rows.listing())
        return exit_codes.SUCCESS
    mixmo_flags.check_flags_apply(values)
    config = mixmo_flags.config_from_flags(values)
    if values.mode in ("export", "predict"):
        modes.check_serving_flags(
            values.mode, values.model_dir, values.images, values.saved_model, values.temperature
        )
    runs = [config]  # the settings in effect, which decide the flags they read
    if values.mode == "evaluate":
        runs, options = _evaluation_inputs(config)
    given = mixmo_flags.given_fields(values)
    if values.mode == "import":
        # The file is fetched (a row or a URL), read and checked before TensorFlow starts: a
        # bad one fails at once.
        imported = modes.check_import_inputs(
            values.checkpoint, config, values["model_dir"].present, given
        )
        runs = [imported.config]
    flag_use.check_flags_used(values, runs)
    if not values["verbosity"].present:
        # tfds and checkpoint lines drown the bars and the messages; --verbosity=0 shows them.
        logging.set_verbosity(logging.ERROR)

    # oneDNN is read once, when TensorFlow starts: a training run sets its cached choice.
    measure_onednn = values.mode == "train" and onednn_start.before_tensorflow(config)
    # TensorFlow work starts only after the flags are valid.
    _start_tensorflow(quiet_tensorflow)
    if values.mode == "train":
        measure = functools.partial(onednn_start.measure_and_restart, config, quiet_tensorflow)
        return modes.train(config, first=measure if measure_onednn else None)
    if values.mode == "evaluate":
        return modes.evaluate(runs, options)
    if values.mode == "import":
        return modes.import_checkpoint(imported, config, given)
    if values.mode == "export":
        return modes.export(values.model_dir, values.export_dir, values.temperature)
    return modes.predict(
        values.images, values.model_dir, values.saved_model, values.output, values.temperature
    )


_SHORT_HELP = ("--help", "-h", "-?", "--helpshort")


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with its errors as one `ERROR:` line and exit code 2 (absl's own
    parser prints a usage banner and exits 1, the code of an unexpected failure here).

    `--mode=import --checkpoint=ROW` parses again with the row's flagfile first
    (`released_rows.row_flagfile`): the flags given apply on top of its recipe.
    """
    try:
        remaining = flags.FLAGS(argv)
        if flags.FLAGS.mode != "import":
            return remaining
        flagfile = released_rows.row_flagfile(flags.FLAGS.checkpoint, argv[1:])
        if flagfile is None:
            return remaining
        flags.FLAGS.unparse_flags()
        return flags.FLAGS([argv[0], f"--flagfile={flagfile}", *argv[1:]])
    except ConfigError as error:
        sys.exit(exit_codes.report_error(str(error)))
    except flags.Error as error:
        message = str(error).replace("ERROR:: ", "")
        sys.exit(exit_codes.report_error(f"{message}. `--help` lists the flags."))
    except UnicodeDecodeError as error:
        # A flagfile that is not UTF-8 text (absl reads flagfiles as text).
        sys.exit(
            exit_codes.report_error(
                f"--flagfile={_undecodable_flagfile(argv)} is not UTF-8 text ({error.reason} "
                f"at byte {error.start}): give a text file of --flag=value lines."
            )
        )


def _undecodable_flagfile(argv: list[str]) -> str:
    """The first flagfile of the command line that is not UTF-8 ("..." if none is: a nested
    flagfile)."""
    for argument in argv:
        if argument.startswith("--flagfile="):
            path = argument.split("=", 1)[1]
            try:
                with open(path, encoding="utf-8") as stream:
                    stream.read()
            except UnicodeDecodeError:
                return path
            except OSError:
                continue
    return "..."


def run() -> None:
    """Entry point of `main.py` and the `mixmo-tf` console script.

    TensorFlow's C++ start-up lines (CPU feature notes, oneDNN's notice) say nothing a user
    can act on: they are hidden unless TF_CPP_MIN_LOG_LEVEL is set (TF_CPP_MIN_LOG_LEVEL=0
    brings them back). `--help` lists the MixMo flags grouped by topic; `--helpfull` keeps
    absl's full list. Ctrl-C or SIGTERM outside training's own handler ends the command with
    one line saying what was left (`exit_codes.stops_reported`).
    """
    quiet = onednn_start.QUIET_VARIABLE not in os.environ
    os.environ.setdefault(onednn_start.QUIET_VARIABLE, "3")
    if any(argument in _SHORT_HELP for argument in sys.argv[1:]):
        print(f"{(sys.modules['__main__'].__doc__ or '').strip()}\n")
        print(f"MixMo flags (--helpfull lists every flag):{mixmo_flags.grouped_help()}")
        sys.exit(exit_codes.SUCCESS)
    with exit_codes.stdout_lines_tracked(), exit_codes.stops_reported(_stopped_during):
        app.run(functools.partial(main, quiet_tensorflow=quiet), flags_parser=_parse_flags)


_NOTHING_SAVED = "nothing was saved: rerun the same command"
# What a command stopped outside training's own handler was doing, and what it left.
_STOPPED_DURING = {
    "train": f"training's start, before its first step; {_NOTHING_SAVED} (a resumed run "
    "resumes from its last checkpoint)",
    "evaluate": f"the evaluation; {_NOTHING_SAVED}",
    "import": f"the import; {_NOTHING_SAVED}",
    "export": f"the export; {_NOTHING_SAVED}",
    "predict": "the prediction; the predictions printed or written so far are incomplete: "
    "rerun the same command",
}


def _stopped_during() -> str:
    """What the command was doing when a signal stopped it, and what it left (the flags may
    not be parsed yet)."""
    if not flags.FLAGS.is_parsed():
        return f"the start; {_NOTHING_SAVED}"
    return _STOPPED_DURING[flags.FLAGS.mode]
