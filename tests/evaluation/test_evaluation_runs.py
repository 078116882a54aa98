"""Evaluation of trained runs: `--mode=evaluate --model_dir=RUN` alone, ensembles of runs,
the validation temperature, and flags checked against the recorded run.

Two brief digits runs (WRN-10-1, single network, 80 steps of 64, 10% of the training split held
out) are trained once for the module; they learn a little (20% and 49% test accuracy, chance
10%; 55% for their ensemble on this machine), enough for their ensemble to beat them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers.paths import REPO
from helpers.runs import tiny_run_config

from mixmo_tf.config import Config, run_record
from mixmo_tf.evaluation import run as evaluation_run
from mixmo_tf.training.run import train

# Every test here trains for tens of seconds or starts training processes.
pytestmark = pytest.mark.slow

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def digits_run(model_dir, seed: int) -> Config:
    # The tiny run, grown to 80 steps of a single network, 10% of the training split held out.
    return tiny_run_config(
        model_dir,
        num_members=1,
        mixing="none",
        batch_size=64,
        batch_repetitions=1,
        epochs=2,
        steps_per_epoch=40,
        warmup_epochs=0,
        lr_decay_epochs=(3,),
        l2=1e-4,
        seed=seed,
        validation_split=0.1,
        eval_steps=0,
        eval_batch_size=360,
    )


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs")
    configs = [digits_run(folder / f"run{seed}", seed) for seed in (0, 1)]
    for config in configs:
        train(config)
    return configs


def run_main(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "main.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


def test_evaluate_with_model_dir_alone_writes_results_report_and_figures(trained_runs):
    run_dir = trained_runs[0].model_dir
    result = run_main("--mode=evaluate", f"--model_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    headline = json.loads(result.stdout)  # stdout is the headline alone; notes go to stderr
    assert headline["step"] == 80
    assert f"Report and figures in {os.path.join(run_dir, 'eval')}" in result.stderr

    with open(os.path.join(run_dir, "eval", "results.json")) as stream:
        results = json.load(stream)
    assert results["accuracy"] == headline["accuracy"] > 0.15  # chance is 0.1
    assert results["num_examples"] == 360  # the whole test split: the recorded eval settings
    scaled = results["temperature_scaled"]
    assert scaled["temperature"] > 0 and set(scaled) >= {"accuracy", "nll", "ece"}
    assert results["epochs"]["final"]["epoch"] == 2
    assert results["epochs"]["final"]["accuracy"] == pytest.approx(results["accuracy"], abs=1e-6)
    best = results["epochs"]["best"]
    assert best["accuracy"] >= results["epochs"]["final"]["accuracy"]

    report = open(os.path.join(run_dir, "eval", "report.md")).read()
    assert "Temperature-scaled" in report and "Best epoch" in report
    assert f"{100 * results['accuracy']:.2f}" in report
    for name in results["figures"]:
        path = os.path.join(run_dir, "eval", name)
        with open(path, "rb") as stream:
            assert stream.read(8) == PNG_SIGNATURE
        import matplotlib.image

        assert matplotlib.image.imread(path).shape[2] in (3, 4)  # decodes as an RGB(A) image

    # --validation_split: T fitted on the held-out 10% of the training split, recorded.
    with open(os.path.join(run_dir, "temperature.json")) as stream:
        recorded = json.load(stream)
    fitted = results["validation_temperature"]
    assert recorded["temperature"] == fitted["temperature"] > 0
    assert recorded["num_examples"] == round(0.1 * 1437) == 144
    assert recorded["validation_nll_after"] <= recorded["validation_nll_before"]
    assert os.listdir(os.path.join(run_dir, "logs", "eval"))  # TensorBoard scalars


def test_evaluate_refuses_a_flag_that_contradicts_the_run_before_tensorflow(trained_runs):
    result = run_main("--mode=evaluate", f"--model_dir={trained_runs[0].model_dir}", "--depth=16")
    assert result.returncode == 2
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("ERROR: --depth=16 but the run has 10")  # nothing after it
    assert "tensorflow" not in result.stderr.lower()


def test_recorded_flags_may_change_only_what_does_not_define_the_model(tmp_path):
    recorded = dataclasses.replace(digits_run(tmp_path, 0), eval_batch_size=64)
    flagged = Config(dataset="digits", eval_batch_size=16, data_dir="/data", depth=16, seed=0)
    changed = run_record.config_with_flags(recorded, flagged, ["eval_batch_size", "data_dir"])
    assert (changed.eval_batch_size, changed.data_dir) == (16, "/data")
    assert changed.model_dir == recorded.model_dir and changed.num_members == 1
    # Given with the recorded value: accepted; with another: refused, naming the flag.
    assert run_record.config_with_flags(recorded, flagged, ["seed"]) == recorded
    with pytest.raises(ValueError, match="--depth=16 but the run has 10.*--model_dir alone"):
        run_record.config_with_flags(recorded, flagged, ["depth", "seed"])


def test_training_only_flags_given_to_evaluate_are_refused_unless_they_repeat_the_run(tmp_path):
    recorded = digits_run(tmp_path, 0)
    repeated = dataclasses.replace(recorded, model_dir="")
    # A flagfile of the row repeats the run's schedule and devices: accepted.
    assert run_record.config_with_flags(recorded, repeated, ["epochs", "lr", "distribution"])
    flagged = dataclasses.replace(repeated, distribution="mirrored", epochs=recorded.epochs + 1)
    expected = (
        f"--epochs={recorded.epochs + 1} (the run has {recorded.epochs}), --distribution="
        "'mirrored' (the run has 'default'): --mode=evaluate does not read them (only training "
        "does; evaluation runs the recorded model on one device). Drop the flag."
    )
    with pytest.raises(ValueError) as refusal:
        run_record.config_with_flags(recorded, flagged, ["epochs", "distribution"])
    assert str(refusal.value) == expected


def test_evaluate_without_a_recorded_run_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="run_config.json does not exist"):
        run_record.recorded_config(str(tmp_path))


def test_ensemble_of_two_runs_is_at_least_as_accurate_as_their_mean(trained_runs):
    results = evaluation_run.evaluate_runs(trained_runs)
    runs = results["runs"]
    assert [run["model_dir"] for run in runs] == [c.model_dir for c in trained_runs]
    assert results["accuracy"] >= np.mean([run["accuracy"] for run in runs])
    assert results["nll"] <= np.mean([run["nll"] for run in runs])
    # Members of an ensemble of runs: every run's members, in order.
    assert [results[f"member_{i}_accuracy"] for i in range(2)] == [r["accuracy"] for r in runs]
    assert results["disagreement"] > 0
    folder = evaluation_run.output_dir(trained_runs)
    assert folder == os.path.join(trained_runs[0].model_dir, "eval", "ensemble")
    with open(os.path.join(folder, "results.json")) as stream:
        assert json.load(stream) == results
    assert "Ensemble of 2 runs" in open(os.path.join(folder, "report.md")).read()


def test_ensemble_of_runs_of_different_datasets_is_refused(trained_runs):
    other = dataclasses.replace(trained_runs[1], dataset="cifar10", model_dir="elsewhere")
    with pytest.raises(ValueError, match="one dataset"):
        evaluation_run.evaluate_runs([trained_runs[0], other])


def test_ood_detection_against_svhn_writes_metrics_and_histograms(trained_runs):
    import tensorflow_datasets as tfds

    from mixmo_tf.evaluation.options import EvaluationOptions

    options = EvaluationOptions(ood_dataset="svhn_cropped")
    with tfds.testing.mock_data(num_examples=64):  # random 32x32x3 images in SVHN's format
        results = evaluation_run.evaluate_runs(trained_runs[1:], options)
    ood = results["ood"]
    assert ood["dataset"] == "svhn_cropped" and ood["num_examples"] == 64
    for score in ("max_probability", "entropy", "mutual_information"):
        assert set(ood[score]) == {"auroc", "aupr_in", "aupr_out", "fpr_at_95_tpr"}
        assert all(0.0 <= value <= 1.0 for value in ood[score].values())
    folder = evaluation_run.output_dir(trained_runs[1:])
    assert results["figures"] == ["reliability.png", "ood_scores.png"]
    with open(os.path.join(folder, "ood_scores.png"), "rb") as stream:
        assert stream.read(8) == PNG_SIGNATURE
    assert (
        "Out-of-distribution detection: svhn_cropped"
        in open(os.path.join(folder, "report.md")).read()
    )
