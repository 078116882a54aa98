"""Keyed random numbers (`mixmo_tf.mixing.keyed_random`) on whichever backend Keras runs.

Proves that:
- a key gives the same draws every time and other keys give other draws, so the mixing is a
  function of (seed, step, replica) on every backend;
- the keys `fold_in` numbers, and those `split` makes, differ from each other and from their
  parent;
- `uniform` and `gamma` draw the distributions they name (Kolmogorov-Smirnov tests);
- on JAX everything traces under `jax.jit` with the counter a traced value;
- on TensorFlow the draws are exactly `tf.random`'s stateless ones that the TensorFlow-only
  releases used, so their runs resume on the same stream.
"""

import keras
import numpy as np
import pytest
from keras import ops
from scipy import stats

from mixmo_tf.mixing import keyed_random

NUM_SAMPLES = 20_000


def as_numpy(tensor) -> np.ndarray:
    return ops.convert_to_numpy(tensor)


@pytest.mark.backends
def test_a_key_gives_the_same_draws_and_other_keys_other_draws():
    first = as_numpy(keyed_random.uniform(keyed_random.key(3, 7), [64]))
    again = as_numpy(keyed_random.uniform(keyed_random.key(3, 7), [64]))
    np.testing.assert_array_equal(first, again)
    others = [keyed_random.key(3, 8), keyed_random.key(4, 7)]
    for other in others:
        assert not np.any(as_numpy(keyed_random.uniform(other, [64])) == first)


def words(key) -> tuple[int, int]:
    word_pair = tuple(as_numpy(key).tolist())
    assert len(word_pair) == 2
    return word_pair


@pytest.mark.backends
def test_derived_keys_are_distinct_and_deterministic():
    parent = keyed_random.key(5, 11)
    folded = [keyed_random.fold_in(parent, stream) for stream in range(4)]
    folded.append(keyed_random.fold_in(folded[0], 0))
    split = keyed_random.split(parent, 3)
    for children in (folded, split):
        found = [words(key) for key in [parent, *children]]
        assert len(set(found)) == len(found), found
        draws = [as_numpy(keyed_random.uniform(key, [8])).tobytes() for key in children]
        assert len(set(draws)) == len(draws)
    assert [words(key) for key in keyed_random.split(parent, 3)] == [words(key) for key in split]
    assert words(keyed_random.fold_in(parent, 3)) == words(folded[3])


@pytest.mark.backends
@pytest.mark.parametrize("minval, maxval", [(0.0, 1.0), (1e-7, 1.0), (-2.0, 3.0)])
def test_uniform_is_uniform_on_its_interval(minval, maxval):
    samples = as_numpy(keyed_random.uniform(keyed_random.key(1, 2), [NUM_SAMPLES], minval, maxval))
    assert samples.dtype == np.float32 and samples.shape == (NUM_SAMPLES,)
    assert samples.min() >= minval and samples.max() < maxval
    result = stats.kstest(samples, stats.uniform(minval, maxval - minval).cdf)
    assert result.pvalue > 1e-4, result


@pytest.mark.backends
def test_uniform_takes_multidimensional_shapes():
    samples = as_numpy(keyed_random.uniform(keyed_random.key(1, 3), (4, 3, 2)))
    assert samples.shape == (4, 3, 2)
    assert as_numpy(keyed_random.uniform(keyed_random.key(1, 3), [])).shape == ()


@pytest.mark.backends
@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.5])
def test_gamma_is_gamma(alpha):
    # The shape of the Dirichlet draws of test_mixing_on_every_backend: JAX compiles it once.
    samples = as_numpy(keyed_random.gamma(keyed_random.key(2, 9), [NUM_SAMPLES, 3], alpha))
    assert samples.dtype == np.float32 and samples.min() >= 0
    result = stats.kstest(samples.reshape(-1).astype(np.float64), stats.gamma(alpha).cdf)
    assert result.pvalue > 1e-4, result


@pytest.mark.backends
def test_the_counter_may_be_a_tensor_or_a_variable():
    expected = as_numpy(keyed_random.uniform(keyed_random.key(6, 4), [5]))
    counters = [ops.convert_to_tensor(4), keras.Variable(4, dtype="int32", trainable=False)]
    for counter in counters:
        draws = as_numpy(keyed_random.uniform(keyed_random.key(6, counter), [5]))
        np.testing.assert_array_equal(draws, expected)


@pytest.mark.backends
def test_jax_keys_trace_under_jit():
    if keras.backend.backend() != "jax":
        pytest.skip("JAX only")
    import jax

    @jax.jit
    def draws(step):
        first, second = keyed_random.split(keyed_random.fold_in(keyed_random.key(7, step), 2), 2)
        return keyed_random.uniform(first, [3]), keyed_random.uniform(second, [3], 1.0, 2.0)

    first, second = keyed_random.split(keyed_random.fold_in(keyed_random.key(7, 5), 2), 2)
    traced = draws(5)
    np.testing.assert_array_equal(traced[0], keyed_random.uniform(first, [3]))
    np.testing.assert_array_equal(traced[1], keyed_random.uniform(second, [3], 1.0, 2.0))
    assert not np.array_equal(draws(6)[0], traced[0])


def test_tensorflow_draws_are_the_stateless_tf_random_ones():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("TensorFlow only")
    import tensorflow as tf

    step_key = keyed_random.key(3, tf.Variable(17, dtype=tf.int64))
    expected_key = tf.constant([3, 17], tf.int64)
    np.testing.assert_array_equal(step_key, expected_key)
    folded = tf.random.experimental.stateless_fold_in(expected_key, 2)
    np.testing.assert_array_equal(keyed_random.fold_in(step_key, 2), folded)
    split = tf.random.experimental.stateless_split(folded, 3)
    np.testing.assert_array_equal(np.stack(keyed_random.split(folded, 3)), split)
    np.testing.assert_array_equal(
        keyed_random.uniform(split[0], [6, 2], 1e-7, 1.0),
        tf.random.stateless_uniform([6, 2], split[0], minval=1e-7, maxval=1.0),
    )
    np.testing.assert_array_equal(
        keyed_random.uniform(split[1], [6]), tf.random.stateless_uniform([6], split[1])
    )
    np.testing.assert_array_equal(
        keyed_random.gamma(split[2], [6], 0.5), tf.random.stateless_gamma([6], split[2], alpha=0.5)
    )
