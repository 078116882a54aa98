"""`MixMoModel`'s steps where the variables hold the state: TensorFlow and PyTorch.

`fit`, `evaluate` and `predict` call these with a batch; the model's variables, the
optimizer's and the metrics' change in place. Each backend adds `step_on_mixed_batch`, its way
of taking the gradients (`steps_tensorflow`, `steps_torch`).
"""

from __future__ import annotations

import keras


class StatefulSteps:
    """`train_step`, `test_step` and `predict_step` over `MixMoModel`'s backend-agnostic parts."""

    def train_step(self, data):
        data, _, _ = keras.utils.unpack_x_y_sample_weight(data)  # also from train_on_batch(x)
        return self.step_on_mixed_batch(self.mix_batch(data), data["labels"])

    def test_step(self, data):
        data, _, _ = keras.utils.unpack_x_y_sample_weight(data)  # also from test_on_batch(x)
        return self.evaluate_batch(data)

    def predict_step(self, data):
        inputs, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        images = inputs["images"] if isinstance(inputs, dict) else inputs
        return self(images, training=False)
