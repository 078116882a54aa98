"""The tf.distribute strategy a run asks for."""

from __future__ import annotations

import math
import socket
import urllib.parse

import tensorflow as tf

from mixmo_tf.config.errors import UserError
from mixmo_tf.training.backend import require_tensorflow

# How long to wait for a TPU worker's port to answer before saying none is reachable.
_TPU_CONNECT_TIMEOUT_SECONDS = 10


class StrategyError(UserError):
    """The strategy asked for cannot be created here (e.g. no TPU is reachable)."""


def make_strategy(name: str, tpu: str = "") -> tf.distribute.Strategy:
    """The strategy for `--distribution`.

    "default": the current (single-device) strategy. "mirrored": all local GPUs, or the CPU.
    "multi_worker_mirrored": synchronous training over the workers in TF_CONFIG; create it
    at program start, before other TensorFlow work. "tpu": the TPU named or addressed by
    `tpu` (see `tpu_strategy`).

    Raises:
        StrategyError: "tpu" and no TPU is reachable.
        TensorFlowOnlyError: any but "default" while Keras runs on another backend.
    """
    if name == "default":
        return tf.distribute.get_strategy()  # on every backend: one device, no replicas
    require_tensorflow(f"--distribution={name} (tf.distribute)")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        return tpu_strategy(tpu)
    raise ValueError(
        "--distribution must be one of default, mirrored, multi_worker_mirrored, tpu. "
        f"Received: distribution={name!r}"
    )


def check_batch_split(
    strategy: tf.distribute.Strategy, batch_size: int, batch_repetitions: int = 1
) -> None:
    """Checks that the global batch splits evenly over `strategy`'s replicas.

    Each replica divides its slice's mean loss by the number of replicas; with unequal
    slices the summed gradient is not the whole batch's mean.

    Raises:
        StrategyError: it does not, with the nearest batch sizes that do (multiples of
            `batch_repetitions` too, as every batch size must be).
    """
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas == 0:
        return
    step = math.lcm(replicas, batch_repetitions)
    lower = batch_size - batch_size % step
    sizes = f"{lower} or {lower + step}" if lower else str(step)
    raise StrategyError(
        f"--batch_size={batch_size} does not split evenly over the {replicas} replicas of "
        f"this --distribution: their slices would weigh unequally in the gradient. Use a "
        f"multiple of {step} ({sizes})."
    )


def tpu_strategy(tpu: str) -> tf.distribute.TPUStrategy:
    """A TPUStrategy on `tpu`: a Cloud TPU name, a `grpc://host:port` address, or "" for
    the TPU of this TPU VM.

    TensorFlow waits a long time for an address that does not answer; this checks the
    worker's port first and fails within seconds instead.

    Raises:
        StrategyError: the name cannot be resolved or the TPU does not answer.
    """
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or None)
        master = resolver.master()
    except (ValueError, OSError, RuntimeError) as error:
        raise StrategyError(
            f"No TPU found for --tpu={tpu!r} ({error}). Give a Cloud TPU name or a "
            "grpc://host:port address, or run on a TPU VM."
        ) from error
    address = urllib.parse.urlparse(master)
    if address.hostname and address.port:
        try:
            socket.create_connection(
                (address.hostname, address.port), timeout=_TPU_CONNECT_TIMEOUT_SECONDS
            ).close()
        except OSError as error:
            raise StrategyError(
                f"No TPU is reachable at {master} ({error.strerror or error}). Check --tpu "
                "and that the TPU is running and reachable from this machine."
            ) from error
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
