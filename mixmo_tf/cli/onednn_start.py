"""oneDNN for a `--mode=train` process: set before TensorFlow starts, measured once.

TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, at import. With the network's step times
cached, the choice is set before the import and costs nothing. Without them, the command
starts TensorFlow as it is, makes every check training makes before it measures (a run that
will be refused is refused within seconds: `training.run.check_before_training`), times the
step in two child processes (`mixmo_tf.tuning.onednn`), and if the choice differs from the
running process's setting, restarts the same command with it; the restarted command finds
the times cached.
"""

from __future__ import annotations

import json
import os
import sys

from mixmo_tf.config.settings import Config
from mixmo_tf.tuning import onednn
from mixmo_tf.tuning.machine import keras_backend

# The choice that restarted the command (JSON): the restarted command takes it as made,
# without repeating its line or measuring again (even if the cache could not be written).
_RESTARTED = "MIXMO_TF_ONEDNN_CHOICE"
# Set by the command line when it hides TensorFlow's start-up lines (cli.app.run).
QUIET_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"


def _announce(choice: onednn.rules.OnednnChoice) -> None:
    if choice.worth_saying:
        print(choice.message(), flush=True)


def before_tensorflow(config: Config) -> bool:
    """Sets the cached choice for this process; returns whether it still has to be measured
    (after TensorFlow starts: `measure_and_restart`). Nothing on another Keras backend than
    TensorFlow: oneDNN is TensorFlow's."""
    if keras_backend() != "tensorflow":
        return False
    restarted = os.environ.pop(_RESTARTED, None)
    if restarted:
        onednn.apply(onednn.rules.OnednnChoice(**json.loads(restarted)))
        return False
    choice = onednn.choose_onednn(config, measure=False)
    if choice is None:
        return True
    onednn.apply(choice)
    _announce(choice)
    return False


def measure_and_restart(config: Config, quiet_tensorflow: bool) -> None:
    """Times the step with oneDNN off and on (after training's own checks), caches the times,
    and restarts this command if the choice differs from this process's setting.

    Raises:
        What `training.run.check_before_training` raises for a run that will be refused
            (`cli.modes.train` reports it as it reports training's errors).

    Args:
        config: the training run.
        quiet_tensorflow: whether this command set TF_CPP_MIN_LOG_LEVEL itself (the
            restarted command then decides again, as this one did).
    """
    from mixmo_tf.training.run import check_before_training
    from mixmo_tf.tuning.step_timing import onednn_enabled

    # A refusal comes before minutes of measuring; the step timed is of the data's spec.
    config = check_before_training(config).config
    choice = onednn.choose_onednn(config)
    onednn.apply(choice)
    _announce(choice)
    if choice.enabled == onednn_enabled():
        return
    print(f"Restarting with oneDNN {'on' if choice.enabled else 'off'} ...", flush=True)
    if quiet_tensorflow:
        os.environ.pop(QUIET_VARIABLE, None)
    os.environ[_RESTARTED] = json.dumps(choice.record())
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.argv])
