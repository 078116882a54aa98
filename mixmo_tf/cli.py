"""The command line: `python main.py --flagfile=flags/<experiment>.flags [--mode=...]`."""

from __future__ import annotations

import json
import sys

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
    from mixmo_tf import checkpointing, experiment

    try:
        if flags.FLAGS.mode == "train":
            experiment.train(config)
        else:
            print(json.dumps(experiment.evaluate(config), indent=2))
    except (FileNotFoundError, checkpointing.CheckpointMismatchError, FloatingPointError) as error:
        # Missing or corrupt data (DataNotFoundError), no checkpoint, another run's
        # checkpoint, a diverged loss: the message says what to do, a traceback would not.
        print(f"ERROR: {error}", file=sys.stderr)
        sys.exit(2)


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
