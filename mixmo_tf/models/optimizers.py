"""SGD with momentum as PyTorch computes it, which the paper's runs used.

Keras' SGD keeps the learning rate inside its velocity (v = mu * v - lr * g); PyTorch's keeps
a buffer of raw gradients (b = mu * b + g) and applies the current rate to the whole step.
Both agree while the rate is constant; after every change of rate (each step of the warm-up,
each decay) Keras' velocity still carries the old rates for ~1 / (1 - mu) steps. After a x0.1
decay, for example, PyTorch's first step is (1 + mu) times smaller than it would be at the
old rate, and Keras' is not yet.
"""

from __future__ import annotations

import keras
from keras import ops

from mixmo_tf.config.choices import OPTIMIZERS


@keras.saving.register_keras_serializable(package="mixmo_tf")
class PyTorchSGD(keras.optimizers.SGD):
    """`torch.optim.SGD` (dampening 0, no weight decay) as a Keras optimizer.

    With momentum mu, gradient g and the current learning rate lr:

        b = mu * b + g
        w = w - lr * (g + mu * b)   if nesterov
        w = w - lr * b              otherwise

    Same arguments, variables (one `momentum` buffer per variable), saved format and
    checkpoint layout as `keras.optimizers.SGD`; only the meaning of the buffer differs, so
    a run is not resumed with the other optimizer (`Config.optimizer` is fixed per run).
    """

    def momentum_buffer(self, variable) -> keras.Variable:
        """The buffer b of `variable`: `torch.optim.SGD`'s `momentum_buffer`."""
        return self.momentums[self._get_variable_index(variable)]

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if self.momentum == 0:
            self.assign_sub(variable, ops.multiply(gradient, learning_rate))
            return
        momentum = ops.cast(self.momentum, variable.dtype)
        buffer = self.momentum_buffer(variable)
        self.assign(buffer, ops.add(ops.multiply(buffer, momentum), gradient))
        step = ops.add(gradient, ops.multiply(buffer, momentum)) if self.nesterov else buffer
        self.assign_sub(variable, ops.multiply(step, learning_rate))


def make_optimizer(name: str, learning_rate, momentum: float) -> keras.optimizers.Optimizer:
    """The Nesterov SGD `name` ("pytorch_sgd": the paper's numerics, or "keras_sgd")."""
    if name not in OPTIMIZERS:
        raise ValueError(f"--optimizer must be one of {OPTIMIZERS}. Received: optimizer={name!r}")
    optimizer_class = PyTorchSGD if name == "pytorch_sgd" else keras.optimizers.SGD
    return optimizer_class(learning_rate, momentum=float(momentum), nesterov=True)
