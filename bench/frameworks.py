"""What differs between the Keras backends in a measurement: the framework's facts, how it
compiles a function, and how its `fit` runs one compiled training step.

Each function imports only the framework of the active backend (`keras.backend.backend()`),
which Keras has imported already, so the bench scripts built on this module run on a machine
that has JAX or PyTorch and no TensorFlow at all.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import keras


def backend() -> str:
    """The active Keras backend: "tensorflow", "jax" or "torch"."""
    return keras.backend.backend()


def _tensorflow_facts() -> dict[str, Any]:
    import tensorflow as tf

    from mixmo_tf.tuning.step_timing import onednn_enabled

    gpus = tf.config.list_physical_devices("GPU")
    return {
        "tensorflow": tf.__version__,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "device": tf.config.experimental.get_device_details(gpus[0]).get("device_name", "gpu")
        if gpus
        else "cpu",
        "onednn": onednn_enabled(),
        # Set to emulate an older CPU: oneDNN then leaves out the newer instructions.
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "all"),
    }


def _jax_facts() -> dict[str, Any]:
    import jax

    device = jax.devices()[0]
    return {"jax": jax.__version__, "device": f"{device.platform}: {device.device_kind}"}


def _torch_facts() -> dict[str, Any]:
    import torch

    return {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }


_FACTS = {"tensorflow": _tensorflow_facts, "jax": _jax_facts, "torch": _torch_facts}


def framework_facts() -> dict[str, Any]:
    """The backend, its framework's version, threads and device (and oneDNN on TensorFlow).

    Thread settings of 0 mean TensorFlow's default (one thread per core).
    """
    return {"backend": backend(), **_FACTS[backend()]()}


def compiled(function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` (of backend tensors) compiled as the backend compiles a training step:
    `tf.function` on TensorFlow, `jax.jit` on JAX, as is on PyTorch (eager)."""
    if backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(function)
    if backend() == "jax":
        import jax

        return jax.jit(function)
    return function


def training_step(model: keras.Model) -> Callable[[Any], float]:
    """`model`'s compiled training step as its backend's `fit` runs it, one batch per call.

    A call trains on the batch (a structure of backend tensors) and returns the loss as a
    float, which waits for the step to finish on any device. On JAX the variables' values
    live in a state the step returns and takes back, as in `fit`; they are not written back
    to `model` (nothing measured reads them).
    """
    model.make_train_function()
    train_function = model.train_function
    if backend() == "tensorflow":
        return lambda batch: float(train_function(iter([batch]))["loss"])
    if backend() == "torch":
        model.train()  # torch.nn.Module's training mode, as fit sets it

        return lambda batch: float(train_function([batch])["loss"])
    state = (
        [variable.value for variable in model.trainable_variables],
        [variable.value for variable in model.non_trainable_variables],
        [variable.value for variable in model.optimizer.variables],
        [variable.value for variable in model.metrics_variables],
    )

    def jax_step(batch: Any) -> float:
        nonlocal state
        logs, state = train_function(state, iter([batch]))
        return float(logs["loss"])

    return jax_step
