"""The command line: `python main.py --flagfile=flags/<experiment>.flags [--mode=...]`."""

from __future__ import annotations

import json
import sys
from typing import NoReturn

from absl import app, flags, logging

from mixmo_tf import flags as mixmo_flags

mixmo_flags.define_flags()


def main(argv: list[str]) -> None:
    """Runs the mode chosen by --mode with the Config built from the flags."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments (flags start with --): {' '.join(argv[1:])}")
    try:
        config = mixmo_flags.config_from_flags(flags.FLAGS)
    except ValueError as error:
        raise app.UsageError(str(error)) from error

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # tfds and checkpoint INFO lines drown the bars

    # TensorFlow work starts only after the flags are valid.
    import tensorflow as tf

    from mixmo_tf import checkpointing, distribute, distributed_loop, experiment, run_guard

    try:
        if flags.FLAGS.mode == "train":
            experiment.train(config)
        else:
            print(json.dumps(experiment.evaluate(config), indent=2))
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


def run() -> None:
    """Console-script entry point (`mixmo-tf`)."""
    app.run(main)
