"""bench/train_step.py times the step on every Keras backend, and bench/backends.py compares them.

On TensorFlow the script runs in-process on synthetic batches shaped as the pipeline's; on
JAX and PyTorch it runs as a child process in which TensorFlow is unimportable, as on a
machine that has none. The driver's rounds, order and ratios are checked on stand-in children.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import backends
import frameworks
import harness
import numpy as np
import pytest
import train_step
from absl import flags
from helpers.bench_scripts import TINY_RUN, parsed_flags, run_script
from helpers.paths import REPO
from pipeline_batches import pipeline_batches

BENCH = os.path.join(REPO, "bench")
TESTS = os.path.join(REPO, "tests")
# Runs bench/train_step.py as __main__ with TensorFlow unimportable (tests/helpers), then
# prints which modules of TensorFlow the run imported: none, or an import failed before.
_WITHOUT_TENSORFLOW = """
import runpy, sys
sys.path[:0] = [{tests!r}, {bench!r}]
from helpers.no_tensorflow import block_tensorflow
block_tensorflow({backend!r})
sys.argv = [{script!r}, *{args!r}]
try:
    runpy.run_path({script!r}, run_name="__main__")
except SystemExit as finished:  # absl's app.run exits, 0 on success
    if finished.code:
        raise
print("imported:", sorted(name for name in sys.modules if name.split(".")[0] == "tensorflow"))
"""


@pytest.mark.parametrize("msda", ["none", "cutmix"])
def test_synthetic_batches_have_the_pipelines_structure(msda):
    config = train_step.step_config(
        "10-1", 2, parsed_flags(train_step, *TINY_RUN, f"--msda={msda}", "--timed_steps=1")
    )
    (real, *_), synthetic = pipeline_batches(config), harness.synthetic_batches(config, 2, seed=0)
    assert len(synthetic) == 2
    for batch in synthetic:
        assert sorted(batch) == sorted(real)
        for name, tensor in batch.items():
            assert (tuple(tensor.shape), tensor.dtype) == (
                tuple(real[name].shape),
                real[name].dtype,
            )
    # One batch per step, each its own draw.
    assert not np.array_equal(synthetic[0]["images"], synthetic[1]["images"])


@pytest.mark.slow
def test_train_step_times_synthetic_batches_on_tensorflow(capsys):
    lines = run_script(
        train_step,
        capsys,
        *TINY_RUN,
        "--members=2",
        "--timed_steps=1",
        "--batches=synthetic",
        "--ceiling_networks=",
    )
    (line,) = lines
    assert (line["bench"], line["backend"], line["batches"]) == (
        "train_step",
        "tensorflow",
        "synthetic",
    )
    assert line["network"] == "WRN-10-1" and len(line["step_durations"]) == 1
    assert line["median_step_s"] > 0 and "tensorflow" in line


def test_pipeline_batches_are_refused_on_another_backend(monkeypatch):
    monkeypatch.setattr(frameworks, "backend", lambda: "jax")
    assert parsed_flags(train_step).batches == "synthetic"
    with pytest.raises(flags.IllegalFlagValueError, match="needs the TensorFlow backend"):
        parsed_flags(train_step, "--batches=pipeline")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_train_step_runs_without_tensorflow_on_jax_and_torch(backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    pytest.importorskip("helpers.no_tensorflow")  # the suite's TensorFlow blocker
    script = os.path.join(BENCH, "train_step.py")
    args = [
        *TINY_RUN,
        "--members=2",
        "--timed_steps=1",
        "--ceiling_networks=10-1",
        "--ceiling_size=64",
    ]
    code = _WITHOUT_TENSORFLOW.format(
        tests=TESTS, bench=BENCH, backend=backend, script=script, args=args
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": REPO},
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    *records, imported = completed.stdout.splitlines()
    assert imported == "imported: []"
    (line,) = [json.loads(record) for record in records]
    assert (line["backend"], line["batches"], line["members"]) == (backend, "synthetic", 2)
    assert backend in line and "tensorflow" not in line and "onednn" not in line
    assert line["median_step_s"] > 0 and line["matmul_ceiling_gflops"] > 0


# ---- bench/backends.py, on stand-in children -----------------------------------------------


def child_line(seconds: float, load: float) -> dict:
    """A train_step.py line as a child prints it, timing one step in `seconds`."""
    return {
        "bench": "train_step",
        "network": "WRN-10-1",
        "members": 2,
        "batch_size": 8,
        "batch_repetitions": 4,
        "msda": "none",
        "batches": "synthetic",
        "precision": "float32",
        "jit_compile": False,
        "training_gflop_per_step": 2.0,
        "median_step_s": seconds,
        "step_durations": [seconds],
        "matmul_ceiling_gflops": 4.0,
        "ceiling_dtype": "float32",
        "fraction_of_ceiling": 2.0 / seconds / 4.0,
        "peak_rss_mib": 100.0 + seconds,
        "load_average": load,
        "backend": "stand-in",
        "device": "cpu",
        "command": "python bench/train_step.py",
    }


def test_backends_alternate_and_compare_every_variant_to_the_first(capsys, monkeypatch, tmp_path):
    (tmp_path / "mixmo_tf").mkdir()  # a checkout to compare against
    # Seconds per (variant, round): the baseline takes 1 s; round 2 is twice as slow for all.
    seconds = {
        backends.BASELINE: [1.0, 2.0, 1.0],
        "jax": [2.0, 4.0, 2.0],
        "torch": [3.0, 6.0, 1.5],
    }
    calls = []

    def child_record(command, env):
        variant = (
            backends.BASELINE
            if "PYTHONPATH" in env and str(tmp_path) in env["PYTHONPATH"]
            else env["KERAS_BACKEND"]
        )
        round_index = sum(1 for name in calls if name == variant)
        calls.append(variant)
        assert "--networks=10-1" in command and "--batches=synthetic" in command
        return child_line(seconds[variant][round_index], load=float(len(calls)))

    monkeypatch.setattr(train_step, "child_record", child_record)
    values = parsed_flags(
        backends, "--networks=10-1", "--backends=jax,torch", f"--baseline={tmp_path}", "--rounds=3"
    )
    backends.run(values)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    order = [backends.BASELINE, "jax", "torch"]
    assert calls == order + order[::-1] + order
    assert [line["variant"] for line in lines] == order
    by_variant = {line["variant"]: line for line in lines}
    torch = by_variant["torch"]
    assert torch["round_medians_s"] == [3.0, 6.0, 1.5] and torch["median_step_s"] == 3.0
    assert torch["spread"] == pytest.approx((6.0 - 1.5) / 3.0)
    assert torch["over_first"] == pytest.approx(3.0)
    # Paired within rounds: 3.0, 3.0 and 1.5 times the baseline.
    assert torch["paired_over_first"] == pytest.approx(3.0)
    assert by_variant["jax"]["paired_over_first"] == pytest.approx(2.0)
    assert torch["fastest_step_s"] == 1.5
    assert torch["fastest_over_first"] == pytest.approx(1.5 / 1.0)
    assert torch["fraction_of_ceiling"] == pytest.approx(2.0 / 3.0 / 4.0)
    assert torch["round_load_averages"] == [3.0, 4.0, 9.0]
    assert by_variant[backends.BASELINE]["library"] == str(tmp_path)
    assert by_variant["jax"]["library"] == REPO
    assert "KERAS_BACKEND=torch" in torch["child_command"]
    for line in lines:
        assert line["first_variant"] == backends.BASELINE and "cpu_model" in line
        assert line["backend"] == "stand-in"  # the child's backend, not this process's


@pytest.mark.parametrize(
    "bad_flags, message",
    [
        (["--backends=jax,jax"], "distinct backends"),
        (["--backends=theano"], "distinct backends"),
        (["--baseline=/nonexistent"], "a checkout of this library"),
        (["--rounds=0"], "--rounds must be >= 1"),
        (["--batches=pipeline"], "time other backends on --batches=synthetic"),
    ],
)
def test_backends_refuses_bad_flags_before_timing_anything(bad_flags, message):
    with pytest.raises(flags.IllegalFlagValueError, match=message):
        parsed_flags(backends, *bad_flags)
