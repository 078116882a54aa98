"""An image folder as a dataset: `train/<class>/*` and `test/<class>/*` (imports no TensorFlow).

The layout of `keras.utils.image_dataset_from_directory`: one subfolder per class, the
classes being the sorted subfolder names of `train/`, label i = the i-th name. Image files
are those with the extensions Keras reads (bmp, gif, jpeg, jpg, png, any case); other files
(e.g. `.DS_Store`) are ignored. Every problem is found here, before TensorFlow starts, and
named with its path and its fix: a missing folder, a class folder without images, a class of
`test/` that `train/` lacks (or the reverse), a class folder whose name holds a control
character (the exported class names are one per line), and a file whose first bytes are no image
format's signature (an empty file, an HTML error page saved as .jpg). Checking signatures reads
8 bytes per file; a file with a valid signature but a corrupt body fails when it is decoded,
with TensorFlow's decoder error.
"""

from __future__ import annotations

import dataclasses
import functools
import os

from mixmo_tf.config.errors import UserError
from mixmo_tf.data.class_names import fits_one_line

SPLITS = ("train", "test")
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
_LAYOUT = "train/<class>/<image> and test/<class>/<image>"


class ImageFolderError(UserError, FileNotFoundError):
    """The image folder does not have the layout or the files a dataset needs."""


@dataclasses.dataclass(frozen=True)
class FolderSplit:
    """The image files of one split and their labels, in a fixed order (class, then name)."""

    paths: tuple[str, ...]
    labels: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class ImageFolder:
    """An indexed image folder: its classes and the files of each split."""

    root: str
    class_names: tuple[str, ...]
    splits: dict[str, FolderSplit]


def _fail(message: str) -> None:
    raise ImageFolderError(message)


def _class_folders(root: str, split: str) -> list[str]:
    folder = os.path.join(root, split)
    if not os.path.isdir(folder):
        _fail(
            f"{folder} does not exist: --dataset=folder:{root} needs the layout {_LAYOUT}. "
            f"Create {folder}/ with one subfolder of images per class."
        )
    classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    if not classes:
        _fail(f"{folder} has no class subfolders: put each class's images in {folder}/<class>/.")
    for name in classes:
        if not fits_one_line(name):
            _fail(
                f"The class folder {os.path.join(folder, name)!r} has a control character "
                "(newline, tab, ...) in its name; the class names are exported one per line: "
                "rename the folder."
            )
    return classes


def is_image_file(path: str) -> bool:
    """Whether the file starts with a JPEG, PNG, GIF or BMP signature (reads 8 bytes)."""
    with open(path, "rb") as stream:
        head = stream.read(8)
    return head.startswith(_SIGNATURES)


def _image_files(folder: str) -> list[str]:
    names = sorted(
        name
        for name in os.listdir(folder)
        if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, name))
    )
    if not names:
        _fail(
            f"{folder} holds no image ({', '.join(IMAGE_EXTENSIONS)}): add images of this "
            "class or delete the folder."
        )
    paths = [os.path.join(folder, name) for name in names]
    for path in paths:
        if not is_image_file(path):
            _fail(
                f"{path} is not an image (its first bytes are no JPEG, PNG, GIF or BMP "
                "signature; empty or corrupt?): replace or delete it."
            )
    return paths


def _split_files(root: str, split: str, class_names: tuple[str, ...]) -> FolderSplit:
    paths, labels = [], []
    for label, name in enumerate(class_names):
        files = _image_files(os.path.join(root, split, name))
        paths.extend(files)
        labels.extend([label] * len(files))
    return FolderSplit(tuple(paths), tuple(labels))


@functools.lru_cache(maxsize=8)
def index_folder(root: str) -> ImageFolder:
    """The classes and files of the image folder `root` (indexed once per process).

    Raises:
        ImageFolderError: the folder, a split or a class is missing or empty, the classes of
            train/ and test/ differ, or a file is not an image.
    """
    if not os.path.isdir(root):
        _fail(
            f"{root} does not exist: --dataset=folder:PATH needs a folder with {_LAYOUT}. "
            "Check the path."
        )
    class_names = tuple(_class_folders(root, "train"))
    test_classes = _class_folders(root, "test")
    unknown = sorted(set(test_classes) - set(class_names))
    if unknown:
        _fail(
            f"{os.path.join(root, 'test')} has classes that train/ lacks: {unknown}. Add "
            f"their training images to {os.path.join(root, 'train')}/ or remove them from test/."
        )
    missing = sorted(set(class_names) - set(test_classes))
    if missing:
        _fail(
            f"{os.path.join(root, 'test')} lacks the classes {missing} of train/. Add "
            "test images for them (the same classes are needed in both)."
        )
    splits = {split: _split_files(root, split, class_names) for split in SPLITS}
    return ImageFolder(root, class_names, splits)
