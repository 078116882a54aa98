"""Keyed (stateless) random numbers on every Keras backend: draws that depend only on a key.

A key is a small integer tensor of shape `(2,)`. `key(seed, counter)` makes one; `fold_in`
and `split` derive new keys from it; `uniform` and `gamma` draw from it. Derive a key's
children either with `fold_in` (numbered streams) or with `split`, not both: on JAX,
`split(key, n)[i]` is `fold_in(key, i)`. The same key gives the same numbers every time,
so MixMo's mixing is a pure function of (seed, step, replica): a resumed run continues the
same random stream, on every backend.

Each backend uses its own generator:

- TensorFlow: `tf.random.stateless_*` and `tf.random.experimental.stateless_fold_in/split`
  (int64 keys). These are the draws of the TensorFlow-only releases, so runs started by them
  resume on the same stream.
- JAX: `jax.random` with threefry keys (the key is its uint32 key data); jit-compatible.
- PyTorch: the key is hashed into the seed of a fresh CPU `torch.Generator` (int64 keys; the
  draws then move to Keras' device, so CPU and GPU draw the same numbers). PyTorch runs
  eagerly under Keras, so reading the key's value in Python costs nothing.

The same key gives different numbers on different backends: the draws are equal in
distribution across backends, not equal. The arithmetic applied to them (masks, weights,
labels) is the same function everywhere.

`keras.random` is not used: on TensorFlow and PyTorch its seed is an int or a stateful
`SeedGenerator`, it has no fold_in or split, and on TensorFlow it folds the seed into int32,
which would change the TensorFlow stream.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Sequence
from typing import Any

import keras

# A backend tensor: tf.Tensor, jax.Array or torch.Tensor, whichever Keras runs on.
Tensor = Any


def key(seed: int, counter) -> Tensor:
    """The key of `counter` (an int or an integer scalar tensor, e.g. a step) in stream `seed`.

    Args:
        seed: an int in [0, 2**32).
        counter: a non-negative integer, or a scalar integer tensor or variable.
    """
    return _implementation(keras.backend.backend()).key(seed, counter)


def fold_in(key: Tensor, data) -> Tensor:
    """A new key from `key` and an integer `data` (an int or an integer scalar tensor)."""
    return _implementation(keras.backend.backend()).fold_in(key, data)


def split(key: Tensor, num: int) -> list[Tensor]:
    """`num` independent new keys from `key`."""
    return _implementation(keras.backend.backend()).split(key, num)


def uniform(key: Tensor, shape: Sequence, minval: float = 0.0, maxval: float = 1.0) -> Tensor:
    """float32 variates uniform on [minval, maxval), drawn from `key`."""
    return _implementation(keras.backend.backend()).uniform(key, shape, minval, maxval)


def gamma(key: Tensor, shape: Sequence, alpha: float) -> Tensor:
    """float32 Gamma(alpha, 1) variates drawn from `key`."""
    return _implementation(keras.backend.backend()).gamma(key, shape, alpha)


@functools.cache
def _implementation(backend: str):
    """The keyed generator of `backend`; its library is imported only here."""
    implementations = {"tensorflow": _TensorFlowKeys, "jax": _JaxKeys, "torch": _TorchKeys}
    if backend not in implementations:
        raise ValueError(
            f"MixMo's mixing runs on the Keras backends {sorted(implementations)}. "
            f"Received: KERAS_BACKEND={backend!r}"
        )
    return implementations[backend]()


class _TensorFlowKeys:
    """int64 keys for `tf.random`'s stateless functions (the default, Philox-based)."""

    def __init__(self):
        import tensorflow as tf

        self.tf = tf

    def key(self, seed, counter):
        tf = self.tf
        return tf.stack([tf.constant(seed, tf.int64), tf.cast(counter, tf.int64)])

    def fold_in(self, key, data):
        return self.tf.random.experimental.stateless_fold_in(key, data)

    def split(self, key, num):
        return self.tf.unstack(self.tf.random.experimental.stateless_split(key, num))

    def uniform(self, key, shape, minval, maxval):
        return self.tf.random.stateless_uniform(list(shape), key, minval=minval, maxval=maxval)

    def gamma(self, key, shape, alpha):
        return self.tf.random.stateless_gamma(list(shape), key, alpha=alpha)


class _JaxKeys:
    """uint32 threefry key data for `jax.random`; everything stays traceable."""

    def __init__(self):
        import jax

        self.jax = jax

    def _typed(self, key):
        return self.jax.random.wrap_key_data(
            self.jax.numpy.asarray(key).astype("uint32"), impl="threefry2x32"
        )

    def key(self, seed, counter):
        numpy = self.jax.numpy
        counter = numpy.asarray(keras.ops.convert_to_tensor(counter)).astype("uint32")
        return numpy.stack([numpy.asarray(seed, "uint32"), counter])

    def fold_in(self, key, data):
        data = self.jax.numpy.asarray(keras.ops.convert_to_tensor(data)).astype("uint32")
        return self.jax.random.key_data(self.jax.random.fold_in(self._typed(key), data))

    def split(self, key, num):
        return list(self.jax.random.key_data(self.jax.random.split(self._typed(key), num)))

    def uniform(self, key, shape, minval, maxval):
        return self.jax.random.uniform(
            self._typed(key), _static(shape), "float32", minval=minval, maxval=maxval
        )

    def gamma(self, key, shape, alpha):
        return self.jax.random.gamma(self._typed(key), alpha, _static(shape), "float32")


class _TorchKeys:
    """int64 keys hashed (BLAKE2b) into the seeds of CPU `torch.Generator`s."""

    def __init__(self):
        import torch

        self.torch = torch

    def _derived(self, purpose: bytes, key, *data: int) -> list[int]:
        """Two signed 64-bit words hashed from `purpose`, `key`'s words and `data`."""
        words = [int(word) for word in keras.ops.convert_to_numpy(key)] + list(data)
        digest = hashlib.blake2b(
            struct.pack(f"<{len(words)}q", *words), digest_size=16, person=purpose
        ).digest()
        return [
            int.from_bytes(digest[:8], "little", signed=True),
            int.from_bytes(digest[8:], "little", signed=True),
        ]

    def _words(self, values) -> Tensor:
        return self.torch.tensor(values, dtype=self.torch.int64)

    def _generator(self, key):
        return self.torch.Generator().manual_seed(self._derived(b"draw", key)[0] & (2**63 - 1))

    def key(self, seed, counter):
        return self._words([seed, int(keras.ops.convert_to_numpy(counter))])

    def fold_in(self, key, data):
        return self._words(self._derived(b"fold_in", key, int(keras.ops.convert_to_numpy(data))))

    def split(self, key, num):
        return [self._words(self._derived(b"split", key, index)) for index in range(num)]

    def uniform(self, key, shape, minval, maxval):
        draws = self.torch.rand(_static(shape), generator=self._generator(key))
        return keras.ops.convert_to_tensor(minval + (maxval - minval) * draws)

    def gamma(self, key, shape, alpha):
        # torch.distributions.Gamma samples with this function but takes no generator.
        alphas = self.torch.full(_static(shape), float(alpha))
        draws = self.torch._standard_gamma(alphas, generator=self._generator(key))
        return keras.ops.convert_to_tensor(draws)


def _static(shape: Sequence) -> tuple[int, ...]:
    """A shape of Python ints (JAX and PyTorch shapes are static)."""
    return tuple(int(size) for size in shape)
