"""The tiny runs the tests train, written once, and what is checked of them.

- `smoke_config`: a digits Cut-MixMo run shrunk by `Config.smoke` (WRN-10-1, at most 2
  epochs of 3 steps, 2 test batches), for the tests of the run itself (resume, guards,
  precision, backbones, strategies);
- `tiny_run_config`: one epoch of 3 steps at B=16, b=2 in float32, the finished run that the
  export, prediction and uncertainty tests read (`conftest.trained_tiny_run`);
- `assert_validates_as_one_device`: a distributed run's validation figures are one device's;
- `run_main_in_process`: main.py's `main` in the test's process, its exit code and output;
- `run_main`: main.py in a fresh process, as a user runs it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import subprocess
import sys

from absl import flags

from helpers.paths import REPO
from mixmo_tf.config import Config


def smoke_config(model_dir, **overrides) -> Config:
    """The digits smoke run in `model_dir` (exactly there: no `_smoke` suffix); `overrides`
    replace any field afterwards."""
    smoke = Config(dataset="digits").smoke()
    return dataclasses.replace(smoke, model_dir=str(model_dir), **overrides)


def tiny_run_config(model_dir, **overrides) -> Config:
    """A finished digits run of 3 steps (WRN-10-1, M=2, Cut-MixMo), float32 on every CPU."""
    fields = dict(
        dataset="digits",
        model_dir=str(model_dir),
        depth=10,
        width=1,
        num_members=2,
        mixing="cutmix",
        batch_size=16,
        batch_repetitions=2,
        epochs=1,
        steps_per_epoch=3,
        lr=0.4,
        eval_steps=1,
        eval_batch_size=32,
        precision="float32",
    )
    return Config(**{**fields, **overrides})


def assert_validates_as_one_device(model_dir, logged: dict, eval_batch_size: int) -> None:
    """`logged`, a distributed digits run's last `val_*` figures, equal its model.keras
    evaluated by one device on the test split in batches of `eval_batch_size`.

    The replicas add up the same per-image terms, grouped per replica and then all-reduced,
    so float32 sums may differ in their last bits: 2e-6 relative. (Averaging each replica's
    own results instead is off by 1.6e-5 to 6.4e-4, so the tolerance tells the two apart.)
    """
    import numpy as np

    import mixmo_tf
    from mixmo_tf import data

    spec = Config(dataset="digits").spec
    images, labels = data.open_split(spec, "test")
    model = mixmo_tf.load_model(os.path.join(str(model_dir), "model.keras"))
    one_device = model.evaluate(
        data.eval_dataset(images, labels, spec, eval_batch_size), return_dict=True, verbose=0
    )
    assert sorted(logged) == sorted(f"val_{name}" for name in one_device)
    for name, value in one_device.items():
        np.testing.assert_allclose(logged[f"val_{name}"], value, rtol=2e-6, err_msg=name)


def run_main_in_process(*args: str) -> tuple[int, str, str]:
    """main.py's main in this process: (exit code, stdout, stderr)."""
    from mixmo_tf.cli import app

    out, err = io.StringIO(), io.StringIO()
    flags.FLAGS.unparse_flags()
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            app.main(app._parse_flags(["main.py", *args]))
    except SystemExit as exit_:
        code = exit_.code
    finally:
        flags.FLAGS.unparse_flags()
    return code, out.getvalue(), err.getvalue()


def run_main(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    # What a user gets: main.py's own default for TensorFlow's C++ log lines.
    env = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "main.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
    )
