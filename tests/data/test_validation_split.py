"""--validation_split: a fixed seeded slice of the training split, held out of training."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.flags import parse

from mixmo_tf.config import Config
from mixmo_tf.data import split_validation


def test_split_holds_out_a_fixed_slice_and_keeps_the_rest_in_order():
    images = np.arange(100)[:, None] * np.ones((1, 3))
    labels = np.arange(100)
    (train_images, train_labels), (held_images, held_labels) = split_validation(images, labels, 10)
    assert len(held_labels) == 10 and len(train_labels) == 90
    assert not set(held_labels) & set(train_labels)
    assert np.all(np.diff(train_labels) > 0)  # original order: the data stream is unchanged
    np.testing.assert_array_equal(train_images[:, 0], train_labels)
    np.testing.assert_array_equal(held_labels, split_validation(images, labels, 10)[1][1])


def test_no_validation_split_leaves_the_training_split_unchanged():
    labels = np.arange(50)
    (train_images, train_labels), (held_images, _) = split_validation(labels * 2, labels, 0)
    np.testing.assert_array_equal(train_labels, labels)
    np.testing.assert_array_equal(train_images, labels * 2)
    assert len(held_images) == 0


def test_config_derives_the_training_size_from_the_held_out_fraction():
    config = Config(dataset="digits", validation_split=0.1, batch_size=64, batch_repetitions=2)
    assert config.num_validation_examples == 144
    assert config.num_train_examples == 1437 - 144
    assert config.derived_steps_per_epoch == (1437 - 144) * 2 // 64
    assert parse("--dataset=digits", "--validation_split=0.25").validation_split == 0.25


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_bad_validation_split_is_refused_naming_the_flag(value):
    with pytest.raises(ValueError, match="--validation_split must be in"):
        Config(validation_split=value)
