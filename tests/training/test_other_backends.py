"""The same command line trains on JAX and PyTorch, and TensorFlow reads what they wrote.

Proven here, for KERAS_BACKEND=jax and torch (one process each, `helpers/backend_run.py`):
- the digits flagfile trains, and a run stopped by Ctrl-C mid-epoch and rerun by the same
  command ends with the weights of the uninterrupted run, bit for bit;
- the run evaluates and predicts with the same commands as on TensorFlow;
- the TensorFlow-only features (tf.distribute strategies and so the multi-worker loop and
  TPUs; the SavedModel export) are refused with one `ERROR:` line naming the backend that
  can, and write nothing;
- then, in this (TensorFlow) process: the run's `model.keras` files load, its checkpoint
  restores and gives the other backend's logits, and `--mode=export` exports it.

And on TensorFlow alone, without another process: the refusals' messages, by asking for the
features (and for the TensorFlow checkpoints of a run of an earlier version) while Keras says
it runs on JAX.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers.paths import FIXTURES, REPO
from helpers.runs import run_main_in_process

import mixmo_tf
from mixmo_tf import data
from mixmo_tf.config import recorded_config
from mixmo_tf.evaluation.predictions import predict_logits
from mixmo_tf.serving import export
from mixmo_tf.training import backend, checkpoints, strategies, tensorflow_checkpoints
from mixmo_tf.training.checkpoints import restore_run

_SCRIPT = os.path.join(REPO, "tests", "helpers", "backend_run.py")
_DISTRIBUTIONS = ("mirrored", "multi_worker_mirrored", "tpu")
_EXPORT = "--mode=export (a TensorFlow SavedModel, written from a run of any backend)"


def _refusal(feature: str, name: str) -> str:
    return (
        f"ERROR: {feature} needs TensorFlow, and Keras runs on {name} here: run it with "
        "KERAS_BACKEND=tensorflow.\n"
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["jax", "torch"])
def test_a_run_of_another_backend_trains_resumes_evaluates_and_exports_on_tensorflow(
    name, tmp_path
):
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} is not installed (the [{name}] extra installs it)")
    process = subprocess.run(
        [sys.executable, _SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "KERAS_BACKEND": name},
        timeout=900,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    results = json.loads(process.stdout.strip().splitlines()[-1])
    assert results.pop("backend") == name
    for distribution in _DISTRIBUTIONS:
        code, _, err = results.pop(f"refused_{distribution}")
        assert (code, err) == (2, _refusal(f"--distribution={distribution} (tf.distribute)", name))
    assert not os.path.exists(tmp_path / "refused_smoke")
    code, _, err = results.pop("export")
    assert (code, err) == (2, _refusal(_EXPORT, name))
    assert not os.path.exists(tmp_path / "resumed_smoke" / "export")
    code, _, err = results.pop("interrupted")
    assert code == 3 and "Stopped by SIGINT at step 4; saved " in err, err[-3000:]
    code, out, err = results.pop("rerun")
    assert code == 0 and "Resuming from step 4 of 6" in out, err[-3000:]
    for command, (code, _, err) in results.items():
        assert code == 0, (command, err[-3000:])
    assert json.loads(results["evaluate"][1])["num_examples"] == 64
    predictions = [json.loads(line) for line in results["predict"][1].splitlines()]
    assert [os.path.basename(p["path"]) for p in predictions] == [
        f"digit_{i}.png" for i in range(3)
    ]

    # What TensorFlow makes of it: the final models, both interrupted and not, are equal.
    whole, resumed = (
        mixmo_tf.load_model(str(tmp_path / f"{run}_smoke" / "model.keras"))
        for run in ("whole", "resumed")
    )
    assert len(whole.weights) == len(resumed.weights)
    for a, b in zip(whole.weights, resumed.weights):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), err_msg=a.path
        )
    run = str(tmp_path / "resumed_smoke")
    restored = restore_run(recorded_config(run))
    assert restored.step == 6
    images, labels = data.open_split(restored.config.spec, "test")
    logits, _ = predict_logits(restored.model, images[:32], labels[:32], restored.config.spec, 32)
    np.testing.assert_allclose(logits, np.load(tmp_path / "logits.npy"), rtol=1e-5, atol=1e-5)
    code, out, err = run_main_in_process("--mode=export", f"--model_dir={run}")
    assert code == 0, err[-3000:]
    assert os.path.exists(os.path.join(run, "export", "1", "saved_model.pb"))


def test_tensorflow_only_features_refuse_in_one_line_on_another_backend(monkeypatch, tmp_path):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    for name in _DISTRIBUTIONS:
        with pytest.raises(backend.TensorFlowOnlyError) as refused:
            strategies.make_strategy(name)
        assert f"ERROR: {refused.value}\n" == _refusal(
            f"--distribution={name} (tf.distribute)", "jax"
        )
    assert strategies.make_strategy("default").num_replicas_in_sync == 1
    with pytest.raises(backend.TensorFlowOnlyError) as refused:
        export.export_run(str(tmp_path / "run"))
    assert f"ERROR: {refused.value}\n" == _refusal(_EXPORT, "jax")
    assert os.listdir(tmp_path) == []
    # A run of an earlier version, whose checkpoints only TensorFlow reads.
    legacy = os.path.join(FIXTURES, "legacy_wrn10_1_digits", "checkpoints")
    with pytest.raises(tensorflow_checkpoints.NeedsTensorFlowError) as refused:
        checkpoints.newest_usable(legacy)
    assert str(refused.value).endswith(
        "which Keras on jax cannot read: run it with KERAS_BACKEND=tensorflow (once it has "
        "trained a step there, its checkpoints are read on every backend)."
    )
