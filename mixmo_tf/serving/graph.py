"""The serving graph: MixMo's ensemble prediction with its uncertainty, behind three inputs.

`ServingModule` wraps `MixMoModel.prediction_logits` (the function evaluation uses) in three
tf.functions that become the SavedModel's signatures (`mixmo_tf.serving.export`):

- `serving_default`: uint8 images `(batch, H, W, C)`, normalised in the graph with the
  dataset's mean and std (from Python, pass `uint8_images(pixels)`: TensorFlow converts an
  array of another dtype by a wrapping cast, 300.0 -> 44, before the graph can check it);
- `predict_image_bytes`: encoded JPEG or PNG images `(batch,)` string (what TF Serving's REST
  API receives as `{"b64": ...}`), decoded and, if their size differs, resized in the graph;
- `predict_normalized`: float32 images already normalised as in training.

Each returns the same outputs (`ensemble_outputs`). The uncertainty of a prediction (entropy,
mutual information, disagreement) is `mixmo_tf.evaluation.uncertainty`'s, which evaluation's
out-of-distribution scores use too: served and evaluated values are the same numbers.
Inputs are checked inside the graph with messages that name the expected input, because TF
Serving feeds tensors without checking them against the signature.
Only core TensorFlow ops: no Python runs at serving time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from mixmo_tf.config.datasets import DatasetSpec
from mixmo_tf.data.decoding import decode_image, is_jpeg
from mixmo_tf.data.pipeline import normalize
from mixmo_tf.evaluation.predictions import logits_function
from mixmo_tf.evaluation.uncertainty import uncertainty

SERVING_DEFAULT = "serving_default"
IMAGE_BYTES_SIGNATURE = "predict_image_bytes"
NORMALIZED_SIGNATURE = "predict_normalized"
SIGNATURES = (SERVING_DEFAULT, IMAGE_BYTES_SIGNATURE, NORMALIZED_SIGNATURE)
DEFAULT_TOP_K = 5

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def ensemble_outputs(
    logits: tf.Tensor, class_names: tf.Tensor, temperature: float, top_k: int
) -> dict[str, tf.Tensor]:
    """The serving outputs from the members' logits.

    The temperature divides every logit (members and ensemble alike), so the ensemble is
    softmax(mean logits / T) and the members softmax(logits_m / T).

    Args:
        logits: `(batch, members, classes)` float32, from `MixMoModel.prediction_logits`.
        class_names: `(classes,)` string, the name of each label.
        temperature: T > 0; 1 leaves the probabilities unscaled.
        top_k: how many classes `classes`, `scores` and `class_names` list per image.

    Returns:
        `probabilities` `(batch, classes)`, `member_probabilities` `(batch, members, classes)`,
        `classes` `(batch, k)` int64 and `scores` `(batch, k)` (most probable first),
        `class_names` `(batch, k)` string, and per image the `uncertainty` measures:
        `entropy`, `mutual_information` and `disagreement`.
    """
    scaled = logits / temperature
    probabilities = tf.nn.softmax(tf.reduce_mean(scaled, axis=1))
    member_probabilities = tf.nn.softmax(scaled)
    scores, classes = tf.math.top_k(probabilities, k=top_k)
    classes = tf.cast(classes, tf.int64)
    return {
        "probabilities": probabilities,
        "member_probabilities": member_probabilities,
        "classes": classes,
        "scores": scores,
        "class_names": tf.gather(class_names, classes),
        **uncertainty(probabilities, member_probabilities),
    }


def uint8_images(pixels) -> tf.Tensor:
    """`pixels` as the uint8 tensor `serving_default` takes, refusing what a cast would change.

    TensorFlow converts a NumPy array of any numeric dtype to a signature's uint8 input by a
    wrapping cast (300.0 -> 44, 12.7 -> 12, NaN -> 0) before the graph runs, so the graph
    cannot see it; this conversion keeps exactly the values 0..255 written as whole numbers.

    Args:
        pixels: an array-like (NumPy array, nested lists, tensor) of integers or floats.

    Raises:
        ValueError: a value is not a whole number in 0..255, or the dtype is not numeric.
    """
    array = np.asarray(pixels)
    if array.dtype == np.uint8:
        return tf.constant(array)
    if array.dtype.kind not in "iuf":
        raise ValueError(
            f"images must be uint8 pixels (whole numbers 0..255). Received: dtype={array.dtype}"
        )
    whole = np.isfinite(array) & (array == np.round(array)) if array.dtype.kind == "f" else True
    bad = ~(whole & (array >= 0) & (array <= 255))
    if bad.any():
        raise ValueError(
            f"images must be uint8 pixels (whole numbers 0..255); {int(bad.sum())} of "
            f"{array.size} values are not, the first {array[bad][0].item()!r} at index "
            f"{tuple(map(int, np.argwhere(bad)[0]))}."
        )
    return tf.constant(array.astype(np.uint8))


def _check_image_batch(images: tf.Tensor, image_shape: Sequence[int], dtype: str) -> tf.Tensor:
    """`images` once the graph has checked it is `(batch, H, W, C)`.

    The check runs at serving time: TF Serving feeds the request's tensor as it comes.
    """
    shape = tf.shape(images)
    # Pad so that a tensor of another rank still compares elementwise (and fails).
    trailing = tf.concat([shape, [-1, -1, -1, -1]], axis=0)[1:4]
    valid = tf.logical_and(
        tf.equal(tf.size(shape), 4), tf.reduce_all(tf.equal(trailing, tuple(image_shape)))
    )
    # An empty batch would fail deep in the batch norm, naming channel counts.
    valid = tf.logical_and(valid, tf.greater(shape[0], 0))
    expected = f"(batch >= 1, {', '.join(map(str, image_shape))})"
    check = tf.debugging.Assert(
        valid,
        [f"Input images must be {dtype} of shape {expected}; received shape", shape],
        summarize=8,
    )
    with tf.control_dependencies([check]):
        return tf.identity(images)


def _check_finite(images: tf.Tensor) -> tf.Tensor:
    """`images` once the graph has checked every value is finite: a NaN or Inf pixel would
    otherwise come back as a plausible class with a plausible probability."""
    finite = tf.reduce_all(tf.math.is_finite(images), axis=[1, 2, 3])  # per image
    check = tf.debugging.Assert(
        tf.reduce_all(finite),
        [
            "Input images must be finite; NaN or Inf values in images",
            tf.where(tf.logical_not(finite))[:, 0],
        ],
        summarize=8,
    )
    with tf.control_dependencies([check]):
        return tf.identity(images)


def _decode_image(encoded: tf.Tensor, image_shape: Sequence[int]) -> tf.Tensor:
    """One JPEG or PNG image -> float32 pixels `(H, W, C)` in [0, 255] (JPEGs decoded as
    PIL decodes them: `mixmo_tf.data.decoding`).

    An image of another size is resized (bilinear, antialiased); one of the right size is
    passed through exactly, so it gives what the uint8 signature gives for its pixels.
    """
    height, width, channels = image_shape
    is_png = tf.equal(tf.strings.substr(encoded, 0, len(_PNG_SIGNATURE)), _PNG_SIGNATURE)
    check = tf.debugging.Assert(
        tf.logical_or(is_png, is_jpeg(encoded)),
        [
            "image_bytes must hold JPEG or PNG files (in a JSON request, base64 under the key "
            "b64); this element starts with",
            # As UTF-8 text with bad bytes replaced: raw bytes would make the error message
            # itself undecodable for clients (Python's UnicodeDecodeError).
            tf.strings.unicode_transcode(
                tf.strings.substr(encoded, 0, 8), "UTF-8", "UTF-8", errors="replace"
            ),
        ],
    )
    with tf.control_dependencies([check]):
        image = decode_image(encoded, channels)
    size = tf.shape(image)[:2]
    same_size = tf.reduce_all(tf.equal(size, (height, width)))
    return tf.cond(
        same_size,
        lambda: tf.cast(image, tf.float32),
        lambda: tf.image.resize(image, (height, width), antialias=True),
    )


def decode_images(image_bytes: tf.Tensor, image_shape: Sequence[int]) -> tf.Tensor:
    """JPEG or PNG files `(batch,)` string -> float32 pixels `(batch, H, W, C)` in [0, 255],
    each resized to `image_shape` if its size differs (`_decode_image`)."""
    return tf.map_fn(
        lambda encoded: _decode_image(encoded, image_shape),
        image_bytes,
        fn_output_signature=tf.TensorSpec(tuple(image_shape), tf.float32),
    )


def image_bytes_function(
    model: keras.Model,
    spec: DatasetSpec,
    class_names: Sequence[str],
    temperature: float = 1.0,
    top_k: int = DEFAULT_TOP_K,
) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """The `predict_image_bytes` signature's function for a model of any Keras backend:
    TensorFlow decodes the files and computes the outputs from the model's logits, which the
    model computes on its own backend. Same arguments as `ServingModule`'s."""
    names = tf.constant(tuple(class_names))
    image_shape = tuple(spec.image_shape)
    top_k = min(top_k, model.num_classes)
    decode = tf.function(lambda encoded: normalize(decode_images(encoded, image_shape), spec))
    logits_of = logits_function(model, image_shape)

    def predict(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        logits = tf.constant(logits_of(decode(image_bytes).numpy()))
        return ensemble_outputs(logits, names, temperature, top_k)

    return predict


class ServingModule(tf.Module):
    """The three serving functions of a MixMo model, ready for `tf.saved_model.save`.

    Tracks the model's variables, not the Keras objects: the SavedModel needs no Python.

    Args:
        model: a built `MixMoModel` (or anything with `prediction_logits(images)` returning
            `(batch, members, classes)` float32 logits).
        spec: the dataset the model was trained on: image shape, mean and std.
        class_names: the name of each label, in label order.
        temperature: T dividing the logits. Defaults to 1.0.
        top_k: classes listed per image (at most the number of classes). Defaults to 5.
    """

    def __init__(
        self,
        model: keras.Model,
        spec: DatasetSpec,
        class_names: Sequence[str],
        temperature: float = 1.0,
        top_k: int = DEFAULT_TOP_K,
    ):
        super().__init__(name="mixmo_serving")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0. Received: temperature={temperature}")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1. Received: top_k={top_k}")
        # The TensorFlow variables the graph reads, not Keras' wrappers: the wrappers export as
        # copies, and TF1 loaders (saved_model_cli, TF Serving) would then restore the copies
        # and leave the variables the graph reads uninitialised.
        self.model_variables = [variable.value for variable in model.variables]
        if len(class_names) != model.num_classes:
            raise ValueError(
                f"{len(class_names)} class names for a model of {model.num_classes} classes."
            )
        self.class_names = tuple(class_names)
        names = tf.constant(self.class_names)
        image_shape = tuple(spec.image_shape)
        top_k = min(top_k, model.num_classes)

        def outputs(normalized: tf.Tensor) -> dict[str, tf.Tensor]:
            logits = model.prediction_logits(normalized, training=False)
            return ensemble_outputs(logits, names, temperature, top_k)

        def predict_images(images):
            return outputs(normalize(_check_image_batch(images, image_shape, "uint8"), spec))

        def predict_image_bytes(image_bytes):
            return outputs(normalize(decode_images(image_bytes, image_shape), spec))

        def predict_normalized(images):
            return outputs(_check_finite(_check_image_batch(images, image_shape, "float32")))

        batch = (None, *image_shape)
        self.predict_images = tf.function(
            predict_images, input_signature=[tf.TensorSpec(batch, tf.uint8, name="images")]
        )
        self.predict_image_bytes = tf.function(
            predict_image_bytes,
            input_signature=[tf.TensorSpec((None,), tf.string, name="image_bytes")],
        )
        self.predict_normalized = tf.function(
            predict_normalized, input_signature=[tf.TensorSpec(batch, tf.float32, name="images")]
        )

    def signatures(self) -> dict[str, tf.types.experimental.ConcreteFunction]:
        """The SavedModel signatures by name."""
        return {
            SERVING_DEFAULT: self.predict_images.get_concrete_function(),
            IMAGE_BYTES_SIGNATURE: self.predict_image_bytes.get_concrete_function(),
            NORMALIZED_SIGNATURE: self.predict_normalized.get_concrete_function(),
        }
