"""Images read by index from their files, for datasets too large to hold in memory.

The training pipeline makes every batch a pure function of (seed, global step) by gathering
example indices (`mixmo_tf.data.pipeline`). A split in memory is gathered from a constant;
a `StreamedImages` split reads the same indices from its files inside the tf.data map
instead, so resume stays exact and only the batches in flight are in memory:

- `ImageFiles`: one encoded image file per example (an image folder), decoded and resized
  to the spec's size when read;
- `ImageCache`: a uint8 `.npy` array `(N, H, W, C)` written once from a prepared tfds split
  (`mixmo_tf.data.cache`) and memory-mapped: a read is a copy of the rows, no decoding.

Each batch reads each distinct index once (a MixMo batch repeats its B/b images b times in
each of M members).
"""

from __future__ import annotations

import abc
import contextlib

import numpy as np
import tensorflow as tf

from mixmo_tf.data.decoding import decode_image
from mixmo_tf.data.folder import ImageFolderError


def to_rgb_uint8(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """A decoded `(h, w, 1|3|4)` image as uint8 `(size, 3)`: gray expanded, alpha dropped,
    resized bilinearly with antialiasing (the aspect ratio is not kept, as in
    `keras.utils.image_dataset_from_directory`'s default)."""
    channels = image.shape[-1]
    if channels == 1:
        image = tf.image.grayscale_to_rgb(image)
    elif channels == 4:
        image = image[..., :3]
    if tuple(image.shape[:2]) == tuple(size):
        return tf.cast(image, tf.uint8)
    resized = tf.image.resize(image, size, antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


class StreamedImages(abc.ABC):
    """uint8 images `(N, H, W, C)` of a split, addressed by position, read on demand.

    Args:
        image_shape: `(H, W, C)` of the images read.
        count: images in the whole storage.
        rows: the storage rows of this split's positions (a held-out subset); None: all.
    """

    def __init__(self, image_shape: tuple[int, int, int], count: int, rows=None):
        self.image_shape = tuple(image_shape)
        self._count = count
        self._rows = None if rows is None else np.asarray(rows, np.int64)

    def __len__(self) -> int:
        return self._count if self._rows is None else len(self._rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.image_shape)

    def __getitem__(self, key) -> StreamedImages:
        """The images at the positions `key` (a boolean mask or an index array), unread."""
        positions = np.arange(len(self))[key]
        rows = positions if self._rows is None else self._rows[positions]
        return self._with_rows(rows)

    @abc.abstractmethod
    def _with_rows(self, rows: np.ndarray) -> StreamedImages:
        """This storage restricted to `rows`."""

    @abc.abstractmethod
    def _read(self, rows: tf.Tensor) -> tf.Tensor:
        """uint8 `(len(rows), H, W, C)` of the storage rows `rows` (int64, distinct)."""

    def gather(self, positions: tf.Tensor) -> tf.Tensor:
        """uint8 images of `positions` (any shape), each distinct position read once."""
        positions = tf.cast(positions, tf.int64)
        unique, inverse = tf.unique(tf.reshape(positions, [-1]))
        rows = unique if self._rows is None else tf.gather(tf.constant(self._rows), unique)
        images = tf.gather(self._read(rows), inverse)
        return tf.reshape(images, tf.concat([tf.shape(positions), self.image_shape], axis=0))

    def numpy(self, chunk: int = 1024) -> np.ndarray:
        """All the images in memory (for small splits and tests)."""
        parts = [
            self.gather(tf.range(start, min(start + chunk, len(self)))).numpy()
            for start in range(0, len(self), chunk)
        ]
        return np.concatenate(parts) if parts else np.zeros(self.shape, np.uint8)


class ImageFiles(StreamedImages):
    """Images decoded from their files (JPEG, PNG, GIF, BMP) and resized when read."""

    def __init__(self, paths, image_shape: tuple[int, int, int], rows=None):
        super().__init__(image_shape, len(paths), rows)
        self.paths = tuple(paths)

    def _with_rows(self, rows: np.ndarray) -> ImageFiles:
        return ImageFiles(self.paths, self.image_shape, rows)

    def _read(self, rows: tf.Tensor) -> tf.Tensor:
        size = self.image_shape[:2]

        def decode(path: tf.Tensor) -> tf.Tensor:
            return to_rgb_uint8(decode_image(tf.io.read_file(path), 3), size)

        paths = tf.gather(tf.constant(self.paths), rows)
        signature = tf.TensorSpec(self.image_shape, tf.uint8)
        return tf.map_fn(decode, paths, fn_output_signature=signature)

    def first_unreadable(self) -> tuple[str, str] | None:
        """(path, TensorFlow's message) of the first file that does not decode, or None.

        Decodes every file eagerly: called only after a read failed, to name the file.
        """
        for path in self.paths:
            try:
                decode_image(tf.io.read_file(path), 3)
            except tf.errors.OpError as error:
                return path, error.message.splitlines()[0]
        return None


@contextlib.contextmanager
def naming_unreadable_files(*splits):
    """Turns a decoding failure inside the block into an ImageFolderError naming the file.

    A file whose header is an image's but whose body is corrupt passes the start-up check
    (`mixmo_tf.data.folder`); TensorFlow's decoder error in the tf.data map names no file.

    Args:
        *splits: the images the block reads (only `ImageFiles` are searched).
    """
    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        for images in splits:
            found = images.first_unreadable() if isinstance(images, ImageFiles) else None
            if found:
                path, message = found
                raise ImageFolderError(
                    f"{path} cannot be decoded ({message}): replace or delete it, then rerun "
                    "(the run resumes from its last checkpoint)."
                ) from error
        raise


class ImageCache(StreamedImages):
    """Rows of a uint8 `.npy` array `(N, H, W, C)`, memory-mapped (read by the OS on demand)."""

    def __init__(self, path: str, rows=None):
        array = np.load(path, mmap_mode="r")
        super().__init__(array.shape[1:], len(array), rows)
        self.path = path
        self._array = array

    def _with_rows(self, rows: np.ndarray) -> ImageCache:
        return ImageCache(self.path, rows)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """uint8 `(len(rows), H, W, C)`: a copy of the storage rows `rows`."""
        return np.asarray(self._array[rows])

    def _read(self, rows: tf.Tensor) -> tf.Tensor:
        images = tf.numpy_function(self.take, [rows], tf.uint8, stateful=False)
        return tf.ensure_shape(images, (None, *self.image_shape))
