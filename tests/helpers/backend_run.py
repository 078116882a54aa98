"""The command line on another Keras backend, every check of it in one process.

Run by tests/training/test_other_backends.py as
`KERAS_BACKEND=jax python tests/helpers/backend_run.py WORK_DIR` (or torch): one process per
backend, since a process cannot switch. It runs main.py's `main` in this process (as the
user's command line would, flags and all) on the digits flagfile shrunk by --smoke
(WRN-10-1, 2 epochs of 3 steps):

- the TensorFlow-only flags, each refused (`refused`);
- an uninterrupted run in WORK_DIR/whole, and the same run in WORK_DIR/resumed stopped by a
  Ctrl-C at the end of step 4 (exit code 3) and rerun by the same command;
- the evaluation and the prediction of the resumed run, and its export (refused);
- the member logits of the resumed run's restored model on the first test images, in
  WORK_DIR/logits.npy, for the test to compare with TensorFlow's on the same checkpoint.

Prints one JSON object: {name: [exit code, stdout, stderr]} of each command, and the backend.
"""

from __future__ import annotations

import json
import os
import signal
import sys

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TESTS)
sys.path.insert(0, os.path.dirname(TESTS))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from helpers.images import encoded  # noqa: E402
from helpers.paths import FLAGS_DIR  # noqa: E402
from helpers.runs import run_main_in_process  # noqa: E402
from mixmo_tf import data  # noqa: E402
from mixmo_tf.config import Config, recorded_config  # noqa: E402
from mixmo_tf.evaluation.predictions import predict_logits  # noqa: E402
from mixmo_tf.training import callbacks  # noqa: E402
from mixmo_tf.training.checkpoints import restore_run  # noqa: E402

INTERRUPTED_AT = 4
NUM_IMAGES = 3


class _CtrlCAtStep(callbacks.PeriodicCheckpoint):
    """The run's checkpoint callback; the user presses Ctrl-C at the end of step 4."""

    def on_train_batch_end(self, batch, logs=None):
        if int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) == INTERRUPTED_AT:
            os.kill(os.getpid(), signal.SIGINT)
        super().on_train_batch_end(batch, logs)


def _write_images(folder: str) -> None:
    """The first test digits as PNG files."""
    os.makedirs(folder)
    images, _ = data.open_split(Config(dataset="digits").spec, "test")
    for index in range(NUM_IMAGES):
        with open(os.path.join(folder, f"digit_{index}.png"), "wb") as stream:
            stream.write(encoded(images[index], "PNG"))


def main(work: str) -> dict:
    flagfile = os.path.join(FLAGS_DIR, "digits_wrn10-1_cut_mixmo.flags")
    train = [f"--flagfile={flagfile}", "--smoke"]
    results = {"backend": keras.backend.backend()}
    for name in ("mirrored", "multi_worker_mirrored", "tpu"):
        results[f"refused_{name}"] = run_main_in_process(
            *train, f"--model_dir={work}/refused", f"--distribution={name}"
        )
    results["whole"] = run_main_in_process(*train, f"--model_dir={work}/whole")
    interrupted = callbacks.PeriodicCheckpoint
    callbacks.PeriodicCheckpoint = _CtrlCAtStep
    try:
        results["interrupted"] = run_main_in_process(*train, f"--model_dir={work}/resumed")
    finally:
        callbacks.PeriodicCheckpoint = interrupted
    results["rerun"] = run_main_in_process(*train, f"--model_dir={work}/resumed")
    results["evaluate"] = run_main_in_process(
        *train, f"--model_dir={work}/resumed", "--mode=evaluate"
    )
    run = f"{work}/resumed_smoke"  # where --smoke trains
    _write_images(f"{work}/images")
    results["predict"] = run_main_in_process(
        "--mode=predict", f"--model_dir={run}", f"--images={work}/images"
    )
    results["export"] = run_main_in_process("--mode=export", f"--model_dir={run}")

    restored = restore_run(recorded_config(run))
    images, labels = data.open_split(restored.config.spec, "test")
    logits, _ = predict_logits(
        restored.model, images[:32], labels[:32], restored.config.spec, batch_size=32
    )
    np.save(f"{work}/logits.npy", logits)
    return results


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
