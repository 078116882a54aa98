"""Per-epoch test metrics of a run, read back from its TensorBoard logs.

Training evaluates on the test split after every epoch and Keras' TensorBoard callback
writes those numbers to `<model_dir>/logs/validation` as `epoch_<metric>` at step = epoch
(0-indexed). The paper reports the best of these epochs; we report it beside the final one.
"""

from __future__ import annotations

import glob
import os

import tensorflow as tf

from mixmo_tf.config.run_folder import RunFolder

_PREFIX = "epoch_"


def test_history(model_dir: str) -> dict[int, dict[str, float]]:
    """{epoch (1-indexed): {metric: value}} of the per-epoch test evaluations of training.

    A resumed run appends event files; a later value of an epoch replaces an earlier one.
    Empty if the run has no validation logs.
    """
    history: dict[int, dict[str, float]] = {}
    pattern = os.path.join(RunFolder(model_dir).validation_logs, "events.out.tfevents.*")
    for path in sorted(glob.glob(pattern), key=os.path.getmtime):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if not value.tag.startswith(_PREFIX):
                    continue
                number = (
                    float(tf.make_ndarray(value.tensor))
                    if value.HasField("tensor")
                    else value.simple_value
                )
                history.setdefault(event.step + 1, {})[value.tag[len(_PREFIX) :]] = number
    return history


def best_and_final(history: dict[int, dict[str, float]]) -> dict[str, dict[str, float]]:
    """The final epoch's and the best test-accuracy epoch's metrics, each with its `epoch`.

    The best epoch is chosen on the test split itself, as in the paper: an optimistic
    number, reported for comparison with the paper only.
    """
    if not history:
        return {}
    final = max(history)
    best = max(history, key=lambda epoch: (history[epoch].get("accuracy", float("-inf")), -epoch))
    return {
        "final": {"epoch": final, **history[final]},
        "best": {"epoch": best, **history[best]},
    }
