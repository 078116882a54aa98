"""Training steps of a MixMo model on this process's Keras backend, from and to .npz files.

One process has one Keras backend, so a test that compares backends runs this module once per
backend, with tests/ and the repository on the path:

    KERAS_BACKEND=jax python -m helpers.backend_step case.npz results.npz

`case.npz` (written by `write_case`) holds the model's description, every weight of the
network (trainable and BatchNorm moving statistics, by variable path) and the steps' mixed
batches; the model is compiled with `PyTorchSGD` (Nesterov). For each step the results hold
the training logs, every network weight and every momentum buffer after the step (after the
first step from zero momentum, a buffer is that step's gradient), and the members' inference
logits before the first step.
"""

from __future__ import annotations

import json
import sys

import numpy as np

CASE_KEYS = ("images", "masks", "targets", "weights", "labels")


def write_case(path: str, spec: dict, weights: dict[str, np.ndarray], steps: list[dict]) -> None:
    """Writes a case: `spec` (backbone, depth, width, members, classes, image_shape, l2,
    learning_rate, momentum), the network's weights by path, and per step the mixed batch
    (`images` `(batch, M, H, W, C)`, `masks`, `targets`, `weights`, `labels`)."""
    arrays = {f"weight/{name}": value for name, value in weights.items()}
    for index, step in enumerate(steps):
        arrays.update({f"step{index}/{key}": np.asarray(step[key]) for key in CASE_KEYS})
    np.savez(path, spec=json.dumps(spec), num_steps=len(steps), **arrays)


def build(spec: dict):
    """The compiled MixMo model of `spec`, its variables and optimizer state built."""
    from mixmo_tf.models import MixMoModel, PyTorchSGD, preact_resnet, wide_resnet

    shape = tuple(spec["image_shape"])
    if spec["backbone"] == "wrn":
        network = wide_resnet(spec["depth"], spec["width"], spec["classes"], spec["members"], shape)
    else:
        network = preact_resnet(spec["width"], spec["classes"], spec["members"], shape)
    model = MixMoModel(network, l2=spec["l2"])
    model.compile(
        optimizer=PyTorchSGD(spec["learning_rate"], momentum=spec["momentum"], nesterov=True)
    )
    model(np.zeros((1, *shape), np.float32))
    model.optimizer.build(model.trainable_variables)
    return model


def network_weights(model) -> dict[str, np.ndarray]:
    """Every weight of the network (trainable and moving statistics) by variable path."""
    from keras import ops

    return {v.path: np.asarray(ops.convert_to_numpy(v)) for v in model.network.weights}


def run(case_path: str, results_path: str) -> None:
    from keras import ops

    case = np.load(case_path)
    model = build(json.loads(str(case["spec"])))
    weights = {v.path: v for v in model.network.weights}
    saved = {name[len("weight/") :] for name in case.files if name.startswith("weight/")}
    if saved != set(weights):
        raise ValueError(f"weights differ: {sorted(saved ^ set(weights))}")
    for name, variable in weights.items():
        variable.assign(case[f"weight/{name}"])

    results = {}
    for index in range(int(case["num_steps"])):
        step = {key: case[f"step{index}/{key}"] for key in CASE_KEYS}
        images = step["images"]
        if index == 0:
            results["prediction_logits"] = ops.convert_to_numpy(
                model.prediction_logits(images[:, 0])
            )
        batch = {
            "images": [images[:, member] for member in range(images.shape[1])],
            "masks": step["masks"],
            "targets": step["targets"],
            "weights": step["weights"],
        }
        model.reset_metrics()
        logs = model.step_on_mixed_batch(batch, step["labels"])
        for name, value in logs.items():
            results[f"step{index}/log/{name}"] = np.asarray(ops.convert_to_numpy(value))
        for name, value in network_weights(model).items():
            results[f"step{index}/weight/{name}"] = value
        for variable in model.trainable_variables:
            buffer = model.optimizer.momentum_buffer(variable)
            results[f"step{index}/momentum/{variable.path}"] = ops.convert_to_numpy(buffer)
    np.savez(results_path, **results)


if __name__ == "__main__":
    run(*sys.argv[1:])
