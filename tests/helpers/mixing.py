"""Independent references for the mixing tests: the authors' CutMix box in plain Python, the
label correction in numpy, and checks of sample moments against closed forms within a few
standard errors."""

from __future__ import annotations

import math

import numpy as np

# Tolerance in standard errors for moment checks: a false failure is a ~1e-6 event.
NUM_STANDARD_ERRORS = 5.0


def reference_box_mask(
    ratio: float, center: tuple[int, int], height: int, width: int
) -> np.ndarray:
    """The reference CutMix box in plain Python: side int(size * sqrt(ratio)), clipped span."""
    mask = np.zeros((height, width), np.float32)
    bounds = []
    for size, c in ((height, center[0]), (width, center[1])):
        side = int(size * math.sqrt(ratio))
        low = min(max(c - side // 2, 0), size)
        high = min(max(c + side // 2, 0), size)
        bounds.append((low, high))
    (top, bottom), (left, right) = bounds
    mask[top:bottom, left:right] = 1.0
    return mask


def numpy_corrected_share(own: np.ndarray, member_masks: np.ndarray) -> np.ndarray:
    """The label correction lambda' per (batch, member) in plain numpy: own masks
    (B, M, H, W, 1) average-pooled to the member masks' grid (B, h, w, M)."""
    batch_size, num_members, height, width, _ = own.shape
    grid_h, grid_w = member_masks.shape[1:3]
    pool_h, pool_w = height // grid_h, width // grid_w
    pooled = (
        own[..., 0]
        .reshape(batch_size, num_members, grid_h, pool_h, grid_w, pool_w)
        .mean(axis=(3, 5))
    )
    shares = np.zeros((batch_size, num_members))
    for b in range(batch_size):
        for m in range(num_members):
            area = member_masks[b, :, :, m]
            shares[b, m] = np.mean(pooled[b, m] * area) / (np.mean(area) + 1e-8)
    return shares


def standard_errors(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standard errors of the sample mean and of the sample variance, per column."""
    n = samples.shape[0]
    centred = samples - samples.mean(axis=0)
    variance = np.mean(centred**2, axis=0)
    fourth = np.mean(centred**4, axis=0)
    return np.sqrt(variance / n), np.sqrt((fourth - variance**2) / n)


def assert_moments(samples: np.ndarray, mean, variance) -> None:
    """Sample mean and variance within a few standard errors of the closed-form values."""
    samples = np.asarray(samples, np.float64)
    se_mean, se_var = standard_errors(samples)
    np.testing.assert_array_less(np.abs(samples.mean(axis=0) - mean), NUM_STANDARD_ERRORS * se_mean)
    np.testing.assert_array_less(
        np.abs(samples.var(axis=0) - variance), NUM_STANDARD_ERRORS * se_var
    )
