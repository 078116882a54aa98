"""An imported run folder resumes as docs/reproducing.md's fine-tune step says, and is shared.

Proven here:
- Every paper row imported with its flagfile records what the row's first training records,
  but the precision that training is yet to choose; that first training records its choice
  and says nothing changed, and a field really changed is still refused by name.
- Through main, in this process: the authors' small file imported with a row's flags (either
  precision), then trained one more epoch with the same flags, resumes at the imported step
  and exits 0; with a fixed field changed it is refused in one line, the folder untouched.
- A path flag given empty (an unset shell variable) is refused in one line in every mode.
- The imported folder and its files follow the umask, as a trained run's.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
import stat

import pytest
from absl import flags
from helpers.paths import AUTHORS_FIXTURES, FLAGS_DIR
from helpers.runs import run_main_in_process

from mixmo_tf.cli import flags as mixmo_flags
from mixmo_tf.config.run_folder import RunFolder
from mixmo_tf.config.run_record import (
    CheckpointMismatchError,
    config_with_flags,
    record_run_config,
)
from mixmo_tf.config.settings import Config
from mixmo_tf.importing import authors_checkpoint
from mixmo_tf.importing.authors_checkpoint import AuthorsArchitecture

SMALL = os.path.join(AUTHORS_FIXTURES, "wrn10-1_m2_zip.pt")
PAPER_ROWS = sorted(
    path for path in glob.glob(os.path.join(FLAGS_DIR, "*.flags")) if "digits" not in path
)
# The Cut-MixMo + CutMix row of docs/reproducing.md's example, shrunk to the small file on digits.
ROW = os.path.join(FLAGS_DIR, "cifar100_wrn28-10_cut_mixmo_cutmix.flags")
DIGITS_SIZED = (
    "--dataset=digits",
    "--depth=10",
    "--width=1",
    "--steps_per_epoch=2",
    "--batch_size=16",
    "--eval_steps=1",
    "--eval_batch_size=32",
)


def _parsed(*args: str) -> tuple[Config, list[str]]:
    """The Config of a command line and the fields it gives, as main.py builds them."""
    values = flags.FlagValues()
    mixmo_flags.define_flags(values)
    values(["main.py", *args])
    return mixmo_flags.config_from_flags(values), mixmo_flags.given_fields(values)


def _architecture(config: Config) -> AuthorsArchitecture:
    """The network the authors' file of the row `config` holds."""
    depth = config.depth if config.backbone == "wrn" else 18
    fields = (config.backbone, depth, config.width, config.num_members, config.spec.num_classes)
    return AuthorsArchitecture(*fields)


# ---- the run records of an import and of its first training ---------------------------------


@pytest.mark.parametrize("row", PAPER_ROWS, ids=os.path.basename)
@pytest.mark.parametrize("precision", [(), ("--precision=auto",)], ids=["flagfile", "auto"])
@pytest.mark.parametrize("chosen", ["float32", "mixed_bfloat16"])
def test_a_rows_first_training_accepts_its_import_and_changes_nothing(
    tmp_path, capsys, row, precision, chosen
):
    flagged, given = _parsed(f"--flagfile={row}", f"--model_dir={tmp_path}", *precision)
    imported = authors_checkpoint.import_config(_architecture(flagged), flagged, given)
    record_run_config(imported)
    # What training records: the flags, with "auto" resolved (here to `chosen`).
    trained = dataclasses.replace(
        flagged, precision=chosen if flagged.precision == "auto" else flagged.precision
    )
    record_run_config(trained)
    assert "changed settings" not in capsys.readouterr().out
    recorded = json.loads(open(RunFolder(str(tmp_path)).run_config).read())
    assert recorded["precision"] == trained.precision


def test_an_imported_runs_precision_is_chosen_once_then_fixed(tmp_path):
    imported = Config(dataset="digits", model_dir=str(tmp_path))
    assert imported.precision == "auto"
    record_run_config(imported)
    record_run_config(dataclasses.replace(imported, precision="float32"))
    with pytest.raises(
        CheckpointMismatchError, match=r"--precision: 'float32' -> 'mixed_bfloat16'"
    ):
        record_run_config(dataclasses.replace(imported, precision="mixed_bfloat16"))


def test_a_really_changed_field_of_an_imported_run_is_refused(tmp_path):
    imported = Config(dataset="digits", model_dir=str(tmp_path))
    record_run_config(imported)
    changed = dataclasses.replace(imported, precision="float32", msda="cutmix")
    with pytest.raises(CheckpointMismatchError, match=r"\(--msda: 'none' -> 'cutmix'\)\."):
        record_run_config(changed)


def test_evaluate_takes_a_precision_the_run_has_yet_to_choose():
    imported = Config(dataset="digits", model_dir="run")
    flagged = dataclasses.replace(imported, precision="float32")
    assert config_with_flags(imported, flagged, ["precision"]).precision == "float32"
    trained = dataclasses.replace(imported, precision="mixed_bfloat16")
    with pytest.raises(ValueError, match=r"--precision='float32' but the run has 'mixed_bfloat16'"):
        config_with_flags(trained, flagged, ["precision"])


# ---- through main: import, then fine-tune with the row's flags ------------------------------


@pytest.fixture(scope="module")
def imported_runs(tmp_path_factory) -> dict[str, str]:
    """The small file imported through main with the row's flags: precision as the flagfile
    says (float32), and with --precision=auto after it (the flagfile's fast-row advice)."""
    runs = {}
    for precision in ("", "--precision=auto"):
        run = str(tmp_path_factory.mktemp("imported") / "run")
        args = [f"--flagfile={ROW}", *DIGITS_SIZED, *filter(None, [precision])]
        code, out, err = run_main_in_process(
            *args, "--mode=import", f"--checkpoint={SMALL}", f"--model_dir={run}"
        )
        assert code == 0, err
        assert "at step 6" in out  # epoch 3 of 2 steps
        runs[precision or "flagfile"] = run
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("imported_as", ["flagfile", "--precision=auto"])
@pytest.mark.parametrize("fine_tune", ["", "--precision=auto"])
def test_the_readme_fine_tune_resumes_an_imported_run(
    tmp_path, imported_runs, imported_as, fine_tune
):
    run = str(tmp_path / "run")
    shutil.copytree(imported_runs[imported_as], run)
    args = [f"--flagfile={ROW}", *DIGITS_SIZED, *filter(None, [fine_tune])]
    code, out, err = run_main_in_process(*args, f"--model_dir={run}", "--epochs=4")
    assert code == 0, err
    assert f"Resuming from step 6 of 8 ({run}/checkpoints/ckpt-6)." in out
    assert "--precision" not in out.split("Resuming")[1]  # chosen, not changed
    recorded = json.loads(open(RunFolder(run).run_config).read())
    assert recorded["precision"] != "auto" and recorded["epochs"] == 4
    assert os.path.exists(os.path.join(run, "checkpoints", "ckpt-8.weights.h5"))


@pytest.mark.slow
def test_a_fine_tune_that_changes_a_fixed_field_is_refused_untouched(tmp_path, imported_runs):
    run = str(tmp_path / "run")
    shutil.copytree(imported_runs["--precision=auto"], run)
    before = open(RunFolder(run).run_config).read()
    args = [f"--flagfile={ROW}", *DIGITS_SIZED, "--msda=none"]
    code, _, err = run_main_in_process(*args, f"--model_dir={run}", "--epochs=4")
    assert code == 2
    assert err == (
        f"ERROR: {run} holds a run with other settings (--msda: 'cutmix' -> 'none'). Use the "
        "recorded values to resume it, or another --model_dir for a new run.\n"
    )
    assert open(RunFolder(run).run_config).read() == before
    assert sorted(os.listdir(RunFolder(run).checkpoints)) == sorted(
        os.listdir(RunFolder(imported_runs["--precision=auto"]).checkpoints)
    )


# ---- an empty path flag ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("--mode=import", f"--checkpoint={SMALL}", "--model_dir="),
        ("--mode=train", "--dataset=digits", "--model_dir="),
        ("--mode=evaluate", "--model_dir="),
        ("--mode=export", "--model_dir="),
        ("--mode=import", "--checkpoint=", "--model_dir=run"),
        ("--mode=predict", "--model_dir=run", "--images="),
        ("--mode=evaluate", "--ensemble_dirs="),
    ],
)
def test_an_empty_path_flag_is_refused_naming_it(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main_in_process(*args)
    empty = next(arg for arg in args if arg.endswith("="))
    assert code == 2 and out == ""
    assert err == (
        f"ERROR: {empty[:-1]} is given empty (an unset shell variable?): give a path, or leave "
        "the flag out.\n"
    )
    assert os.listdir(tmp_path) == []


# ---- permissions -----------------------------------------------------------------------------


def _mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.slow
def test_an_imported_folder_follows_the_umask(tmp_path):
    from mixmo_tf.importing.pytorch_import import load_pytorch_checkpoint

    run = str(tmp_path / "run")
    previous = os.umask(0o022)
    try:
        load_pytorch_checkpoint(SMALL, model_dir=run, dataset="digits", precision="float32")
    finally:
        os.umask(previous)
    folders = [run, *(os.path.join(top, name) for top, names, _ in os.walk(run) for name in names)]
    files = [os.path.join(top, name) for top, _, names in os.walk(run) for name in names]
    assert len(folders) >= 2 and len(files) >= 4
    assert {path: _mode(path) for path in folders} == dict.fromkeys(folders, 0o755)
    assert {path: _mode(path) for path in files} == dict.fromkeys(files, 0o644)
