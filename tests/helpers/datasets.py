"""Datasets written as users have them, for the tests that read them: an image folder
(`folder:PATH`) and a Tiny ImageNet zip in the official layout."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import tensorflow as tf

CLASSES = ("cat", "dog", "emu")


def _encoded(value: int, height: int, width: int, kind: str) -> bytes:
    image = np.full((height, width, 3), value, np.uint8)
    encode = tf.io.encode_png if kind == "png" else tf.io.encode_jpeg
    return encode(image).numpy()


def write_image_folder(root, train_per_class: int = 5, test_per_class: int = 2) -> str:
    """root/{train,test}/<class>/<i>.{png,jpg}: flat images of value 60 * label + i, in
    varied sizes (resized on read), PNG and JPEG, plus a non-image file that is ignored."""
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for label, name in enumerate(CLASSES):
            folder = os.path.join(root, split, name)
            os.makedirs(folder)
            for i in range(count):
                kind = "png" if i % 2 else "jpg"
                with open(os.path.join(folder, f"{i}.{kind}"), "wb") as stream:
                    stream.write(_encoded(60 * label + i, 20 + 3 * i, 24, kind))
            with open(os.path.join(folder, ".DS_Store"), "wb") as stream:
                stream.write(b"\0\0")
    return str(root)


WNIDS = ["n02124075", "n01443537", "n09246464"]  # deliberately unsorted in wnids.txt
TRAIN_PER_CLASS = 4
# (file, wnid) of the validation images; label = index of the wnid in sorted order.
VAL = [(f"val_{i}.JPEG", WNIDS[i % 3]) for i in range(6)]


def _jpeg(value: int, channels: int = 3) -> bytes:
    image = np.full((64, 64, channels), value, np.uint8)
    return tf.io.encode_jpeg(image, quality=100).numpy()


def write_tiny_imagenet_zip(path: str, skip: str | None = None) -> None:
    """The official layout: wnids.txt, train/<wnid>/images/*.JPEG, val/images, annotations."""
    with zipfile.ZipFile(path, "w") as archive:
        root = "tiny-imagenet-200"
        archive.writestr(f"{root}/wnids.txt", "\n".join(WNIDS) + "\n")
        archive.writestr(f"{root}/words.txt", "".join(f"{w}\tsomething\n" for w in WNIDS))
        for label, wnid in enumerate(sorted(WNIDS)):
            for i in range(TRAIN_PER_CLASS):
                channels = 1 if (label, i) == (0, 0) else 3  # the archive has grayscale JPEGs
                name = f"{root}/train/{wnid}/images/{wnid}_{i}.JPEG"
                archive.writestr(name, _jpeg(40 * label + i, channels))
            archive.writestr(f"{root}/train/{wnid}/{wnid}_boxes.txt", "")
        lines = "".join(f"{name}\t{wnid}\t0\t0\t63\t63\n" for name, wnid in VAL)
        if skip != "val_annotations":
            archive.writestr(f"{root}/val/val_annotations.txt", lines)
        for i, (name, _) in enumerate(VAL):
            archive.writestr(f"{root}/val/images/{name}", _jpeg(200 + i))
        archive.writestr(f"{root}/test/images/test_0.JPEG", _jpeg(7))
