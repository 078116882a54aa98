"""Training callbacks that keep a run safe: finite checkpoints, divergence, signals.

`PeriodicCheckpoint` saves only finite states and honours a pending stop request (SIGTERM,
SIGINT) at the next step boundary; `StopOnNonFiniteLoss` stops a diverged run at once. Both
name the step, its learning rate and the checkpoint a rerun resumes from.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import keras

from mixmo_tf.config.errors import UserError
from mixmo_tf.training import checkpoints, run_guard


def first_non_finite(model: keras.Model) -> str | None:
    """The path of the first model or optimizer variable that shows divergence, or None.

    Covers everything a checkpoint stores: weights, batch-norm moving statistics and the
    optimizer's slots. A variable shows divergence when its float32 sum of squares is not
    finite: a NaN or an infinity in it, or values so large (above ~1e19) that the L2
    penalty of the next step overflows; such a state cannot train on.
    """
    for variable in [*model.weights, *model.optimizer.variables]:
        if not keras.backend.is_float_dtype(variable.dtype):
            continue  # the step counter, the loss-scale counters
        values = keras.ops.cast(variable, "float32")
        if not bool(keras.ops.isfinite(keras.ops.sum(keras.ops.square(values)))):
            return variable.path
    return None


class DivergedError(UserError, FloatingPointError):
    """Training met a non-finite loss or weight: the message names the step, the learning
    rate and the checkpoint a rerun resumes from."""


def _divergence_error(
    what: str, step: int, learning_rate_at: Callable[[int], float], manager
) -> DivergedError:
    """The error of a run that diverged at `step`, naming the checkpoint a rerun resumes."""
    # The optimizer has already counted this step: its rate is the schedule's at step - 1.
    learning_rate = float(keras.ops.convert_to_numpy(learning_rate_at(step - 1)))
    latest = manager.latest_checkpoint
    if latest is None:
        where = "No checkpoint was saved before it"
        rerun = "it starts from step 0"
    else:
        where = f"Only finite states are checkpointed: the last is {latest}"
        rerun = (
            f"it resumes from {os.path.basename(latest)} (if it diverges again at once, "
            "that state is already damaged: start over in a new --model_dir)"
        )
    return DivergedError(
        f"Training diverged at step {step} (learning rate {learning_rate:.3g}): {what}. "
        f"{where}. Lower --lr or check the input data, then rerun: {rerun}."
    )


class PeriodicCheckpoint(keras.callbacks.Callback):
    """Saves finite states: at each epoch end, every `every_steps` steps if > 0, and on a stop.

    A save that does not fit stops training with `checkpoints.CheckpointSpaceError`.
    A state with a non-finite variable is never saved: training stops with a
    DivergedError naming the variable and the last (finite) checkpoint, so a rerun with
    a lower --lr resumes before the divergence. A pending `stop_request` (SIGTERM, SIGINT)
    saves the state at the next step boundary, during validation included, and raises
    `run_guard.Interrupted`.

    Args:
        manager: where checkpoints go.
        learning_rate_at: the optimizer's schedule, step -> rate, for the divergence report.
        every_steps: also save every this many steps; 0 saves only at epoch ends.
        stop_request: truthy when the run must stop; None for a run without signal handling.
    """

    def __init__(
        self,
        manager: checkpoints.CheckpointManager,
        learning_rate_at: Callable[[int], float],
        every_steps: int = 0,
        stop_request=None,
    ):
        super().__init__()
        self.manager = manager
        self.learning_rate_at = learning_rate_at
        self.every_steps = every_steps
        self.stop_request = stop_request
        self._last_saved_step = -1

    def _step(self) -> int:
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def _save(self, step: int) -> None:
        if step == self._last_saved_step:
            return
        variable = first_non_finite(self.model)
        if variable is not None:
            raise _divergence_error(
                f"{variable} overflows (non-finite values, or a non-finite sum of squares)",
                step,
                self.learning_rate_at,
                self.manager,
            )
        checkpoints.save(self.manager, step)
        self._last_saved_step = step

    def _stop_if_requested(self) -> None:
        if not self.stop_request:
            return
        step = self._step()
        self.stop_request.mark_saving()
        self._save(step)
        raise run_guard.Interrupted(
            f"Stopped by {self.stop_request.signal_name} at step {step}; saved "
            f"{self.manager.latest_checkpoint}. Rerun the same command to resume."
        )

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        if self.every_steps and step % self.every_steps == 0:
            self._save(step)
        self._stop_if_requested()

    def on_test_batch_end(self, batch, logs=None):
        self._stop_if_requested()

    def on_epoch_end(self, epoch, logs=None):
        self._save(self._step())
        self._stop_if_requested()


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training with the step, learning rate and last checkpoint when the loss is non-finite.

    Args:
        learning_rate_at: the optimizer's schedule, step -> rate; read only on failure, so
            the training loop pays nothing for the report.
        manager: the run's checkpoints, to name the one a rerun resumes.
    """

    def __init__(
        self, learning_rate_at: Callable[[int], float], manager: checkpoints.CheckpointManager
    ):
        super().__init__()
        self.learning_rate_at = learning_rate_at
        self.manager = manager

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if math.isfinite(loss):
            return
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        raise _divergence_error(
            f"the training loss became {loss}", step, self.learning_rate_at, self.manager
        )
