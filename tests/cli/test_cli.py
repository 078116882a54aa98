"""The command line: flags, flagfiles, fail-fast errors, and a real main.py run that resumes.

Flag parsing is tested in-process on fresh FlagValues; a few subprocess runs of main.py show
what a user sees: a bad flag or missing data fails within seconds, and a smoke run of a paper
flagfile on a tiny CIFAR-100 archive in the official format trains and resumes
(`--mode=evaluate` through main.py: tests/evaluation/test_evaluation_runs.py).
"""

from __future__ import annotations

import glob
import os
import time

import pytest
from absl import flags
from helpers.cifar_archive import write_cifar_archive
from helpers.flags import parse
from helpers.paths import FLAGS_DIR, REPO
from helpers.runs import run_main

from mixmo_tf.data.tfds_loading import manual_dir

# The paper's rows; flags/digits_* is a CPU demo, run by tests/training/test_training.py.
FLAGFILES = sorted(glob.glob(os.path.join(FLAGS_DIR, "cifar*.flags")))


def test_a_flag_after_the_flagfile_makes_a_fast_row():
    path = os.path.join(FLAGS_DIR, "cifar100_wrn28-10_cut_mixmo.flags")
    assert parse(f"--flagfile={path}", "--precision=auto").precision == "auto"


def test_default_flags_are_the_papers_cut_mixmo_recipe():
    config = parse("--dataset=cifar100", "--mixing=cutmix")
    assert (config.depth, config.width, config.num_members) == (28, 10, 2)
    assert (config.batch_size, config.batch_repetitions, config.epochs) == (64, 4, 300)
    assert config.base_learning_rate == pytest.approx(0.0125)
    assert config.derived_steps_per_epoch == 3125
    assert config.lr_decay_epochs == (101, 201, 226)
    assert config.effective_cut_prob == 0.5 and config.mixing_alpha == 2.0
    assert config.l2 == pytest.approx(3e-4)
    assert config.model_dir == "runs/cifar100_wrn28-10_cutmix_m2"


def test_there_is_a_flagfile_per_paper_row_and_dataset():
    names = {os.path.basename(path) for path in FLAGFILES}
    rows = [
        "vanilla",
        "vanilla_mixup",
        "vanilla_cutmix",
        "mimo",
        "linear_mixmo",
        "cut_mixmo",
        "linear_mixmo_cutmix",
        "cut_mixmo_cutmix",
    ]
    for dataset in ("cifar10", "cifar100"):
        for row in rows:
            assert f"{dataset}_wrn28-10_{row}.flags" in names


@pytest.mark.parametrize("path", FLAGFILES, ids=os.path.basename)
def test_each_flagfile_parses_into_its_rows_method(path):
    config = parse(f"--flagfile={path}")
    name = os.path.basename(path)
    assert config.dataset == name.split("_")[0]
    assert (config.depth, config.width, config.epochs) == (28, 10, 300)
    # The paper's numerics: float32 and PyTorch's Nesterov step, as the authors trained.
    assert (config.precision, config.optimizer) == ("float32", "pytorch_sgd")
    single = "vanilla" in name
    assert config.num_members == (1 if single else 2)
    assert config.base_learning_rate == pytest.approx(0.05 if single else 0.0125)
    expected_mixing = (
        "none"
        if single
        else "mimo"
        if "mimo" in name and "mixmo" not in name
        else "cutmix"
        if "cut_mixmo" in name
        else "linear"
    )
    assert config.mixing == expected_mixing
    expected_msda = (
        "cutmix" if name.endswith("_cutmix.flags") else "mixup" if "mixup" in name else "none"
    )
    assert config.msda == expected_msda
    with open(path) as handle:
        assert "Published top-1" in handle.read()


def test_smoke_shrinks_any_flagfile_to_a_tiny_run():
    config = parse(f"--flagfile={FLAGFILES[0]}", "--smoke")
    assert (config.depth, config.width, config.epochs, config.steps_per_epoch) == (10, 1, 2, 3)
    assert config.batch_size % config.batch_repetitions == 0
    assert config.model_dir == parse(f"--flagfile={FLAGFILES[0]}").model_dir + "_smoke"


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--num_members=0", "--mixing=none"], "--num_members"),
        (["--num_members=1"], "--num_members=1"),
        (["--width=0"], "--width"),
        (["--depth=27"], "--depth"),
        (["--batch_size=62"], "--batch_size must be a multiple of --batch_repetitions"),
        (["--cut_prob=1.5"], "--cut_prob"),
        (["--lr_decay_epochs=201,101"], "--lr_decay_epochs"),
        (["--lr_decay_epochs=a,b"], "--lr_decay_epochs"),
        (["--mixing=linear", "--mixing_alpha=0"], "--mixing_alpha"),
        (["--eval_batch_size=0"], "--eval_batch_size"),
        (["--seed=-1"], "--seed must be in \\[0, 4294967296\\)"),
        (["--num_members=1000"], "--num_members must be in \\[1, 16\\]"),
        (["--dataset=tfds:oxford-flowers102"], "tfds writes oxford-flowers102 as oxford_flowers"),
    ],
)
def test_bad_values_are_rejected_naming_the_flag(args, flag):
    with pytest.raises(ValueError, match=flag):
        parse(*args)


def test_unknown_choice_is_rejected_by_the_parser():
    # --dataset is a free string (tfds:NAME, folder:PATH): Config rejects a bad one.
    with pytest.raises(flags.IllegalFlagValueError, match="download"):
        parse("--download=sometimes")


def test_tfds_names_with_a_config_or_version_are_accepted():
    for name in ("oxford_flowers102", "cifar10_corrupted/fog_5:3.0.0", "mnist:3.*.*"):
        assert parse(f"--dataset=tfds:{name}").dataset == f"tfds:{name}"


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--batch_size=63"], "--batch_size must be a multiple of --batch_repetitions"),
        (["--batch_size=0"], "--batch_size must be in [1, 4096]"),
        (["--seed=-1"], "--seed must be in [0, 4294967296)"),
        (["--dataset=tfds:oxford-flowers102"], "as oxford_flowers102"),
        (["--nosuchflag=1"], "Unknown command line flag 'nosuchflag'. `--help` lists the flags."),
        (["--download=sometimes"], "flag --download=sometimes: value should be one of"),
        (["--flagfile=/no/such.flags"], "Unable to open flagfile: [Errno 2] No such file"),
        (
            ["--flagfile={latin1}"],
            "--flagfile={latin1} is not UTF-8 text (invalid continuation byte at byte 14)",
        ),
        (["--depth=10", "stray"], "Unexpected arguments (flags start with --): stray"),
    ],
)
def test_main_answers_a_bad_command_line_in_one_error_line_with_code_2(tmp_path, args, fragment):
    """Flag parsing and Config refusals alike, before anything is built: no usage banner."""
    latin1 = tmp_path / "latin1.flags"
    latin1.write_bytes("--depth=10\n# Réglages\n".encode("latin-1"))
    start = time.monotonic()
    result = run_main(*[arg.format(latin1=latin1) for arg in args])
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.splitlines() == [result.stderr.strip()]  # one line
    assert result.stderr.startswith("ERROR: ")
    assert fragment.format(latin1=latin1) in result.stderr
    assert result.stdout == ""
    assert time.monotonic() - start < 60


def test_evaluating_runs_with_a_damaged_run_config_names_the_run(tmp_path):
    good, bad = tmp_path / "good", tmp_path / "bad"
    for folder in (good, bad):
        folder.mkdir()
    (good / "run_config.json").write_text('{"dataset": "digits"}')
    (bad / "run_config.json").write_text('{"dataset": "dig')
    result = run_main("--mode=evaluate", f"--ensemble_dirs={good},{bad}")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"ERROR: {bad / 'run_config.json'} is not the JSON training wrote (Unterminated string "
        "starting at: line 1 column 13 (char 12)): restore it from a copy, or train in a new "
        "--model_dir."
    ]


@pytest.mark.slow
def test_main_without_data_fails_fast_with_instructions(tmp_path):
    start = time.monotonic()
    # never: with the default (auto) a machine with network would download CIFAR-100 here.
    result = run_main(
        "--dataset=cifar100", "--mixing=cutmix", f"--data_dir={tmp_path}", "--download=never"
    )
    elapsed = time.monotonic() - start
    assert result.returncode == 2
    assert "--data_dir" in result.stderr
    assert os.path.join(manual_dir(str(tmp_path)), "cifar-100-binary.tar.gz") in result.stderr
    assert elapsed < 60  # seconds, mostly TensorFlow's import; never download retries
    # The message comes first and alone: no TensorFlow C++ start-up lines around it.
    assert result.stderr.startswith("ERROR: ")
    assert "cpu_feature_guard" not in result.stderr and "InitializeLog" not in result.stderr


@pytest.mark.slow
def test_main_trains_and_resumes_a_flagfile_on_a_real_format_archive(tmp_path):
    data_dir, model_dir = tmp_path / "data", tmp_path / "run"
    smoke_dir = tmp_path / "run_smoke"  # --smoke keeps its runs apart from the real one
    write_cifar_archive(manual_dir(str(data_dir)), "cifar100", num_train=64, num_test=64)
    flagfile = os.path.join(REPO, "flags", "cifar100_wrn28-10_cut_mixmo_cutmix.flags")
    common = [
        f"--flagfile={flagfile}",
        "--smoke",
        f"--data_dir={data_dir}",
        f"--model_dir={model_dir}",
    ]

    first = run_main(*common, "--epochs=1")  # stops after epoch 1, as an interrupted run would
    assert first.returncode == 0, first.stderr[-3000:]
    assert "val_accuracy" in first.stdout
    assert "val_member_1_accuracy" in first.stdout and "val_nll" in first.stdout
    assert os.path.exists(smoke_dir / "checkpoints" / "ckpt-3.weights.h5")

    resumed = run_main(*common)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from step 3 of 6" in resumed.stdout
    assert "Epoch 2/2" in resumed.stdout and "Epoch 1/2" not in resumed.stdout
    assert os.path.exists(smoke_dir / "checkpoints" / "ckpt-6.weights.h5")
    assert os.path.exists(smoke_dir / "model.keras")
    assert glob.glob(str(smoke_dir / "logs" / "**" / "events.out.tfevents.*"), recursive=True)
