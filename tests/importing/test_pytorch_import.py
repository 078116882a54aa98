"""Importing the MixMo authors' checkpoints: their forward pass, loss and SGD step, reproduced.

The fixtures in tests/fixtures/authors/ were made by the authors' own code (mixmo-pytorch at
5a2a1a0) with PyTorch, by tests/fixtures/authors/make_fixtures.py (its docstring has the
command); these tests need no PyTorch. Full-size networks are checked with weights that a
seeded NumPy generator draws (tests/fixtures/authors/seeded_weights.py, shared with the
script), written to a torch file by tests/helpers/torch_writer.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from fixtures.authors.seeded_weights import seeded_weights
from helpers import torch_writer
from helpers.paths import AUTHORS_FIXTURES, REPO

from mixmo_tf.cli import modes
from mixmo_tf.config.run_folder import RunFolder, RunFolderError
from mixmo_tf.config.run_record import recorded_config
from mixmo_tf.config.settings import Config
from mixmo_tf.evaluation.run import evaluate
from mixmo_tf.importing import authors_checkpoint
from mixmo_tf.importing.authors_checkpoint import AuthorsArchitecture, AuthorsCheckpointError
from mixmo_tf.importing.pytorch_import import load_pytorch_checkpoint, to_keras_layout, variable_of
from mixmo_tf.importing.torch_format import TorchFileError, UnsafeTorchFileError, read_torch_file
from mixmo_tf.models.saving import load_model
from mixmo_tf.serving.export import export_run
from mixmo_tf.training.checkpoints import restore_run
from mixmo_tf.training.run import train

SMALL = {fmt: os.path.join(AUTHORS_FIXTURES, f"wrn10-1_m2_{fmt}.pt") for fmt in ("legacy", "zip")}
SINGLE = os.path.join(AUTHORS_FIXTURES, "wrn10-1_m1_zip.pt")
# Float32 everywhere: "auto" would pick bfloat16 on AMX machines.
FLOAT32 = {"precision": "float32"}


def fixture(name: str) -> dict[str, np.ndarray]:
    with np.load(os.path.join(AUTHORS_FIXTURES, name)) as arrays:
        return dict(arrays)


def assert_close_relative(got, want, tolerance: float) -> None:
    """|got - want| <= tolerance * max|want| everywhere."""
    got, want = np.asarray(got), np.asarray(want)
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=0, atol=tolerance * scale)


def member_masks(mask: np.ndarray) -> np.ndarray:
    """Member 0's mask (B, H, W) -> the masks of both members (B, H, W, 2)."""
    return np.stack([mask, 1.0 - mask], axis=-1).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


# ---- the small checkpoints: both file formats, M = 2 and the single network ---------------


@pytest.fixture(scope="module")
def imported_small():
    return {fmt: load_pytorch_checkpoint(path, **FLOAT32) for fmt, path in SMALL.items()}


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_the_authors_checkpoint_predicts_their_logits(imported_small, fmt):
    model, expected = imported_small[fmt], fixture("wrn10-1_m2_logits.npz")
    assert (model.num_members, model.num_classes) == (2, 10)
    logits = model.prediction_logits(expected["images"]).numpy()
    np.testing.assert_allclose(logits, expected["member_logits"], rtol=0, atol=1e-4)
    outputs = model(expected["images"])
    np.testing.assert_allclose(
        outputs["ensemble"], softmax(expected["ensemble_logits"]), rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_the_authors_checkpoint_mixes_features_as_their_code(imported_small, fmt):
    """The training path with a cut mask (BN in inference mode): M * sum_i m_i * l_i."""
    model, expected = imported_small[fmt], fixture("wrn10-1_m2_logits.npz")
    members = expected["member_images"]
    logits = model.member_logits(
        [members[:, 0], members[:, 1]], member_masks(expected["mask"]), training=False
    ).numpy()
    np.testing.assert_allclose(logits, expected["mixed_member_logits"], rtol=0, atol=1e-4)


def test_both_file_formats_import_the_same_state(imported_small):
    legacy, zipped = imported_small["legacy"], imported_small["zip"]
    for a, b in zip(
        legacy.weights + legacy.optimizer.variables, zipped.weights + zipped.optimizer.variables
    ):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_the_optimizer_resumes_at_the_saved_epoch_with_their_momentum(imported_small):
    model = imported_small["zip"]
    config = authors_checkpoint.import_config(
        AuthorsArchitecture("wrn", 10, 1, 2, 10), _default_config(), given=[]
    )
    assert model.optimizer.iterations.numpy() == 3 * config.derived_steps_per_epoch
    checkpoint = authors_checkpoint.read_authors_checkpoint(SMALL["zip"])
    stem = model.network.stems[1]
    buffer = model.optimizer.momentum_buffer(stem.kernel).numpy()
    expected = np.transpose(checkpoint.momentum["list_conv1.1.weight"], (2, 3, 1, 0))
    np.testing.assert_array_equal(buffer, expected)
    assert np.abs(buffer).max() > 0


def _default_config():
    return Config(**FLOAT32)


def test_the_single_network_imports_with_the_vanilla_recipe(tmp_path):
    model = load_pytorch_checkpoint(SINGLE, model_dir=str(tmp_path / "run"), **FLOAT32)
    expected = fixture("wrn10-1_m1_logits.npz")
    logits = model.prediction_logits(expected["images"]).numpy()[:, 0]
    np.testing.assert_allclose(logits, expected["ensemble_logits"], rtol=0, atol=1e-4)
    config = recorded_config(str(tmp_path / "run"))
    assert (config.num_members, config.mixing, config.batch_repetitions) == (1, "none", 1)
    assert (config.dataset, config.depth, config.width) == ("cifar10", 10, 1)


# ---- full-size networks with seeded weights ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, architecture, dataset",
    [
        ("wrn28-10_m2_seeded.npz", AuthorsArchitecture("wrn", 28, 10, 2, 100), "cifar100"),
        (
            "preact_resnet18-1_m2_seeded.npz",
            AuthorsArchitecture("preact_resnet", 18, 1, 2, 200),
            "tiny_imagenet",
        ),
    ],
)
def test_full_size_networks_compute_the_authors_logits(tmp_path, name, architecture, dataset):
    expected = fixture(name)
    authors_shapes = [(n, tuple(s)) for n, s in json.loads(str(expected["shapes"]))]
    # The state dict this project expects is the one the authors' network has, in its order.
    assert authors_checkpoint.authors_state_shapes(architecture) == authors_shapes
    path = str(tmp_path / "seeded.pt")
    torch_writer.write_torch_file(
        {"epoch": 300, "classifier_state_dict": seeded_weights(authors_shapes)}, path
    )
    model = load_pytorch_checkpoint(path, **FLOAT32)
    checkpoint = authors_checkpoint.read_authors_checkpoint(path)
    assert checkpoint.architecture == architecture
    assert recorded_dataset(architecture) == dataset
    logits = model.prediction_logits(expected["images"]).numpy()
    assert_close_relative(logits, expected["member_logits"], 1e-4)


def recorded_dataset(architecture: AuthorsArchitecture) -> str:
    return authors_checkpoint.import_config(architecture, _default_config(), given=[]).dataset


# ---- one training step -------------------------------------------------------------------------


def test_one_training_step_is_the_authors_loss_and_sgd_update():
    """From the small checkpoint, their batch, masks and loss weights: loss, weights, momentum.

    The imported run's recipe (CIFAR-10 Cut-MixMo: lr 0.1 * 16 / 128 = 0.0125 after the
    warm-up, l2 3e-4, Nesterov momentum 0.9) is the authors' config; the step is the one
    `train_step` takes once the mixing is drawn (`step_on_mixed_batch`).
    """
    step = fixture("wrn10-1_m2_step.npz")
    model = load_pytorch_checkpoint(SMALL["zip"], **FLOAT32)
    iteration = int(model.optimizer.iterations.numpy())
    assert float(model.optimizer.learning_rate) == pytest.approx(float(step["lr"]), rel=1e-7)
    assert model.l2 == pytest.approx(float(step["l2"]))
    members = np.random.default_rng(4).standard_normal((8, 2, 32, 32, 3)).astype(np.float32)
    labels = step["labels"]
    batch = {
        "images": [members[:, 0], members[:, 1]],
        "masks": member_masks(step["mask"]),
        "targets": np.eye(10, dtype=np.float32)[labels],
        "weights": step["loss_weights"].astype(np.float32),
    }
    metrics = model.step_on_mixed_batch(batch, labels)
    assert float(metrics["loss"]) == pytest.approx(float(step["loss"]), rel=1e-5)
    assert int(model.optimizer.iterations.numpy()) == iteration + 1

    checkpoint = authors_checkpoint.read_authors_checkpoint(SMALL["zip"])

    moved = 0
    for name in checkpoint.state:
        if name.endswith("num_batches_tracked"):
            continue
        variable = variable_of(model.network, name, "wrn")
        want = to_keras_layout(step[f"state/{name}"])
        np.testing.assert_allclose(variable.numpy(), want, rtol=0, atol=1e-5, err_msg=name)
        moved += not np.allclose(checkpoint.state[name], step[f"state/{name}"])
        if authors_checkpoint.is_parameter(name):
            buffer = model.optimizer.momentum_buffer(variable).numpy()
            want = to_keras_layout(step[f"momentum/{name}"])
            np.testing.assert_allclose(buffer, want, rtol=0, atol=1e-5, err_msg=name)
    assert moved > 40  # the step changed (nearly) every tensor: the comparison means something


# ---- the run folder: evaluate, export, predict and resume as any run -----------------------


@pytest.mark.slow
def test_an_imported_run_serves_evaluates_and_resumes(tmp_path):
    """Imported as a digits run (10 classes, bundled), so that its data is at hand here."""
    run = str(tmp_path / "run")
    recipe = dict(
        dataset="digits", steps_per_epoch=2, batch_size=16, eval_steps=1, eval_batch_size=32
    )
    load_pytorch_checkpoint(SMALL["legacy"], model_dir=run, **recipe, **FLOAT32)
    folder = RunFolder(run)
    record = json.loads(open(folder.import_record).read())
    assert (record["epoch"], record["step"], record["momentum_buffers"]) == (3, 6, True)
    assert record["source"] == os.path.abspath(SMALL["legacy"]) and len(record["sha256"]) == 64
    assert sorted(p for p in os.listdir(os.path.dirname(run)) if p.startswith(".")) == []
    config = recorded_config(run)
    expected = fixture("wrn10-1_m2_logits.npz")

    restored = restore_run(config)
    assert restored.step == 6
    logits = restored.model.prediction_logits(expected["images"]).numpy()
    np.testing.assert_allclose(logits, expected["member_logits"], rtol=0, atol=1e-4)
    keras_file = load_model(folder.final_model)
    np.testing.assert_allclose(
        keras_file.prediction_logits(expected["images"]).numpy(), logits, rtol=0, atol=1e-6
    )

    version = export_run(run)
    serve = tf.saved_model.load(version).signatures["predict_normalized"]
    probabilities = serve(images=tf.constant(expected["images"]))["probabilities"].numpy()
    np.testing.assert_allclose(probabilities, softmax(expected["ensemble_logits"]), atol=1e-5)

    results = evaluate(config)
    assert 0.0 <= results["accuracy"] <= 1.0 and math.isfinite(results["nll"])

    resumed = train(dataclasses.replace(config, epochs=4))
    assert int(resumed.optimizer.iterations.numpy()) == 8
    assert restore_run(recorded_config(run)).step == 8


def test_a_folder_that_holds_something_is_refused_untouched(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="is not empty"):
        load_pytorch_checkpoint(SMALL["zip"], model_dir=str(run), **FLOAT32)
    assert os.listdir(run) == ["notes.txt"]


def test_data_parallel_prefixes_are_read(tmp_path):
    content = read_torch_file(SMALL["zip"])
    state = content["classifier_state_dict"]
    content["classifier_state_dict"] = {f"module.{k}": v for k, v in state.items()}
    path = str(tmp_path / "data_parallel.pt")
    torch_writer.write_torch_file(content, path)
    checkpoint = authors_checkpoint.read_authors_checkpoint(path)
    assert checkpoint.architecture == AuthorsArchitecture("wrn", 10, 1, 2, 10)
    np.testing.assert_array_equal(
        checkpoint.state["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"]
    )


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"num_members": 3}, r"--num_members=3 but the file holds 2"),
        ({"width": 2, "depth": 10}, r"--width=2 but the file holds 1"),
        ({"dataset": "cifar100"}, r"--dataset=cifar100 has 100 classes, the file's heads 10"),
        ({"optimizer": "keras_sgd"}, r"--optimizer=keras_sgd but the file's momentum"),
    ],
)
def test_a_setting_that_contradicts_the_file_is_refused_by_name(settings, message):
    architecture = AuthorsArchitecture("wrn", 10, 1, 2, 10)
    flagged = Config(**{**FLOAT32, **settings})
    with pytest.raises(ValueError, match=message):
        authors_checkpoint.import_config(architecture, flagged, given=list(settings))


# ---- bad files: one ERROR line, exit 2, nothing written -------------------------------------


def run_import(checkpoint: str, model_dir: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "main.py",
            "--mode=import",
            f"--checkpoint={checkpoint}",
            f"--model_dir={model_dir}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )


@pytest.mark.slow
def test_the_command_imports_then_refuses_a_malicious_file(tmp_path):
    run = tmp_path / "run"
    done = run_import(SMALL["zip"], str(run))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "WRN-10-1, M=2, 10 classes, epoch 3" in done.stdout and "at step 9375" in done.stdout
    assert os.path.exists(RunFolder(str(run)).final_model)

    marker = tmp_path / "ran"
    evil = str(tmp_path / "evil.pt")
    torch_writer.write_pickle_with_global(evil, "os", "system", (f"touch {marker}",))
    refused = run_import(evil, str(tmp_path / "evil_run"))
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
    assert refused.stderr.startswith("ERROR: ") and "os.system" in refused.stderr
    assert not marker.exists() and not (tmp_path / "evil_run").exists()


def bad_files(tmp_path) -> dict[str, tuple[str, type, str]]:
    """name -> (path, error class, message pattern)."""
    truncated = tmp_path / "truncated.pt"
    data = open(SMALL["zip"], "rb").read()
    truncated.write_bytes(data[: len(data) // 2])
    text = tmp_path / "page.pt"
    text.write_text("<!DOCTYPE html><html>Google Drive - Virus scan warning</html>")
    resnet = tmp_path / "torchvision_resnet18.pt"
    torch_writer.write_torch_file(torchvision_like_resnet18(), str(resnet))
    return {
        "truncated zip": (str(truncated), TorchFileError, "truncated or damaged"),
        "not a torch file": (str(text), TorchFileError, "not a PyTorch"),
        "another architecture": (
            str(resnet),
            AuthorsCheckpointError,
            "not a checkpoint of the authors",
        ),
    }


def torchvision_like_resnet18() -> dict:
    """A state dict named like torchvision's ResNet-18 (conv1, bn1, layer1..4, downsample, fc)."""
    state = {"conv1.weight": np.zeros((64, 3, 7, 7), np.float32)}
    for name in ("bn1",):
        state.update(
            {
                f"{name}.{k}": np.ones(64, np.float32)
                for k in ("weight", "bias", "running_mean", "running_var")
            }
        )
    for stage, channels in enumerate((64, 128, 256, 512), start=1):
        state[f"layer{stage}.0.conv1.weight"] = np.zeros((channels, channels, 3, 3), np.float32)
        state[f"layer{stage}.0.downsample.0.weight"] = np.zeros(
            (channels, channels, 1, 1), np.float32
        )
    state.update(
        {"fc.weight": np.zeros((1000, 512), np.float32), "fc.bias": np.zeros(1000, np.float32)}
    )
    return {"epoch": 90, "classifier_state_dict": state}


def test_bad_files_are_refused_in_one_line_and_write_nothing(tmp_path, capsys):
    for name, (path, error, pattern) in bad_files(tmp_path).items():
        with pytest.raises(error, match=pattern):
            authors_checkpoint.read_authors_checkpoint(path)
        run = tmp_path / f"run_{name.replace(' ', '_')}"

        def check(path=path, run=run) -> int:
            modes.check_import_inputs(path, Config(model_dir=str(run), **FLOAT32), True, [])
            return 0

        assert modes.report_user_errors(check) == 2, name
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ERROR: ") and path in lines[0], (
            name,
            lines,
        )
        assert not run.exists()


def test_a_malicious_pickle_is_refused_before_anything_runs(tmp_path):
    marker = tmp_path / "ran"
    for legacy in (False, True):
        evil = str(tmp_path / f"evil_{legacy}.pt")
        torch_writer.write_pickle_with_global(
            evil, "os", "system", (f"touch {marker}",), legacy=legacy
        )
        with pytest.raises(UnsafeTorchFileError, match=r"os\.system"):
            authors_checkpoint.read_authors_checkpoint(evil)
        assert not marker.exists()
