"""Image files to pixels, as PIL decodes them.

TensorFlow decodes JPEG with a fast, inexact DCT by default, which differs on some pixels
from the accurate decoder that PIL (libjpeg's islow) and most pipelines use, enough to move
a model's confidence on the same photo noticeably between its JPEG and a lossless copy.
JPEGs are decoded here with the accurate integer DCT, which matches PIL exactly (tested),
so training on an image folder, prediction on files and a client that decodes with PIL see
the same pixels.
"""

from __future__ import annotations

import tensorflow as tf

JPEG_SIGNATURE = b"\xff\xd8\xff"


def is_jpeg(encoded: tf.Tensor) -> tf.Tensor:
    """Whether an encoded image file starts with JPEG's signature (a boolean scalar)."""
    return tf.equal(tf.strings.substr(encoded, 0, len(JPEG_SIGNATURE)), JPEG_SIGNATURE)


def decode_image(encoded: tf.Tensor, channels: int) -> tf.Tensor:
    """A JPEG, PNG, GIF or BMP file's pixels, uint8 `(h, w, channels)`; JPEGs decoded with
    the accurate integer DCT."""
    image = tf.cond(
        is_jpeg(encoded),
        lambda: tf.io.decode_jpeg(encoded, channels=channels, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(encoded, channels=channels, expand_animations=False),
    )
    image.set_shape([None, None, channels])
    return image
