"""SavedModel export for TF Serving: layout, signatures, numbers, isolation, errors.

One tiny digits run (WRN-10-1, M=2, a few steps, float32) is trained and exported once for
the module. The real `saved_model_cli` from the TensorFlow wheel reads the export; a fresh
Python process in which mixmo_tf cannot be imported serves it; every output is checked
against `MixMoModel.predict` or a numpy hand computation from the member probabilities.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from helpers import disk_limits
from helpers.images import encoded, pil_pixels
from helpers.paths import REPO
from helpers.runs import tiny_run_config
from tensorflow.core.protobuf import saved_model_pb2

from mixmo_tf.cli import flags as mixmo_flags
from mixmo_tf.cli import modes
from mixmo_tf.config import run_folder, run_record
from mixmo_tf.config.datasets import DATASETS
from mixmo_tf.data import load_split, normalize
from mixmo_tf.data.class_names import class_names
from mixmo_tf.evaluation import ood
from mixmo_tf.evaluation.predictions import predict_logits
from mixmo_tf.serving import export, graph, run_source
from mixmo_tf.training.checkpoints import restore_run

DIGITS = DATASETS["digits"]
MAIN = os.path.join(REPO, "main.py")
SAVED_MODEL_CLI = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
OUTPUTS = {
    # name: (dtype, shape) as saved_model_cli prints them, for M=2 members and 10 classes.
    "probabilities": ("DT_FLOAT", "(-1, 10)"),
    "member_probabilities": ("DT_FLOAT", "(-1, 2, 10)"),
    "classes": ("DT_INT64", "(-1, 5)"),
    "scores": ("DT_FLOAT", "(-1, 5)"),
    "class_names": ("DT_STRING", "(-1, 5)"),
    "entropy": ("DT_FLOAT", "(-1)"),
    "mutual_information": ("DT_FLOAT", "(-1)"),
    "disagreement": ("DT_FLOAT", "(-1)"),
}
INPUTS = {
    "serving_default": ("images", "DT_UINT8", "(-1, 32, 32, 3)"),
    "predict_image_bytes": ("image_bytes", "DT_STRING", "(-1)"),
    "predict_normalized": ("images", "DT_FLOAT", "(-1, 32, 32, 3)"),
}


@pytest.fixture(scope="module")
def run(trained_tiny_run):
    """The trained tiny run and its first export: (config, model, version folder)."""
    config, model = trained_tiny_run
    return config, model, export.export_run(config.model_dir)


@pytest.fixture(scope="module")
def loaded(run):
    return tf.saved_model.load(run[2])


@pytest.fixture(scope="module")
def test_images():
    images, _ = load_split(DIGITS, "test")
    return images[:16]


def predicted_probabilities(model, images: np.ndarray) -> np.ndarray:
    return model.predict(normalize(images, DIGITS).numpy(), verbose=0)["ensemble"]


def png(image: np.ndarray) -> bytes:
    return tf.io.encode_png(image).numpy()


# ---- layout and tools -----------------------------------------------------------------------


def test_export_writes_tf_servings_versioned_layout(run):
    config, _, path = run
    assert path == os.path.join(config.model_dir, "export", "1")
    assert os.listdir(os.path.dirname(path)) == ["1"]  # no temporary folder left behind
    for name in ("saved_model.pb", "variables/variables.index", "assets/class_names.txt"):
        assert os.path.exists(os.path.join(path, name)), name
    with open(os.path.join(path, "assets", "class_names.txt")) as stream:
        assert stream.read().splitlines() == [str(digit) for digit in range(10)]
    with open(os.path.join(path, "assets", "export_info.json")) as stream:
        info = json.load(stream)
    assert info["temperature"] is None and info["num_members"] == 2
    assert info["checkpoint"] == "ckpt-3" and info["dataset"]["mean"] == [0.5, 0.5, 0.5]


def _signature_blocks(text: str) -> dict[str, str]:
    parts = re.split(r"signature_def\['([^']+)'\]:", text)
    return dict(zip(parts[1::2], parts[2::2]))


@pytest.mark.slow
def test_saved_model_cli_show_lists_the_documented_signatures(run):
    shown = subprocess.run(
        [SAVED_MODEL_CLI, "show", "--all", "--dir", run[2]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    blocks = _signature_blocks(shown)
    assert set(INPUTS) <= set(blocks)
    for signature, (name, dtype, shape) in INPUTS.items():
        block = blocks[signature]
        assert re.search(rf"inputs\['{name}'\] tensor_info:\s+dtype: {dtype}\s+shape: ", block)
        assert f"shape: {shape}\n" in block.split("outputs[")[0]
        for output, (out_dtype, out_shape) in OUTPUTS.items():
            match = re.search(
                rf"outputs\['{output}'\] tensor_info:\s+dtype: (\S+)\s+shape: (\S+(?: \S+)*)\n",
                block,
            )
            assert match and match.groups() == (out_dtype, out_shape), (signature, output)


@pytest.mark.slow
def test_saved_model_cli_run_gives_the_models_probabilities(run, test_images, tmp_path):
    _, model, path = run
    np.save(tmp_path / "images.npy", test_images)
    subprocess.run(
        [
            SAVED_MODEL_CLI,
            "run",
            "--dir",
            path,
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--inputs",
            f"images={tmp_path / 'images.npy'}",
            "--outdir",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        check=True,
    )
    served = np.load(tmp_path / "out" / "probabilities.npy")
    np.testing.assert_allclose(served, predicted_probabilities(model, test_images), atol=1e-5)


_FRESH_PROCESS = """
import sys
sys.modules["mixmo_tf"] = None  # as on a server: the package cannot be imported
try:
    import mixmo_tf
except ImportError:
    pass
else:
    raise SystemExit("mixmo_tf was importable")
import numpy as np
import tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
images = np.load(sys.argv[2])
for size in (1, 7, 256):
    np.save(f"{sys.argv[3]}/{size}.npy", serve(images=tf.constant(images[:size]))["probabilities"])
"""


@pytest.mark.slow
def test_a_process_without_mixmo_tf_serves_batches_of_1_7_and_256(run, tmp_path):
    _, model, path = run
    images = np.random.default_rng(0).integers(0, 256, (256, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    # -I: no PYTHONPATH, no script or working directory on sys.path.
    subprocess.run(
        [sys.executable, "-I", "-c", _FRESH_PROCESS, path, tmp_path / "images.npy", tmp_path],
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", ""), "TF_CPP_MIN_LOG_LEVEL": "2"},
        check=True,
        capture_output=True,
    )
    expected = predicted_probabilities(model, images)
    for size in (1, 7, 256):
        served = np.load(tmp_path / f"{size}.npy")
        assert served.shape == (size, 10)
        np.testing.assert_allclose(served, expected[:size], atol=1e-5)


def graph_op_types(path: str) -> set[str]:
    """Op types of a SavedModel's graph and of every function in its library."""
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as stream:
        saved.ParseFromString(stream.read())
    graph = saved.meta_graphs[0].graph_def
    types = {node.op for node in graph.node}
    for function in graph.library.function:
        types |= {node.op for node in function.node_def}
    return types


def test_the_graph_holds_only_core_tensorflow_ops(run):
    types = graph_op_types(run[2])
    assert not types & {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
    core = set(dir(tf.raw_ops))  # custom op libraries register ops outside this set
    assert types <= core, types - core
    # The fused batch norm and the oneDNN-backed convolutions stay in the served graph.
    assert {"FusedBatchNormV3", "Conv2D", "DecodeImage", "Assert"} <= types


# ---- outputs --------------------------------------------------------------------------------


def _entropy(p: np.ndarray) -> np.ndarray:
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), axis=-1)


def test_uncertainty_outputs_equal_hand_computations(loaded, test_images):
    out = {
        name: value.numpy()
        for name, value in loaded.signatures["serving_default"](
            images=tf.constant(test_images)
        ).items()
    }
    members = out["member_probabilities"].astype(np.float64)
    # log p_m = logits_m - logsumexp_m: the mean over members is the mean logit up to a
    # per-image shift, which the softmax ignores.
    mean_log = np.log(members).mean(axis=1)
    ensemble = np.exp(mean_log - mean_log.max(-1, keepdims=True))
    ensemble /= ensemble.sum(-1, keepdims=True)
    np.testing.assert_allclose(out["probabilities"], ensemble, atol=1e-5)
    np.testing.assert_allclose(out["entropy"], _entropy(ensemble), atol=1e-5)
    mutual_information = _entropy(members.mean(axis=1)) - _entropy(members).mean(axis=1)
    np.testing.assert_allclose(out["mutual_information"], mutual_information, atol=1e-5)
    assert (out["mutual_information"] >= -1e-6).all()
    top = ensemble.argmax(-1)
    disagreement = (members.argmax(-1) != top[:, None]).mean(axis=1)
    np.testing.assert_array_equal(out["disagreement"], disagreement)
    order = np.argsort(-ensemble, axis=-1)[:, :5]
    np.testing.assert_array_equal(out["classes"], order)
    np.testing.assert_allclose(out["scores"], np.take_along_axis(ensemble, order, -1), atol=1e-6)
    names = np.array([name.encode() for name in class_names(DIGITS)])
    np.testing.assert_array_equal(out["class_names"], names[order])


def test_image_bytes_signature_answers_as_the_uint8_one_for_png_files(loaded, test_images):
    from_pixels = loaded.signatures["serving_default"](images=tf.constant(test_images))
    from_png = loaded.signatures["predict_image_bytes"](
        image_bytes=tf.constant([png(image) for image in test_images])
    )
    for name in OUTPUTS:
        np.testing.assert_array_equal(from_png[name].numpy(), from_pixels[name].numpy())
    # Files of another size and encoding are decoded and resized in the graph.
    photo = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    jpeg = tf.io.encode_jpeg(photo).numpy()
    resized = loaded.signatures["predict_image_bytes"](image_bytes=tf.constant([jpeg, png(photo)]))
    assert resized["probabilities"].shape == (2, 10)
    np.testing.assert_allclose(resized["probabilities"].numpy().sum(-1), 1.0, atol=1e-6)


def test_jpeg_files_are_served_with_the_pixels_pil_decodes(loaded, test_images):
    """A client that decodes with PIL and sends pixels gets what sending the file gets."""
    files = [encoded(image, "JPEG", quality=90) for image in test_images[:4]]
    pixels = [pil_pixels(data) for data in files]
    from_files = loaded.signatures["predict_image_bytes"](image_bytes=tf.constant(files))
    from_pixels = loaded.signatures["serving_default"](images=tf.constant(np.stack(pixels)))
    for name in OUTPUTS:
        np.testing.assert_array_equal(from_files[name].numpy(), from_pixels[name].numpy())


def test_normalized_signature_answers_as_the_uint8_one(loaded, test_images):
    from_pixels = loaded.signatures["serving_default"](images=tf.constant(test_images))
    normalized = loaded.signatures["predict_normalized"](images=normalize(test_images, DIGITS))
    np.testing.assert_allclose(
        normalized["probabilities"].numpy(), from_pixels["probabilities"].numpy(), atol=1e-6
    )


BAD_SHAPE = r"Input images must be uint8 of shape \(batch >= 1, 32, 32, 3\); received shape\] "


@pytest.mark.parametrize(
    "signature, value, message",
    [
        (
            "serving_default",
            np.zeros((2, 64, 64, 3), np.uint8),
            BAD_SHAPE + r"\[2 64 64 3\]",
        ),
        (
            "serving_default",
            np.zeros((2, 32, 32), np.uint8),
            BAD_SHAPE + r"\[2 32 32\]",
        ),
        ("serving_default", np.zeros((2, 32, 32, 3), np.float32), r"uint8"),
        ("serving_default", np.zeros((0, 32, 32, 3), np.uint8), BAD_SHAPE + r"\[0 32 32 3\]"),
        ("predict_image_bytes", np.array([b"not an image"]), r"must hold JPEG or PNG files"),
        (
            "predict_normalized",
            np.stack([np.zeros((32, 32, 3)), np.full((32, 32, 3), np.nan)]).astype(np.float32),
            r"Input images must be finite; NaN or Inf values in images\] \[1\]",
        ),
        (
            "predict_normalized",
            np.where(np.arange(3 * 32 * 32 * 3).reshape(3, 32, 32, 3) == 5, np.inf, 0.0).astype(
                np.float32
            ),
            r"must be finite; NaN or Inf values in images\] \[0\]",
        ),
    ],
    ids=[
        "wrong size",
        "wrong rank",
        "wrong dtype",
        "empty batch",
        "not an image",
        "NaN image",
        "Inf pixel",
    ],
)
def test_bad_serving_input_gets_a_clear_error(loaded, signature, value, message):
    function = loaded.signatures[signature]
    (name,) = function.structured_input_signature[1]
    with pytest.raises((tf.errors.InvalidArgumentError, TypeError, ValueError), match=message):
        function(**{name: tf.constant(value)})


def test_truncated_png_bytes_get_the_decoders_error(loaded, test_images):
    truncated = png(test_images[0])[:60]
    with pytest.raises(tf.errors.InvalidArgumentError, match="(?i)png"):
        loaded.signatures["predict_image_bytes"](image_bytes=tf.constant([truncated]))


def test_shape_checks_run_when_a_server_feeds_any_tensor(run):
    """TF Serving feeds the request's tensor without checking it against the signature.

    Loading the graph with its input placeholder mapped to one of unknown shape feeds it the
    same way; the graph's own check must then stop a wrong-size batch rather than let the
    network pool over it.
    """
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        any_shape = tf.compat.v1.placeholder(tf.uint8, shape=None)
        meta_graph = tf.compat.v1.saved_model.load(
            session, ["serve"], run[2], input_map={"serving_default_images:0": any_shape}
        )
        outputs = meta_graph.signature_def["serving_default"].outputs
        fetch = graph.get_tensor_by_name(outputs["probabilities"].name)
        good = session.run(fetch, {any_shape: np.zeros((3, 32, 32, 3), np.uint8)})
        assert good.shape == (3, 10)
        with pytest.raises(tf.errors.InvalidArgumentError, match="received shape.*3 40 40 3"):
            session.run(fetch, {any_shape: np.zeros((3, 40, 40, 3), np.uint8)})


# ---- temperature and versions ---------------------------------------------------------------


def test_a_fitted_temperature_is_applied_recorded_and_overridable(run, loaded, test_images):
    config, _, first = run
    with open(os.path.join(config.model_dir, run_folder.TEMPERATURE), "w") as stream:
        json.dump({"temperature": 2.5}, stream)
    try:
        second = export.export_run(config.model_dir)
    finally:
        os.remove(os.path.join(config.model_dir, run_folder.TEMPERATURE))
    assert second == os.path.join(os.path.dirname(first), "2")
    assert sorted(os.listdir(os.path.dirname(first))) == ["1", "2"]
    with open(os.path.join(second, "assets", export.EXPORT_INFO_ASSET)) as stream:
        assert json.load(stream)["temperature"] == 2.5
    unscaled = loaded.signatures["serving_default"](images=tf.constant(test_images))
    scaled = tf.saved_model.load(second).signatures["serving_default"](
        images=tf.constant(test_images)
    )
    mean_log = np.log(unscaled["member_probabilities"].numpy().astype(np.float64)).mean(axis=1)
    expected = tf.nn.softmax(mean_log / 2.5).numpy()
    np.testing.assert_allclose(scaled["probabilities"].numpy(), expected, atol=1e-5)
    assert run_source.run_temperature(config.model_dir, 0.7) == 0.7
    assert run_source.run_temperature(config.model_dir) is None


@pytest.mark.parametrize("content", ['{"temperature": -1}', '{"t": 1.5}', "not json"])
def test_an_invalid_temperature_file_is_refused(tmp_path, content):
    (tmp_path / run_folder.TEMPERATURE).write_text(content)
    with pytest.raises(ValueError, match="temperature"):
        run_source.read_temperature(str(tmp_path))


def test_an_export_takes_the_next_free_version_and_never_replaces_one(run, tmp_path, monkeypatch):
    _, model, _ = run
    base = tmp_path / "models"
    (base / "7").mkdir(parents=True)
    (base / "7" / "keep").write_text("an older version")
    (base / "notes").mkdir()
    for number in ("6", "8"):
        (base / number).mkdir()
        (base / number / "keep").write_text("taken meanwhile")
    # A listing made before another export took 6 to 8: the rename tries them, moves on.
    monkeypatch.setattr(export, "_versions", lambda directory: [5])
    path = export.export_saved_model(model, str(base), DIGITS)
    assert path == str(base / "9")
    assert (base / "7" / "keep").read_text() == "an older version"
    assert sorted(os.listdir(base)) == ["6", "7", "8", "9", "notes"]


def test_a_failed_export_leaves_no_version_behind(run, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        export.export_saved_model(run[1], str(tmp_path / "models"), DIGITS)
    assert os.listdir(tmp_path / "models") == []


# ---- errors ---------------------------------------------------------------------------------


def test_export_without_checkpoint_or_into_an_unwritable_place_fails_clearly(run, tmp_path):
    with pytest.raises(FileNotFoundError, match="run_config.json does not exist"):
        export.export_run(str(tmp_path / "nothing"))
    untrained = tiny_run_config(tmp_path / "untrained")
    run_record.record_run_config(untrained)
    with pytest.raises(FileNotFoundError, match="No checkpoint in"):
        export.export_run(untrained.model_dir)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(OSError):
        export.export_run(run[0].model_dir, str(blocker / "export"))


def test_class_names_of_each_dataset():
    assert class_names(DATASETS["cifar100"])[47] == "maple_tree"
    assert len(set(class_names(DATASETS["cifar100"]))) == 100
    assert class_names(DATASETS["cifar10"])[:3] == ("airplane", "automobile", "bird")
    assert class_names(DIGITS) == tuple("0123456789")


def test_serving_module_refuses_bad_settings(run):
    model = run[1]
    with pytest.raises(ValueError, match="temperature must be > 0"):
        graph.ServingModule(model, DIGITS, class_names(DIGITS), temperature=0.0)
    with pytest.raises(ValueError, match="3 class names for a model of 10 classes"):
        graph.ServingModule(model, DIGITS, ("a", "b", "c"))


# ---- the command line: --mode=export and --mode=predict -------------------------------------


def test_export_mode_writes_a_version_with_the_given_temperature(run, tmp_path, capsys):
    assert modes.export(run[0].model_dir, str(tmp_path / "models"), 1.5) == 0
    path = str(tmp_path / "models" / "1")
    assert capsys.readouterr().out.strip() == f"Exported {run[0].model_dir} to {path}"
    with open(os.path.join(path, "assets", export.EXPORT_INFO_ASSET)) as stream:
        assert json.load(stream)["temperature"] == 1.5


def test_export_mode_into_an_unwritable_place_prints_one_error(run, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert modes.export(run[0].model_dir, str(blocker / "models"), None) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and err.startswith("ERROR: ")


@pytest.mark.slow
def test_main_export_without_checkpoint_exits_2_with_one_error_line(tmp_path):
    untrained = tiny_run_config(tmp_path / "untrained")
    run_record.record_run_config(untrained)
    result = subprocess.run(
        [sys.executable, MAIN, "--mode=export", f"--model_dir={untrained.model_dir}"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "No checkpoint in" in errors[0], result.stderr
    assert not os.path.exists(os.path.join(untrained.model_dir, "export"))


def _image_folder(path, digits: np.ndarray) -> None:
    """Two digit PNGs, a larger JPEG photo, a truncated PNG, a text file and two binary files
    whose first bytes are not UTF-8 (a NumPy array, a WEBP header)."""
    path.mkdir()
    (path / "a_digit.png").write_bytes(png(digits[0]))
    photo = np.random.default_rng(2).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    (path / "b_photo.jpg").write_bytes(tf.io.encode_jpeg(photo).numpy())
    (path / "c_truncated.png").write_bytes(png(digits[1])[:50])
    (path / "d_notes.txt").write_text("not an image")
    (path / "d_scan.webp").write_bytes(b"RIFF\xa4\x8f\x00\x00WEBPVP8 " + bytes(64))
    np.save(path / "d_values.npy", digits[3])
    (path / "e_digit.png").write_bytes(png(digits[2]))


def test_predict_mode_predicts_good_files_and_lists_bad_ones(run, loaded, test_images, tmp_path):
    _image_folder(tmp_path / "photos", test_images)
    out, err = tmp_path / "out.jsonl", tmp_path / "err.txt"
    with open(err, "w") as errors, contextlib.redirect_stderr(errors):
        code = modes.predict(str(tmp_path / "photos"), "", run[2], str(out), temperature=None)
    assert code == 1  # some files failed
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [os.path.basename(r["path"]) for r in records] == [
        "a_digit.png",
        "b_photo.jpg",
        "e_digit.png",
    ]
    expected = loaded.signatures["serving_default"](images=tf.constant(test_images[[0, 2]]))
    for record, probabilities, members in zip(
        [records[0], records[2]],
        expected["probabilities"].numpy(),
        expected["member_probabilities"].numpy(),
    ):
        assert record["class"] == str(probabilities.argmax())
        assert record["confidence"] == pytest.approx(probabilities.max(), abs=1e-6)
        assert record["member_classes"] == [str(c) for c in members.argmax(-1)]
        assert {"entropy", "mutual_information", "disagreement"} <= record.keys()
    error_lines = err.read_text().splitlines()
    assert error_lines[0].startswith("ERROR: ") and "c_truncated.png" in error_lines[0]
    assert "d_notes.txt" in error_lines[1] and "must hold JPEG or PNG files" in error_lines[1]
    # Binary first bytes: the message shows them as text, with replacement characters.
    for line, name in zip(error_lines[2:4], ("d_scan.webp", "d_values.npy")):
        assert line.startswith(f"ERROR: {tmp_path / 'photos' / name}: ")
        assert "must hold JPEG or PNG files" in line and "\ufffd" in line
    assert error_lines[4] == "Predicted 3 of 7 files; 4 failed."


def test_the_next_export_removes_what_a_killed_export_left(run, tmp_path, capsys):
    directory = tmp_path / "models"
    dead = directory / f".incomplete-{_ended_pid()}-k1ll3d"
    alive = directory / f".incomplete-{os.getpid()}-running"
    older = directory / ".incomplete-x7q2"
    for folder in (dead, alive, older):
        (folder / "saved_model" / "variables").mkdir(parents=True)
    path = export.export_run(run[0].model_dir, str(directory))
    out, err = capsys.readouterr()
    assert out == ""  # notes go to stderr: stdout carries only results
    assert not dead.exists() and f"Removed {dead}: an export that was stopped" in err
    assert alive.exists() and str(alive) not in err  # another export may be writing it
    assert older.exists() and f"Note: {older} is an unfinished export" in err
    assert sorted(os.listdir(directory)) == sorted([alive.name, older.name, "1"])
    assert path == str(directory / "1")


def test_an_export_that_does_not_fit_leaves_nothing_and_says_why(run, tmp_path, capsys):
    directory = tmp_path / "models"
    limit = 20_000  # below the variables' file of the SavedModel
    with disk_limits.file_size_limit(limit):
        code = modes.export(run[0].model_dir, str(directory), None)
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ERROR: {directory}{os.sep}.incomplete-{os.getpid()}-")
    assert err.endswith(
        f" cannot be used (File too large: this process may write files of at most "
        f"{run_folder.megabytes(limit)} (ulimit -f)). Raise the file size limit (ulimit -f) "
        "or write elsewhere, then rerun.\n"
    )
    assert err.count("\n") == 1 and os.listdir(directory) == []


def _ended_pid() -> int:
    """The id of a process that has ended (and was reaped)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_images_names_an_existing_file_literally_before_it_is_a_pattern(tmp_path):
    from mixmo_tf.serving.predict import image_paths

    for name in ("scan[1].png", "scan1.png", "scan2.png"):
        (tmp_path / name).write_bytes(b"")
    assert image_paths(str(tmp_path / "scan[1].png")) == [str(tmp_path / "scan[1].png")]
    assert image_paths(str(tmp_path / "scan[12].png")) == [
        str(tmp_path / "scan1.png"),
        str(tmp_path / "scan2.png"),
    ]
    assert image_paths(str(tmp_path)) == sorted(str(path) for path in tmp_path.iterdir())
    assert image_paths(str(tmp_path / "missing*.png")) == []


def test_graphs_exported_before_readable_messages_still_report_binary_files(loaded, tmp_path):
    """Older exports put a file's raw first bytes in their error; TensorFlow then fails to
    format the message (UnicodeDecodeError): that file gets an error line, the others a
    prediction."""
    from mixmo_tf.serving import predict

    real = loaded.signatures["predict_image_bytes"]

    def older_export(image_bytes):
        if any(content.startswith(b"\x93NUMPY") for content in image_bytes.numpy()):
            raise UnicodeDecodeError("utf-8", b"\x93", 0, 1, "invalid start byte")
        return real(image_bytes=image_bytes)

    good, binary = tmp_path / "good.png", tmp_path / "values.npy"
    good.write_bytes(png(np.zeros((32, 32, 3), np.uint8)))
    np.save(binary, np.zeros(3))
    predictor = predict.Predictor(older_export, class_names(DIGITS), "older export")
    records = list(predict.predict_files(predictor, [str(binary), str(good)]))
    assert records[0] == {
        "path": str(binary),
        "error": "not a JPEG or PNG file (its first bytes are binary, not an image signature)",
    }
    assert records[1]["path"] == str(good) and "class" in records[1]


def test_predict_mode_from_a_run_writes_csv_and_matches_the_export(
    run, loaded, test_images, tmp_path, capsys
):
    folder = tmp_path / "digits"
    folder.mkdir()
    for index in range(3):
        (folder / f"{index}.png").write_bytes(png(test_images[index]))
    (folder / "3.png").write_bytes(png(test_images[3])[:50])
    output = tmp_path / "predictions.csv"
    code = modes.predict(str(folder / "*.png"), run[0].model_dir, None, str(output), None)
    assert code == 1
    # The graph built in memory reports a corrupt file as the export does.
    errors = capsys.readouterr().err.splitlines()
    assert errors == [
        f"ERROR: {folder / '3.png'}: Invalid PNG data, size 50",
        "Predicted 3 of 4 files; 1 failed.",
    ]
    with open(output, newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert list(rows[0]) == [
        "path",
        "class",
        "confidence",
        "entropy",
        "mutual_information",
        "disagreement",
        "member_0_class",
        "member_1_class",
    ]
    expected = loaded.signatures["serving_default"](images=tf.constant(test_images[:3]))
    np.testing.assert_allclose(
        [float(row["confidence"]) for row in rows],
        expected["scores"].numpy()[:, 0],
        atol=1e-6,
    )
    np.testing.assert_allclose(
        [float(row["mutual_information"]) for row in rows],
        expected["mutual_information"].numpy(),
        atol=1e-6,
    )


def test_predict_mode_refuses_a_damaged_export_in_one_line(run, tmp_path, capsys):
    import shutil

    image = tmp_path / "digit.png"
    image.write_bytes(png(np.zeros((32, 32, 3), np.uint8)))
    edited, damaged = tmp_path / "edited", tmp_path / "damaged"
    for copy in (edited, damaged):
        shutil.copytree(run[2], copy)
    names = edited / "assets" / export.CLASS_NAMES_ASSET
    names.write_text("zero\none\ntwo\n")
    (damaged / "saved_model.pb").write_bytes(b"not a protocol buffer")
    for folder, message in (
        (edited, f"ERROR: {names} has 3 lines but the model has 10 classes: restore the file"),
        (damaged, f"ERROR: {damaged} holds a SavedModel that does not load (Cannot parse"),
    ):
        assert modes.predict(str(image), "", str(folder), None, None) == 2
        out, err = capsys.readouterr()
        assert out == "" and len(err.splitlines()) == 1 and err.startswith(message), err


def test_predict_mode_without_matching_files_or_model_fails_clearly(run, tmp_path, capsys):
    assert modes.predict(str(tmp_path / "*.jpg"), run[0].model_dir, None, None, None) == 2
    assert "matches no file" in capsys.readouterr().err
    (tmp_path / "x.png").write_bytes(b"")
    assert modes.predict(str(tmp_path / "x.png"), "", str(tmp_path), None, None) == 2
    assert "is not a version folder written by --mode=export" in capsys.readouterr().err


@pytest.mark.parametrize(
    "mode, model_dir, images, saved_model, temperature, message",
    [
        ("export", "", None, None, None, "--mode=export needs --model_dir"),
        ("predict", "run", None, None, None, "--mode=predict needs --images"),
        ("predict", "", "*.jpg", None, None, "exactly one of --model_dir"),
        ("predict", "run", "*.jpg", "run/export/1", None, "exactly one of --model_dir"),
        ("predict", "", "*.jpg", "run/export/1", 2.0, "--temperature applies to --model_dir"),
    ],
)
def test_serving_modes_name_the_missing_flag(
    mode, model_dir, images, saved_model, temperature, message
):
    with pytest.raises(ValueError, match=message):
        modes.check_serving_flags(mode, model_dir, images, saved_model, temperature)


def test_serving_flags_parse_next_to_the_config_flags():
    values = flags.FlagValues()
    mixmo_flags.define_flags(values)
    values(["main.py", "--mode=predict", "--images=photos/*.jpg", "--saved_model=e/1"])
    assert (values.mode, values.images, values.saved_model) == ("predict", "photos/*.jpg", "e/1")
    assert values.export_dir is None and values.temperature is None and values.output is None
    values(["main.py", "--mode=export", "--export_dir=/srv/models/mixmo", "--temperature=1.7"])
    assert (values.export_dir, values.temperature) == ("/srv/models/mixmo", 1.7)


# ---- nothing written over an input; outputs that are always JSON ----------------------------


def _one_error(capsys, message: str) -> None:
    """The command printed nothing on stdout and one ERROR line starting with `message`."""
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err
    assert err.startswith(f"ERROR: {message}"), err


def test_predict_refuses_an_output_that_is_one_of_its_images(run, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    image = folder / "a.png"
    image.write_bytes(png(np.zeros((32, 32, 3), np.uint8)))
    original = image.read_bytes()
    (tmp_path / "link.png").symlink_to(image)
    for images, output in (
        (image, image),  # the file itself
        (folder / "*.png", image),  # matched by the pattern
        (folder, tmp_path / "link.png"),  # the same file by another name
    ):
        assert modes.predict(str(images), "", run[2], str(output), None) == 2
        _one_error(capsys, f"--output={output} is one of the --images files ({image})")
        assert image.read_bytes() == original
    assert sorted(os.listdir(folder)) == ["a.png"]  # no temporary file left either


@pytest.mark.parametrize("where", ["saved_model", "model_dir"])
def test_predict_refuses_an_output_in_the_models_folder(run, tmp_path, capsys, where):
    image = tmp_path / "a.png"
    image.write_bytes(png(np.zeros((32, 32, 3), np.uint8)))
    config, _, version = run
    folder = version if where == "saved_model" else config.model_dir
    output = os.path.join(folder, "saved_model.pb" if where == "saved_model" else "run_config.json")
    before = open(output, "rb").read()
    model_flags = ("", version) if where == "saved_model" else (config.model_dir, None)
    assert modes.predict(str(image), *model_flags, output, None) == 2
    _one_error(capsys, f"--output={output} lies inside {folder}, the model's folder")
    assert open(output, "rb").read() == before


def test_predict_refuses_an_output_that_is_a_folder(run, tmp_path, capsys):
    image = tmp_path / "a.png"
    image.write_bytes(png(np.zeros((32, 32, 3), np.uint8)))
    assert modes.predict(str(image), "", run[2], str(tmp_path), None) == 2
    _one_error(capsys, f"--output={tmp_path} is a folder: name the file to write.")


@pytest.mark.parametrize("name", ["predictions.jsonl", "predictions.csv"])
def test_an_earlier_output_among_the_images_is_not_predicted_again(run, tmp_path, capsys, name):
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(2):
        (folder / f"{index}.png").write_bytes(png(np.full((32, 32, 3), index, np.uint8)))
    output = folder / name
    for pattern in (folder, folder / "*"):
        assert modes.predict(str(pattern), "", run[2], str(output), None) == 0
        assert capsys.readouterr().err.splitlines() == ["Predicted 2 of 2 files; 0 failed."]
        assert output.read_text().count(str(folder / "0.png")) == 1
    assert sorted(os.listdir(folder)) == ["0.png", "1.png", name]
    # A broken link among the images is still one file that failed, not a refusal.
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")
    assert modes.predict(str(folder), "", run[2], str(output), None) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"ERROR: {folder / 'gone.png'}: No such file or directory",
        "Predicted 2 of 3 files; 1 failed.",
    ]


@pytest.fixture(scope="module")
def broken_export(tmp_path_factory):
    """A SavedModel of a tiny network whose weights are all NaN."""
    from helpers.models import tiny_mixmo_model

    model = tiny_mixmo_model()
    for variable in model.weights:
        variable.assign(np.full(variable.shape, np.nan, variable.dtype))
    return export.export_saved_model(model, str(tmp_path_factory.mktemp("broken")), DIGITS)


@pytest.mark.parametrize("output", [None, "predictions.jsonl", "predictions.csv"])
def test_a_model_with_nan_outputs_gives_one_error_and_writes_nothing(
    broken_export, tmp_path, capsys, output
):
    image = tmp_path / "a.png"
    image.write_bytes(png(np.zeros((32, 32, 3), np.uint8)))
    if output:
        output = tmp_path / output
        output.write_text("the predictions of an earlier run\n")
    assert modes.predict(str(image), "", broken_export, output and str(output), None) == 2
    _one_error(
        capsys,
        f"{broken_export} gives NaN or Inf probabilities (for {image}): its weights are broken.",
    )
    if output:
        assert output.read_text() == "the predictions of an earlier run\n"
        assert sorted(os.listdir(tmp_path)) == ["a.png", output.name]


def test_any_non_finite_output_names_the_model_and_the_file(loaded, tmp_path):
    from mixmo_tf.serving import predict

    real = loaded.signatures["predict_image_bytes"]

    def overflowing(image_bytes):  # finite probabilities, an Inf entropy for the second file
        outputs = dict(real(image_bytes=image_bytes))
        outputs["entropy"] = tf.tensor_scatter_nd_update(outputs["entropy"], [[1]], [np.inf])
        return outputs

    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for path in paths:
        path.write_bytes(png(np.zeros((32, 32, 3), np.uint8)))
    predictor = predict.Predictor(overflowing, class_names(DIGITS), "EXPORT")
    with pytest.raises(
        predict.BrokenModelError, match=f"^EXPORT gives NaN or Inf .*for {paths[1]}"
    ):
        list(predict.predict_files(predictor, map(str, paths)))


def test_a_failed_prediction_leaves_the_earlier_output_as_it_was(run, tmp_path, monkeypatch):
    from mixmo_tf.serving import predict

    image = tmp_path / "a.png"
    image.write_bytes(png(np.zeros((32, 32, 3), np.uint8)))
    output = tmp_path / "predictions.jsonl"
    output.write_text("kept\n")

    predict_files = predict.predict_files

    def stopped(predictor, paths):
        yield from predict_files(predictor, paths)
        raise KeyboardInterrupt  # Ctrl-C after the first prediction was written

    monkeypatch.setattr(predict, "predict_files", stopped)
    with pytest.raises(KeyboardInterrupt):
        modes.predict(str(image), "", run[2], str(output), None)
    assert output.read_text() == "kept\n"
    assert sorted(os.listdir(tmp_path)) == ["a.png", "predictions.jsonl"]


@pytest.mark.parametrize(
    "value, shown", [(300.0, "300.0"), (12.5, "12.5"), (-1, "-1"), (np.nan, "nan")]
)
def test_uint8_images_refuses_what_a_cast_would_change(value, shown):
    pixels = np.zeros((1, 32, 32, 3), np.asarray(value).dtype)
    pixels[0, 1, 2, 0] = value  # TensorFlow's own conversion would serve 300.0 as 44
    with pytest.raises(ValueError) as caught:
        graph.uint8_images(pixels)
    assert str(caught.value) == (
        "images must be uint8 pixels (whole numbers 0..255); 1 of 3072 values are not, the "
        f"first {shown} at index (0, 1, 2, 0)."
    )
    with pytest.raises(ValueError, match="Received: dtype=<U1"):
        graph.uint8_images(np.full((1, 32, 32, 3), "1"))


def test_uint8_images_keeps_whole_numbers_and_serves_them_as_uint8(loaded, test_images):
    serve = loaded.signatures["serving_default"]
    as_floats = graph.uint8_images(test_images.astype(np.float64))
    assert as_floats.dtype == tf.uint8
    np.testing.assert_array_equal(as_floats.numpy(), test_images)
    np.testing.assert_array_equal(
        serve(images=as_floats)["probabilities"].numpy(),
        serve(images=tf.constant(test_images))["probabilities"].numpy(),
    )


def test_export_refuses_an_export_dir_among_the_runs_own_files(run, capsys):
    model_dir = run[0].model_dir
    folder = run_folder.RunFolder(model_dir)
    for export_dir in (model_dir, folder.checkpoints, os.path.join(folder.logs, "models")):
        before = sorted(os.listdir(model_dir))
        assert modes.export(model_dir, export_dir, None) == 2
        _one_error(capsys, f"--export_dir={export_dir} is {model_dir} or lies in its checkpoints")
        assert sorted(os.listdir(model_dir)) == before
        assert not os.path.exists(os.path.join(export_dir, "1"))


# ---- one definition of uncertainty ------------------------------------------------------------


def test_served_uncertainty_equals_the_evaluated_one(run, loaded, test_images):
    """The evaluation's OOD scores and the SavedModel's outputs are the same numbers."""
    config = run[0]
    restored = restore_run(config)
    labels = np.zeros(len(test_images), np.int64)
    member_logits, _ = predict_logits(restored.model, test_images, labels, DIGITS, 8)
    scores = ood.confidence_scores(member_logits, member_logits.mean(axis=1))
    served = loaded.signatures["serving_default"](images=tf.constant(test_images))
    np.testing.assert_allclose(-scores["entropy"], served["entropy"].numpy(), rtol=0, atol=2e-6)
    np.testing.assert_allclose(
        -scores["mutual_information"], served["mutual_information"].numpy(), rtol=0, atol=2e-6
    )
    np.testing.assert_allclose(
        scores["max_probability"], served["scores"].numpy()[:, 0], rtol=0, atol=2e-6
    )
    # Mutual information is the served decomposition (>= 0), not entropy of softmax(mean logits).
    assert np.all(served["mutual_information"].numpy() >= -1e-6)
