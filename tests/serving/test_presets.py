"""Presets: a run written as config.json + model.weights.h5 + metadata.json, and `from_preset`
of a preset folder, a run folder or a released row's name.

The tiny digits run (WRN-10-1, M=2, 3 steps) is copied, exported as a preset from the copy,
and the copy deleted: every test below then reads a preset that has no run folder behind it.
A released row's download (`downloads.fetch_checkpoint`) is replaced by one that answers with
the authors' WRN-10-1 fixture file and a stand-in row; nothing touches the network.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest
from helpers.paths import AUTHORS_FIXTURES, REPO
from helpers.runs import run_main_in_process

import mixmo_tf
from mixmo_tf.cli import modes
from mixmo_tf.config.datasets import DATASETS
from mixmo_tf.config.errors import ConfigError, MissingFileError, UnusableFileError, UserError
from mixmo_tf.data import load_split, normalize
from mixmo_tf.importing import downloads, presets, released
from mixmo_tf.importing.authors_checkpoint import file_sha256, read_authors_checkpoint
from mixmo_tf.importing.pytorch_import import load_pytorch_checkpoint
from mixmo_tf.serving.presets import load_preset
from mixmo_tf.serving.run_presets import export_run_preset, run_preset
from mixmo_tf.training.checkpoints import restore_run

DIGITS = DATASETS["digits"]
AUTHORS_FILE = os.path.join(AUTHORS_FIXTURES, "wrn10-1_m2_zip.pt")
# A released row, whose download answers here with the WRN-10-1 fixture and a stand-in row.
ROW = "cifar10_wrn28-10_cut_mixmo"
URL = "https://drive.google.com/file/d/stand-in/view"


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """16 normalised digits test images."""
    return normalize(load_split(DIGITS, "test")[0][:16], DIGITS).numpy()


@pytest.fixture(scope="module")
def run_probabilities(trained_tiny_run, images) -> np.ndarray:
    """The run's ensemble probabilities at its newest checkpoint (what its export serves)."""
    config, _ = trained_tiny_run
    return restore_run(config, precision="float32").model.predict(images, verbose=0)["ensemble"]


@pytest.fixture(scope="module")
def preset(trained_tiny_run, tmp_path_factory) -> str:
    """The tiny run exported as a preset from a copy of its folder that is then deleted."""
    config, _ = trained_tiny_run
    root = tmp_path_factory.mktemp("preset")
    copy = root / "run"
    shutil.copytree(config.model_dir, copy)
    path = export_run_preset(str(copy), str(root / "digits_preset"))
    shutil.rmtree(copy)
    return path


def copy_of(preset: str, tmp_path) -> str:
    """A copy of the preset folder, to damage."""
    return shutil.copytree(preset, tmp_path / "copy")


# ---- the layout and what it records ----------------------------------------------------------


def test_a_preset_holds_keras_config_weights_and_metadata(preset):
    assert sorted(os.listdir(preset)) == sorted(presets.PRESET_FILES)
    with open(os.path.join(preset, presets.CONFIG_FILE)) as stream:
        config = json.load(stream)
    assert config["registered_name"] == "mixmo_tf>MixMoModel"
    # What describes the last use, not the model, is left out (as keras-hub does).
    assert "compile_config" not in config and "build_config" not in config
    with h5py.File(os.path.join(preset, presets.WEIGHTS_FILE)) as weights:
        assert "layers" in weights  # Keras' own weights file, not a TensorFlow checkpoint


def test_metadata_names_versions_dataset_and_source(preset, trained_tiny_run):
    with open(os.path.join(preset, presets.METADATA_FILE)) as stream:
        metadata = json.load(stream)
    model = trained_tiny_run[1]
    assert metadata["format"] == "mixmo_tf.preset" and metadata["format_version"] == 1
    assert metadata["mixmo_tf_version"] == mixmo_tf.__version__
    assert metadata["keras_version"] == keras.version()
    assert metadata["saved_with_backend"] == keras.config.backend()
    assert metadata["parameter_count"] == model.count_params()
    assert (metadata["num_members"], metadata["num_classes"]) == (2, 10)
    assert metadata["dataset"] == json.loads(json.dumps(dataclasses.asdict(DIGITS)))
    assert metadata["class_names"] == [str(digit) for digit in range(10)]
    assert metadata["temperature"] is None
    # A run trained here: no released row, no authors' file; its checkpoint and step.
    assert (metadata["row"], metadata["published"], metadata["source_sha256"]) == (None,) * 3
    assert metadata["source_run"]["checkpoint"] == "ckpt-3"
    assert metadata["source_run"]["step"] == 3
    weights = os.path.join(preset, presets.WEIGHTS_FILE)
    assert metadata["weights_sha256"] == file_sha256(weights)


# ---- loading ---------------------------------------------------------------------------------

_FRESH_PROCESS = """
import sys
import keras
import numpy as np
import mixmo_tf
preset = mixmo_tf.load_preset(sys.argv[1])
probabilities = preset.model.predict(np.load(sys.argv[2]), verbose=0)["ensemble"]
weights = [np.asarray(weight) for weight in preset.model.get_weights()]
np.savez(sys.argv[3], probabilities, *weights)
print(keras.config.backend(), preset.spec.name, " ".join(preset.class_names))
"""
# Across backends the same weights give probabilities that differ in the last float32 bits
# of the convolutions' and batch norms' sums (tests/models/test_backends_agree.py).
_TOLERANCE = {"tensorflow": 1e-6, "jax": 1e-5, "torch": 1e-5}


@pytest.mark.slow
@pytest.mark.parametrize("backend", _TOLERANCE)
def test_a_fresh_process_without_the_run_predicts_as_the_run(
    preset, images, run_probabilities, tmp_path, backend
):
    np.save(tmp_path / "images.npy", images)
    process = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, preset, "images.npy", "out.npz"],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # nothing of the run here, and the run's copy is deleted
        env={**os.environ, "PYTHONPATH": REPO, "KERAS_BACKEND": backend},
        timeout=300,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    assert process.stdout.split() == [backend, "digits", *[str(d) for d in range(10)]]
    with np.load(tmp_path / "out.npz") as out:
        probabilities, *weights = (out[f"arr_{index}"] for index in range(len(out.files)))
    # The preset's weights, bit for bit, whichever backend reads them.
    expected = mixmo_tf.from_preset(preset).get_weights()
    assert len(weights) == len(expected)
    for got, want in zip(weights, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(probabilities, run_probabilities, rtol=0, atol=_TOLERANCE[backend])


def test_from_preset_of_a_run_folder_is_its_newest_checkpoint(
    trained_tiny_run, images, run_probabilities
):
    config, _ = trained_tiny_run
    loaded = load_preset(config.model_dir)
    assert loaded.metadata["source_run"]["step"] == 3 and loaded.path == config.model_dir
    probabilities = mixmo_tf.from_preset(config.model_dir).predict(images, verbose=0)["ensemble"]
    np.testing.assert_allclose(probabilities, run_probabilities, rtol=0, atol=1e-6)


@pytest.mark.parametrize("source", ["preset", "run folder"])
def test_a_loaded_model_fine_tunes(preset, trained_tiny_run, source):
    # A run folder's model was restored from a TensorFlow checkpoint, whose optimizer state
    # must not flow into the optimizer compiled here.
    model = mixmo_tf.from_preset(preset if source == "preset" else trained_tiny_run[0].model_dir)
    # Eagerly: one step needs no traced graph.
    model.compile(optimizer=mixmo_tf.PyTorchSGD(learning_rate=0.05, momentum=0.9), run_eagerly=True)
    rng = np.random.default_rng(0)
    batch = {
        "images": rng.normal(size=(4, 2, 32, 32, 3)).astype(np.float32),
        "labels": rng.integers(0, 10, size=(4, 2)),
    }
    before = [np.array(variable) for variable in model.trainable_variables]
    logs = model.train_on_batch(batch, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert int(model.optimizer.iterations) == 1
    after = model.trainable_variables
    assert all(not np.array_equal(b, np.array(a)) for b, a in zip(before, after, strict=True))


@pytest.mark.parametrize("record", [None, "{not json"])
def test_an_imported_runs_preset_names_the_authors_file(trained_tiny_run, tmp_path, record):
    config, _ = trained_tiny_run
    run = shutil.copytree(config.model_dir, tmp_path / "run")
    imported = {"sha256": "ab" * 32, "released_row": ROW, "url": URL, "epoch": 3}
    (run / "imported_from.json").write_text(record or json.dumps(imported))
    if record is not None:
        with pytest.raises(UnusableFileError) as error:
            run_preset(str(run))
        assert "imported_from.json is not the record an import writes" in _one_line(error)
        return
    metadata = run_preset(str(run)).metadata
    assert (metadata["row"], metadata["source_url"]) == (ROW, URL)
    # The published numbers come from the table of released rows.
    assert metadata["published"] == {"top1_accuracy": released.find_row(ROW).accuracy}
    assert metadata["source_sha256"] == "ab" * 32


# ---- refusals, one line each -----------------------------------------------------------------


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize("missing", presets.PRESET_FILES)
def test_a_folder_missing_a_preset_file_is_named(preset, tmp_path, missing):
    folder = copy_of(preset, tmp_path)
    os.remove(os.path.join(folder, missing))
    with pytest.raises(presets.NotAPresetError) as error:
        load_preset(str(folder))
    assert f"it lacks {missing} " in _one_line(error)


def test_a_folder_that_is_neither_preset_nor_run_is_refused(tmp_path):
    with pytest.raises(presets.NotAPresetError) as error:
        mixmo_tf.from_preset(str(tmp_path))
    assert "neither a preset" in _one_line(error) and "nor a run folder" in str(error.value)


def test_a_path_that_does_not_exist_is_refused(tmp_path):
    with pytest.raises(MissingFileError) as error:
        mixmo_tf.from_preset(str(tmp_path / "nowhere"))
    assert "does not exist" in _one_line(error)


def _rewrite_json(path: str, change) -> None:
    with open(path) as stream:
        content = json.load(stream)
    change(content)
    with open(path, "w") as stream:
        json.dump(content, stream)


def _truncate(path: str) -> None:
    with open(path, "r+b") as stream:
        stream.truncate(os.path.getsize(path) // 2)


@pytest.mark.parametrize(
    "damage, file, says",
    [
        (lambda p: _truncate(p), presets.CONFIG_FILE, "is not the JSON a preset holds"),
        (
            lambda p: _rewrite_json(p, lambda c: c.update(registered_name="x>Nothing")),
            presets.CONFIG_FILE,
            "does not rebuild a model",
        ),
        (lambda p: _truncate(p), presets.WEIGHTS_FILE, "its SHA-256 differs"),
        (lambda p: _rewrite_json(p, lambda c: c.pop("dataset")), presets.METADATA_FILE, "spec"),
    ],
    ids=["truncated-config", "config-of-no-class", "truncated-weights", "metadata-no-spec"],
)
def test_a_damaged_file_is_refused_naming_it(preset, tmp_path, damage, file, says):
    folder = copy_of(preset, tmp_path)
    damage(os.path.join(folder, file))
    with pytest.raises(presets.DamagedPresetError) as error:
        load_preset(str(folder))
    message = _one_line(error)
    assert os.path.join(str(folder), file) in message and says in message, message


def test_weights_of_another_model_are_refused_without_a_recorded_digest(preset, tmp_path):
    folder = copy_of(preset, tmp_path)
    metadata = os.path.join(folder, presets.METADATA_FILE)
    _rewrite_json(metadata, lambda content: content.pop("weights_sha256"))
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    other.save_weights(os.path.join(folder, presets.WEIGHTS_FILE))
    with pytest.raises(presets.DamagedPresetError) as error:
        load_preset(str(folder))
    assert "does not load into the model of config.json" in _one_line(error)


def test_a_preset_of_a_newer_format_asks_for_a_newer_mixmo_tf(preset, tmp_path):
    folder = copy_of(preset, tmp_path)
    metadata = os.path.join(folder, presets.METADATA_FILE)
    _rewrite_json(metadata, lambda content: content.update(format_version=2))
    with pytest.raises(presets.NewerPresetError) as error:
        load_preset(str(folder))
    assert "format version 2" in _one_line(error) and "upgrade mixmo-tf" in str(error.value)


# ---- writing: the command line, and a target that is not new ----------------------------------


def test_export_mode_writes_a_preset_and_refuses_to_overwrite_it(
    trained_tiny_run, tmp_path, capsys
):
    config, _ = trained_tiny_run
    target = str(tmp_path / "preset")
    arguments = ("--mode=export", f"--model_dir={config.model_dir}", "--format=preset")
    code, out, _ = run_main_in_process(*arguments, f"--export_dir={target}", "--temperature=1.5")
    assert code == 0 and out.strip() == f"Exported {config.model_dir} to {target}"
    assert load_preset(target).temperature == 1.5
    written = {name: os.path.getmtime(os.path.join(target, name)) for name in os.listdir(target)}

    code, out, err = run_main_in_process(*arguments, f"--export_dir={target}")
    assert code == 2 and out == ""
    assert err.startswith(f"ERROR: {target} exists and is not an empty folder")
    assert len(err.splitlines()) == 1, err
    assert {n: os.path.getmtime(os.path.join(target, n)) for n in os.listdir(target)} == written


def test_a_non_empty_target_is_refused_before_the_run_is_read(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    # The run folder does not exist: the target is checked first.
    with pytest.raises(presets.PresetFolderError):
        export_run_preset(str(tmp_path / "no_run"), str(target))
    assert os.listdir(target) == ["notes.txt"]


def test_a_preset_among_the_runs_own_files_is_refused(trained_tiny_run):
    config, _ = trained_tiny_run
    inside = os.path.join(config.model_dir, "checkpoints", "preset")
    with pytest.raises(ConfigError) as error:
        export_run_preset(config.model_dir, inside)
    default = os.path.join(config.model_dir, "preset")
    assert f"omit it (the default is {default})" in _one_line(error)
    assert not os.path.exists(inside)


def test_the_default_preset_folder_is_in_the_run(trained_tiny_run, tmp_path, capsys):
    config, _ = trained_tiny_run
    run = shutil.copytree(config.model_dir, tmp_path / "run")
    assert modes.export(str(run), None, None, "preset") == 0
    assert capsys.readouterr().out.strip() == f"Exported {run} to {run / 'preset'}"
    assert sorted(os.listdir(run / "preset")) == sorted(presets.PRESET_FILES)


def test_format_is_refused_by_the_modes_that_do_not_export():
    from absl import flags

    from mixmo_tf.cli import flags as mixmo_flags

    values = flags.FlagValues()
    mixmo_flags.define_flags(values)
    values(["main.py", "--mode=predict", "--format=preset", "--images=x.png"])
    with pytest.raises(UserError) as error:
        mixmo_flags.check_flags_apply(values)
    assert _one_line(error) == (
        "--format is read by --mode=export only, not --mode=predict: drop it."
    )


# ---- released rows: downloaded once, built into a preset in the cache -------------------------


@dataclasses.dataclass(frozen=True)
class StandInRow:
    """What `cached_preset` reads of a row of the released table."""

    name: str
    accuracy: float
    flagfile: str


def test_a_row_name_is_downloaded_once_and_kept_as_a_preset(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    recipe = tmp_path / "row.flags"
    recipe.write_text("--dataset=cifar10\n--model_dir=runs/row\n--mixing=linear\n--msda=mixup\n")
    row = StandInRow(ROW, 95.0, str(recipe))
    calls = []
    sha256 = file_sha256(AUTHORS_FILE)
    architecture = read_authors_checkpoint(AUTHORS_FILE).architecture

    def fetch(name):
        calls.append(name)
        return downloads.FetchedCheckpoint(AUTHORS_FILE, sha256, row, URL, architecture)

    monkeypatch.setattr(downloads, "fetch_checkpoint", fetch)
    first = load_preset(ROW)
    assert calls == [ROW]
    assert first.path == os.path.join(str(tmp_path), "keras_home", "mixmo_tf", "presets", ROW)
    assert first.metadata["row"] == ROW
    assert first.metadata["published"] == {"top1_accuracy": 95.0}
    assert (first.metadata["source_sha256"], first.metadata["source_url"]) == (sha256, URL)
    assert first.metadata["source_run"] == {"model_dir": None, "checkpoint": None, "step": None}
    assert first.spec.name == "cifar10" and first.class_names[0] == "airplane"
    # Imported with the row's recipe: Linear-MixMo (no cut) with input MixUp.
    assert (first.model.cut_prob, first.model.msda) == (0.0, "mixup")

    # The same function as the import's, in float32.
    images = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
    imported = load_pytorch_checkpoint(AUTHORS_FILE, precision="float32", dataset="cifar10")
    want = imported.predict(images, verbose=0)["ensemble"]
    np.testing.assert_allclose(
        first.model.predict(images, verbose=0)["ensemble"], want, rtol=0, atol=1e-6
    )

    def offline(name):
        raise AssertionError("downloaded again")

    monkeypatch.setattr(downloads, "fetch_checkpoint", offline)
    again = mixmo_tf.from_preset(ROW)
    np.testing.assert_allclose(again.predict(images, verbose=0)["ensemble"], want, atol=1e-6)

    # A damaged cached preset says how to have it built again.
    _truncate(os.path.join(first.path, presets.WEIGHTS_FILE))
    with pytest.raises(presets.DamagedPresetError) as error:
        mixmo_tf.from_preset(ROW)
    assert _one_line(error).endswith(f"delete {first.path} and it is built again.")


def test_an_unknown_name_names_the_closest_rows_and_caches_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(downloads.UnknownCheckpointError) as error:
        mixmo_tf.from_preset("cifar10_wrn28-10_cutmixmo")
    assert _one_line(error).startswith(
        f"'cifar10_wrn28-10_cutmixmo' is neither a folder nor a released row (the closest: {ROW}"
    )
    assert os.listdir(tmp_path) == []
