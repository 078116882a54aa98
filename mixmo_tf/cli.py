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
    if flags.FLAGS.mode in ("export", "predict"):
        sys.exit(_serving_mode(flags.FLAGS))

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


def run() -> None:
    """Console-script entry point (`mixmo-tf`)."""
    app.run(main)
