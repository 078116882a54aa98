"""Image files encoded and decoded by PIL, the reference for what our decoders give."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encoded(image: np.ndarray, kind: str, **options) -> bytes:
    stream = io.BytesIO()
    Image.fromarray(image).save(stream, format=kind, **options)
    return stream.getvalue()


def pil_pixels(data: bytes, mode: str = "RGB") -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert(mode))
