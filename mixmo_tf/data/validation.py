"""A validation slice held out of the training split (for fitting the temperature)."""

from __future__ import annotations

import numpy as np

# Fixed, not the run's --seed: every run of a dataset holds out the same images, so an
# ensemble of runs (--ensemble_dirs) can be calibrated on images none of its runs trained on.
VALIDATION_SEED = 0


def split_validation(
    images: np.ndarray, labels: np.ndarray, count: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((train images, labels), (validation images, labels)) with `count` examples held out.

    The held-out examples are a seeded random choice; the rest keep their original order,
    so `count=0` returns the split unchanged (and a run's data stream with it).
    """
    held_out = np.zeros(len(labels), bool)
    held_out[np.random.default_rng(VALIDATION_SEED).permutation(len(labels))[:count]] = True
    return (images[~held_out], labels[~held_out]), (images[held_out], labels[held_out])
