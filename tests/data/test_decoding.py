"""Image files decode to the pixels PIL gives: JPEGs with the accurate DCT, PNGs exactly.

TensorFlow's default JPEG decoder (fast DCT) is checked to differ on the same file, so the
equality below says which decoder ran. The served graph's decoding: test_export.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from helpers.images import encoded, pil_pixels

from mixmo_tf.data.decoding import decode_image


def photo(seed: int = 0, size=(48, 64)) -> np.ndarray:
    """A photo-like image: smooth gradients plus noise (JPEG's DCT has work to do)."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[: size[0], : size[1]]
    smooth = np.stack([rows * 4, columns * 3, (rows + columns) * 2], axis=-1)
    return np.clip(smooth + rng.normal(0, 25, (*size, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("quality", [75, 95, 100])
def test_jpeg_pixels_are_pils_and_not_tensorflows_default(quality):
    data = encoded(photo(quality), "JPEG", quality=quality)
    pixels = decode_image(tf.constant(data), 3).numpy()
    np.testing.assert_array_equal(pixels, pil_pixels(data))
    fast = tf.io.decode_image(data, channels=3).numpy()
    assert np.abs(fast.astype(int) - pixels.astype(int)).max() > 0


def test_grayscale_jpeg_and_png_files_decode_as_pil_decodes_them():
    gray = photo(1)[..., 0]
    jpeg = encoded(gray, "JPEG", quality=90)
    np.testing.assert_array_equal(
        decode_image(tf.constant(jpeg), 1).numpy()[..., 0], pil_pixels(jpeg, "L")
    )
    png = encoded(photo(2), "PNG")
    np.testing.assert_array_equal(decode_image(tf.constant(png), 3).numpy(), photo(2))
