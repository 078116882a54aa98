"""The command line: `python main.py --flagfile=flags/<experiment>.flags [--mode=...]`."""

from __future__ import annotations

import json
import sys
from typing import NoReturn

from absl import app, flags, logging

from mixmo_tf import flags as mixmo_flags
from mixmo_tf import recorded_run
from mixmo_tf.config import Config
from mixmo_tf.evaluation.options import EvaluationOptions, OptionError

mixmo_flags.define_flags()


def main(argv: list[str]) -> None:
    """Runs the mode chosen by --mode with the Config built from the flags."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments (flags start with --): {' '.join(argv[1:])}")
    try:
        config = mixmo_flags.config_from_flags(flags.FLAGS)
    except ValueError as error:
        raise app.UsageError(str(error)) from error

    if flags.FLAGS.mode == "evaluate":
        try:
            runs = _recorded_runs(config)
            options = EvaluationOptions(
                corruptions=flags.FLAGS.corruptions,
                corruptions_dir=flags.FLAGS.corruptions_dir,
                ood_dataset=flags.FLAGS.ood_dataset,
            )
            options.check(runs[0].dataset)
        except (FileNotFoundError, ValueError) as error:
            # Before TensorFlow is imported: the message is the last thing printed.
            print(f"ERROR: {error}", file=sys.stderr)
            sys.exit(2)

    if not flags.FLAGS["verbosity"].present:
        # tfds and checkpoint lines drown the bars and the messages; --verbosity=0 shows them.
        logging.set_verbosity(logging.ERROR)
    if flags.FLAGS.mode in ("export", "predict"):
        sys.exit(_serving_mode(flags.FLAGS))

    # TensorFlow work starts only after the flags are valid.
    import tensorflow as tf

    from mixmo_tf import checkpointing, distribute, distributed_loop, experiment, run_guard
    from mixmo_tf.data.sources import DataSourceError

    try:
        if flags.FLAGS.mode == "train":
            experiment.train(config)
        else:
            from mixmo_tf.evaluation.run import output_dir

            results = experiment.evaluate(*runs, options=options)
            print(f"Report and figures in {output_dir(runs)}; headline numbers:")
            headline = {k: v for k, v in results.items() if isinstance(v, (int, float))}
            print(json.dumps(headline, indent=2))
    except run_guard.Interrupted as error:
        # SIGTERM / SIGINT: a checkpoint was saved; not an error, but not finished either.
        print(error, file=sys.stderr)
        sys.exit(run_guard.EXIT_INTERRUPTED)
    except run_guard.ResultsNotSavedError as error:
        print(json.dumps(error.results, indent=2))  # the results first: nothing is lost
        _fail(str(error))
    except (
        FileNotFoundError,
        checkpointing.CheckpointMismatchError,
        FloatingPointError,
        run_guard.RunFolderError,
        run_guard.RunLockedError,
        distributed_loop.WorkerLostError,
        distribute.StrategyError,
        OptionError,
        DataSourceError,
    ) as error:
        # Missing or corrupt data (DataNotFoundError), no checkpoint, another run's
        # checkpoint, a diverged run, an unusable or busy folder, a lost worker, no TPU:
        # the message says what to do, a traceback would not.
        _fail(str(error))
    except OSError as error:
        # Any other file that cannot be read or written, in any mode.
        _fail(run_guard.describe_os_error(error))
    except (tf.errors.PermissionDeniedError, tf.errors.NotFoundError) as error:
        # The same through TensorFlow's file system (checkpoints, TensorBoard, gs:// paths).
        _fail(f"{error.message.splitlines()[0]}. Fix the path or its permissions, then rerun.")


def _fail(message: str) -> NoReturn:
    """Prints one `ERROR:` line and exits with code 2."""
    print(f"ERROR: {message}", file=sys.stderr)
    sys.exit(2)


def _recorded_runs(config: Config) -> list[Config]:
    """The recorded Configs of the runs to evaluate: --model_dir, or --ensemble_dirs.

    Flags given on top apply where they may differ from a run (e.g. --data_dir) and are
    refused where they contradict it (ValueError naming them).
    """
    given = mixmo_flags.given_fields(flags.FLAGS)
    folders = flags.FLAGS.ensemble_dirs or [config.model_dir]
    if not flags.FLAGS.ensemble_dirs and not flags.FLAGS["model_dir"].present:
        raise ValueError("--mode=evaluate needs --model_dir=RUN (a folder training wrote).")
    runs = [
        recorded_run.config_with_flags(recorded_run.recorded_config(folder), config, given)
        for folder in folders
    ]
    recorded_run.check_one_dataset(runs)
    return runs


def _serving_mode(values: flags.FlagValues) -> int:
    """Runs --mode=export or --mode=predict; returns the exit code (see serving_modes)."""
    from mixmo_tf import serving_modes

    try:
        serving_modes.check_flags(
            values.mode, values.model_dir, values.images, values.saved_model, values.temperature
        )
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    if values.mode == "export":
        return serving_modes.export(values.model_dir, values.export_dir, values.temperature)
    return serving_modes.predict(
        values.images, values.model_dir, values.saved_model, values.output, values.temperature
    )


_SHORT_HELP = ("--help", "-h", "-?", "--helpshort")


def run() -> None:
    """Console-script entry point (`mixmo-tf`).

    `--help` lists the MixMo flags grouped by topic; `--helpfull` keeps absl's full list.
    """
    if any(argument in _SHORT_HELP for argument in sys.argv[1:]):
        print(f"{(sys.modules['__main__'].__doc__ or '').strip()}\n")
        print(f"MixMo flags (--helpfull lists every flag):{mixmo_flags.grouped_help()}")
        sys.exit(0)
    app.run(main)
