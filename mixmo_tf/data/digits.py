"""scikit-learn's bundled digits as a 32x32 RGB image dataset with a fixed split."""

from __future__ import annotations

import numpy as np

_SPLIT_SEED = 0
_IMAGE_SIZE = 32
_MAX_PIXEL = 16.0


def load_digits_split(split: str, num_train: int) -> tuple[np.ndarray, np.ndarray]:
    """Images `(N, 32, 32, 3)` uint8 and labels `(N,)` int64 of the "train" or "test" split.

    The 1,797 digits are shuffled once with a fixed seed; the first `num_train` are the
    training split and the rest the test split. 8x8 images are upsampled by pixel
    replication (4x4 blocks), so no interpolation choice changes the data.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'. Received: split={split!r}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError(
            "--dataset=digits needs scikit-learn: pip install 'mixmo-tf[test]'"
        ) from error
    digits = load_digits()
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(digits.target))
    chosen = order[:num_train] if split == "train" else order[num_train:]
    scale = _IMAGE_SIZE // digits.images.shape[1]
    images = digits.images[chosen] / _MAX_PIXEL * 255.0
    images = np.kron(images, np.ones((1, scale, scale))).round().astype(np.uint8)
    images = np.repeat(images[..., np.newaxis], 3, axis=-1)
    return images, digits.target[chosen].astype(np.int64)
