"""The uncertainty of an ensemble's prediction, defined once for evaluation and serving.

Evaluation's out-of-distribution scores (`mixmo_tf.evaluation.ood`) and the served graph's
outputs (`mixmo_tf.serving.graph`) both call `uncertainty`, so an evaluated score and a served
one are the same number. TensorFlow ops only: it runs inside the SavedModel's graph.
"""

from __future__ import annotations

import tensorflow as tf


def entropy(probabilities) -> tf.Tensor:
    """Shannon entropy (nats) over the last axis; 0 log 0 = 0."""
    return -tf.reduce_sum(tf.math.xlogy(probabilities, probabilities), axis=-1)


def uncertainty(probabilities, member_probabilities) -> dict[str, tf.Tensor]:
    """Per-example uncertainty of an ensemble's prediction.

    Args:
        probabilities: `(batch, classes)` the ensemble's prediction.
        member_probabilities: `(batch, members, classes)` each member's.

    Returns:
        `entropy` of the ensemble's prediction; `mutual_information`, the entropy of the
        members' mean probabilities minus their mean entropy (>= 0; 0 for one member); and
        `disagreement`, the fraction of members whose top class differs from the ensemble's.
    """
    probabilities = tf.convert_to_tensor(probabilities)
    member_probabilities = tf.convert_to_tensor(member_probabilities)
    member_entropy = tf.reduce_mean(entropy(member_probabilities), axis=1)
    ensemble_class = tf.argmax(probabilities, axis=-1)
    member_classes = tf.argmax(member_probabilities, axis=-1)
    differs = tf.not_equal(member_classes, ensemble_class[:, tf.newaxis])
    return {
        "entropy": entropy(probabilities),
        "mutual_information": entropy(tf.reduce_mean(member_probabilities, axis=1))
        - member_entropy,
        "disagreement": tf.reduce_mean(tf.cast(differs, probabilities.dtype), axis=1),
    }
