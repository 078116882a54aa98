"""The same training steps on TensorFlow, JAX and PyTorch give the same numbers.

From the same weights and the same mixed batches (a Cut-MixMo step, then a Linear-MixMo
step, masks and loss weights written here), each backend runs `step_on_mixed_batch` in its
own process (`helpers.backend_step`); the members' logits, the logged loss terms, every
network weight after each step (BatchNorm moving statistics included) and every momentum
buffer of `PyTorchSGD` (after the first step: the gradient itself) agree with TensorFlow's.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from helpers import backend_step
from helpers.backend_process import run_helper
from helpers.models import perturb_batchnorm

BATCH = 8
MEMBERS = 2
CLASSES = 10
# Each number agrees to RELATIVE times the largest entry of its array (float32 sums taken in
# another order differ by a few ulps of the largest terms), and each gradient to RELATIVE times
# the largest entry of the whole gradient of its step: a BatchNorm beta's gradient is a sum over
# the batch that cancels to ~1e-3 of its terms, and TensorFlow's fused kernel sums it in another
# order than JAX and PyTorch (measured: 2.5e-5 of that array's largest entry, 6e-8 absolute).
# The second step's gradients, taken at weights that already differ by rounding, agree to
# SECOND_GRADIENT_RELATIVE: a ReLU input within rounding of 0 can fall on the other side on
# one backend, which passes or cuts that element's gradient (measured: 1.5e-5, in one channel
# of the first convolution, on this case).
RELATIVE = 1e-5
SECOND_GRADIENT_RELATIVE = 1e-4

WRN = {
    "backbone": "wrn",
    "depth": 10,
    "width": 1,
    "members": MEMBERS,
    "classes": CLASSES,
    "image_shape": [32, 32, 3],
    "l2": 3e-4,
    "learning_rate": 0.05,
    "momentum": 0.9,
}


def _root_weights(masks: np.ndarray, power: float = 3.0) -> np.ndarray:
    """Root-r loss weights of the masks' areas (docs/method.md §4)."""
    rooted = masks.mean(axis=(1, 2)) ** (1.0 / power)
    return (MEMBERS * rooted / rooted.sum(axis=-1, keepdims=True)).astype(np.float32)


def _cut_masks(rng, grid: tuple[int, int]) -> np.ndarray:
    """Member 0 takes a random box per sample, member 1 the rest."""
    masks = np.zeros((BATCH, *grid, MEMBERS), np.float32)
    for sample in range(BATCH):
        top, left = rng.integers(0, grid[0] // 2, 2)
        height, width = rng.integers(4, grid[0] // 2, 2)
        masks[sample, top : top + height, left : left + width, 0] = 1.0
    masks[..., 1] = 1.0 - masks[..., 0]
    return masks


def _linear_masks(rng, grid: tuple[int, int]) -> np.ndarray:
    ratios = rng.uniform(0.2, 0.8, BATCH).astype(np.float32)
    masks = np.empty((BATCH, *grid, MEMBERS), np.float32)
    masks[..., 0] = ratios[:, None, None]
    masks[..., 1] = 1.0 - ratios[:, None, None]
    return masks


def _steps(spec: dict, grid: tuple[int, int], seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    steps = []
    for masks in (_cut_masks(rng, grid), _linear_masks(rng, grid)):
        labels = rng.integers(0, CLASSES, (BATCH, MEMBERS)).astype(np.int32)
        images = rng.standard_normal((BATCH, MEMBERS, *spec["image_shape"])).astype(np.float32)
        steps.append(
            {
                "images": images,
                "masks": masks,
                "targets": np.eye(CLASSES, dtype=np.float32)[labels],
                "weights": _root_weights(masks),
                "labels": labels,
            }
        )
    return steps


def _run(backend: str, case: str, results: str) -> dict[str, np.ndarray]:
    run_helper(backend, "backend_step", case, results)
    return dict(np.load(results))


@pytest.fixture(scope="module")
def wrn_results(tmp_path_factory) -> dict[str, dict[str, np.ndarray]]:
    folder = tmp_path_factory.mktemp("backends")
    keras.utils.set_random_seed(0)  # one case every run: the margins below are measured on it
    model = backend_step.build(WRN)
    perturb_batchnorm(model, seed=0)
    case = str(folder / "case.npz")
    backend_step.write_case(
        case, WRN, backend_step.network_weights(model), _steps(WRN, model.mask_shape, seed=1)
    )
    return {
        backend: _run(backend, case, str(folder / f"{backend}.npz"))
        for backend in ("tensorflow", "jax", "torch")
    }


def _largest(arrays) -> float:
    return max(float(np.max(np.abs(array))) for array in arrays)


def _assert_agree(results: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> None:
    assert sorted(results) == sorted(reference)
    gradient_scale = {
        step: _largest(v for k, v in reference.items() if k.startswith(f"{step}/momentum/"))
        for step in {name.split("/")[0] for name in reference if "/momentum/" in name}
    }
    for name, want in reference.items():
        step = name.split("/")[0]
        relative = RELATIVE
        if "/momentum/" in name:
            scale = gradient_scale[step]
            relative = RELATIVE if step == "step0" else SECOND_GRADIENT_RELATIVE
        else:
            scale = _largest([want])
        np.testing.assert_allclose(
            results[name], want, rtol=RELATIVE, atol=relative * scale, err_msg=name
        )


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_cut_and_a_linear_step_agree_with_tensorflow(wrn_results, backend):
    reference = wrn_results["tensorflow"]
    # The steps did something: weights, statistics and buffers all moved.
    for name in ("step1/weight/", "step1/momentum/"):
        assert sum(key.startswith(name) for key in reference) > 10
    _assert_agree(wrn_results[backend], reference)
