"""MixMo trains on JAX and PyTorch without TensorFlow, and its .keras files cross backends.

Each backend runs `helpers.backend_fit` in its own process, TensorFlow unimportable off the
TensorFlow backend: the public builder, `fit` on NumPy arrays for 2 steps with `PyTorchSGD`
and a validation batch, `model.save` and `load_model`, then the other backends' files.
PyTorch trains first, JAX loads its file, and this (TensorFlow) process loads both.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from helpers import backend_fit
from helpers.backend_process import run_helper

from mixmo_tf.models import load_model

pytestmark = pytest.mark.slow


def _run(backend: str, out: str, *keras_files: str) -> dict[str, np.ndarray]:
    run_helper(backend, "backend_fit", out, *keras_files)
    return dict(np.load(os.path.join(out, f"{backend}.npz")))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[str, dict[str, dict[str, np.ndarray]]]:
    out = str(tmp_path_factory.mktemp("backends"))
    torch = _run("torch", out)
    jax = _run("jax", out, os.path.join(out, "torch.keras"))
    return out, {"torch": torch, "jax": jax}


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_trains_saves_and_reloads_without_tensorflow(trained, backend):
    _, results = trained
    result = results[backend]
    assert not result["imported_tensorflow"]
    assert int(result["iterations"]) == backend_fit.STEPS
    assert np.all(np.isfinite(result["log/loss"]))
    assert 0 <= float(result["log/val_accuracy"][0]) <= 1
    assert np.isfinite(result["log/val_ece"]).all()
    np.testing.assert_allclose(result["reloaded"], result["trained"], rtol=1e-6, atol=1e-7)


def test_a_keras_file_predicts_the_same_on_every_backend(trained):
    out, results = trained
    images = backend_fit.probe_images()
    for backend in ("torch", "jax"):
        path = os.path.join(out, f"{backend}.keras")
        on_tensorflow = np.asarray(load_model(path).predict_on_batch(images)["members"])
        np.testing.assert_allclose(on_tensorflow, results[backend]["trained"], atol=1e-6)
    np.testing.assert_allclose(
        results["jax"][f"file/{os.path.join(out, 'torch.keras')}"],
        results["torch"]["trained"],
        atol=1e-6,
    )
