"""The MixMo training step and whole training runs (docs/method.md §3-5, §9 and §10).

Proven here:
- (One `train_step`'s loss and update are proven in test_wiring.py.)
- `build_model` gives the paper's SGD (Nesterov, momentum 0.9) and learning-rate schedule:
  base 0.1 * unique images / 128, per-step warm-up over 782 * b steps, x0.1 at the first
  step of epochs 101, 201 and 226.
- `train` is deterministic: same seed, bitwise-identical weights and optimizer
  state; another seed, other weights.
- Resuming reproduces the uninterrupted run exactly, both from an epoch-end checkpoint and
  from a mid-epoch one after a (simulated) crash, and the rerun continues from the
  checkpoint's step instead of starting over.
- A small Cut-MixMo WRN learns real images (digits, fixed split): measured ensemble and
  member test accuracies are asserted with a margin.
- `evaluate` writes eval/results.json with the ensemble metrics and member
  accuracies of the last checkpoint, and refuses a model_dir without checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
import types

import h5py
import keras
import numpy as np
import pytest
from helpers.flags import parse
from helpers.paths import FLAGS_DIR
from helpers.runs import smoke_config

from mixmo_tf import data
from mixmo_tf.config import Config, run_folder, run_record
from mixmo_tf.evaluation.run import evaluate
from mixmo_tf.models.build import build_model
from mixmo_tf.training import callbacks
from mixmo_tf.training.checkpoints import restore_run
from mixmo_tf.training.run import train, train_stream


# Two epochs of three steps on digits, a checkpoint every two steps: 2, 3 (epoch end), 4, 6.
def _smoke(model_dir, **overrides) -> Config:
    return smoke_config(model_dir, **{"checkpoint_every_steps": 2, **overrides})


def _state(model: keras.Model) -> list[np.ndarray]:
    """Weights (with BN statistics) and optimizer state (iterations, momentums)."""
    return [keras.ops.convert_to_numpy(v) for v in model.weights + model.optimizer.variables]


def _assert_identical(state_a, state_b):
    assert len(state_a) == len(state_b)
    for a, b in zip(state_a, state_b):
        np.testing.assert_array_equal(a, b)


# ---- learning-rate schedule ----------------------------------------------------------------------

# (Config overrides, base lr, warm-up steps, steps per epoch) from the spec's CIFAR numbers.
_SCHEDULES = [
    ({}, 0.0125, 3128, 3125),  # Cut-MixMo: b = 4, 16 unique images per step
    ({"num_members": 1, "mixing": "none", "batch_repetitions": 1}, 0.05, 782, 781),  # vanilla
]


@pytest.mark.parametrize("overrides, base, warmup, steps_per_epoch", _SCHEDULES)
def test_build_model_uses_the_paper_optimizer_and_schedule(
    overrides, base, warmup, steps_per_epoch
):
    # The architecture does not change the schedule: WRN-10-1 keeps the test fast.
    model = build_model(Config(dataset="cifar100", depth=10, width=1, **overrides))
    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.SGD)
    assert optimizer.momentum == pytest.approx(0.9) and optimizer.nesterov
    assert not optimizer.weight_decay and model.l2 == pytest.approx(3e-4)

    def rate_at(step: int) -> float:
        optimizer.iterations.assign(step)
        return float(optimizer.learning_rate)

    decay_steps = [(epoch - 1) * steps_per_epoch for epoch in (101, 201, 226)]
    # Linear per-step warm-up from about zero, within one step of the spec's line.
    one_step = 1.01 * base / warmup
    assert rate_at(0) <= one_step
    assert rate_at(warmup // 2) == pytest.approx(base / 2, abs=one_step)
    assert rate_at(warmup - 1) == pytest.approx(base, abs=one_step)
    expected = {
        warmup: base,
        decay_steps[0] - 1: base,
        decay_steps[0]: base * 0.1,
        decay_steps[1] - 1: base * 0.1,
        decay_steps[1]: base * 0.01,
        decay_steps[2] - 1: base * 0.01,
        decay_steps[2]: base * 0.001,
        300 * steps_per_epoch - 1: base * 0.001,
    }
    for step, rate in expected.items():
        assert rate_at(step) == pytest.approx(rate, rel=1e-5), step


# ---- whole runs: determinism and resume ----------------------------------------------------------


class _SimulatedCrash(Exception):
    pass


@pytest.fixture
def step_recorder(monkeypatch):
    """Makes train() record each finished step and optionally crash after one of them.

    The real PeriodicCheckpoint still runs first, so the crash happens after whatever
    checkpoint that step (or, with `at_epoch_end`, its epoch's end) would have written, like
    a process killed between steps.
    """
    original = callbacks.PeriodicCheckpoint
    recorder = types.SimpleNamespace(steps=[], crash_after=None, at_epoch_end=False)

    class Recording(original):
        def _crash_if_due(self, epoch_end: bool) -> None:
            step = int(self.model.optimizer.iterations.numpy())
            if step == recorder.crash_after and epoch_end == recorder.at_epoch_end:
                raise _SimulatedCrash(step)

        def on_train_batch_end(self, batch, logs=None):
            super().on_train_batch_end(batch, logs)
            recorder.steps.append(int(self.model.optimizer.iterations.numpy()))
            self._crash_if_due(epoch_end=False)

        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            self._crash_if_due(epoch_end=True)

    monkeypatch.setattr(callbacks, "PeriodicCheckpoint", Recording)
    return recorder


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """The uninterrupted smoke run with seed 0: (config, final state)."""
    config = _smoke(tmp_path_factory.mktemp("reference"))
    model = train(config)
    return config, _state(model)


@pytest.mark.slow
def test_same_seed_gives_identical_weights_and_another_seed_does_not(reference_run, tmp_path):
    _, reference = reference_run
    _assert_identical(_state(train(_smoke(tmp_path / "same"))), reference)
    other = _state(train(_smoke(tmp_path / "other", seed=1)))
    assert not all(np.array_equal(a, b) for a, b in zip(other, reference))


@pytest.mark.slow
@pytest.mark.parametrize(
    "crash_after, at_epoch_end, resumed_at",
    [
        (3, True, 3),  # killed right after the first epoch's checkpoint
        (5, False, 4),  # killed after step 5; the newest checkpoint is step 4
    ],
    ids=["epoch_end", "mid_epoch"],
)
def test_resume_reproduces_the_uninterrupted_run(
    reference_run, tmp_path, capsys, step_recorder, crash_after, at_epoch_end, resumed_at
):
    """(Extending a finished run with more --epochs is allowed but is not this run: the cut
    probability schedule depends on the total epochs, docs/method.md §3.)"""
    _, reference = reference_run
    step_recorder.crash_after, step_recorder.at_epoch_end = crash_after, at_epoch_end
    with pytest.raises(_SimulatedCrash):
        train(_smoke(tmp_path))
    step_recorder.crash_after = None
    step_recorder.steps.clear()
    capsys.readouterr()

    model = train(_smoke(tmp_path))

    assert f"Resuming from step {resumed_at} of 6" in capsys.readouterr().out
    # Only the missing steps ran: the rerun neither started over nor repeated a step.
    assert step_recorder.steps == list(range(resumed_at + 1, 7))
    _assert_identical(_state(model), reference)


# Every method of the paper's tables (docs/method.md §11), with M = 2, 3, 4 and input MSDA,
# end to end.
_METHODS = [
    {"num_members": 1, "mixing": "none", "batch_repetitions": 1},
    {"num_members": 1, "mixing": "none", "batch_repetitions": 1, "msda": "mixup"},
    {"num_members": 1, "mixing": "none", "batch_repetitions": 1, "msda": "cutmix"},
    {"num_members": 2, "mixing": "mimo"},
    {"num_members": 2, "mixing": "linear", "msda": "cutmix"},
    {"num_members": 3, "mixing": "cutmix", "msda": "mixup"},
    {"num_members": 4, "mixing": "cutmix", "msda": "cutmix"},
]


@pytest.mark.slow
@pytest.mark.parametrize("method", _METHODS, ids=lambda m: "-".join(str(v) for v in m.values()))
def test_every_method_trains_and_predicts_end_to_end(tmp_path, method):
    config = _smoke(tmp_path, checkpoint_every_steps=0, **method)
    model = train(config)
    history = model.history.history
    assert int(model.optimizer.iterations.numpy()) == 6
    assert np.isfinite(history["loss"]).all() and np.isfinite(history["val_nll"]).all()
    assert {f"val_member_{i}_accuracy" for i in range(method["num_members"])} <= set(history)
    outputs = model.predict(np.zeros((3, 32, 32, 3), np.float32), verbose=0)
    assert outputs["ensemble"].shape == (3, 10)
    assert outputs["members"].shape == (3, method["num_members"], 10)
    np.testing.assert_allclose(outputs["ensemble"].sum(axis=-1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_xla_compiled_steps_train_and_are_deterministic():
    """jit_compile=True trains; from the same state, the same batches give the same weights.

    XLA's CPU Philox kernel yields other numbers than TensorFlow's for the same stateless
    seed, so a compiled run is its own reproducible stream, not the eager run's. One model
    is compiled once (XLA compiles dominate this test's time) and its three steps are run
    twice from the same state. mixed_float16 is the GPU path where XLA is most used, loss
    scaling included. (bfloat16 under XLA, another ~40 s compile, is left to XLA's own tests.)
    """
    config = _smoke("unused", jit_compile=True, precision="mixed_float16", epochs=1)
    keras.utils.set_random_seed(config.seed)
    model = build_model(config)
    assert model.network.get_layer("stem_0").compute_dtype == "float16"
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    images, labels = data.load_split(config.spec, "train")
    stream = train_stream(config)
    initial = _state(model)
    states = []
    for _ in range(2):
        for variable, value in zip(model.weights + model.optimizer.variables, initial):
            variable.assign(value)
        batches = data.train_dataset(images, labels, config.spec, stream, 0, 3)
        model.fit(batches, epochs=1, steps_per_epoch=3, verbose=0)
        assert int(model.optimizer.iterations.numpy()) == 3
        states.append(_state(model))
    first, second = states
    assert all(np.all(np.isfinite(v)) for v in first)
    assert not all(np.array_equal(a, b) for a, b in zip(first, initial))
    _assert_identical(first, second)


@pytest.mark.slow
def test_a_folder_holding_another_run_is_refused_not_mixed(tmp_path):
    train(_smoke(tmp_path, epochs=1))
    with pytest.raises(run_record.CheckpointMismatchError, match="--mixing: 'cutmix' -> 'linear'"):
        train(_smoke(tmp_path, mixing="linear"))
    # Without the recorded settings, the checkpoint itself does not fit another architecture.
    os.remove(tmp_path / run_folder.RUN_CONFIG)
    with pytest.raises(run_record.CheckpointMismatchError, match="does not match this model"):
        train(_smoke(tmp_path, width=2))


# ---- learning and evaluation ---------------------------------------------------------------------

# The digits demo flagfile (WRN-10-1, M=2, B=64, b=2) shortened to 400 steps, x0.1 at steps
# 300 and 350: ensemble test accuracy 0.778, members 0.636 / 0.778 (float32, oneDNN on an
# avx2-only CPU); the whole 600-step demo is bench/digits_accuracy.py's. MixMo's
# members need a few hundred steps on digits before they read their own inputs out of the
# mix (per-epoch curves: experiments/README.md); the margins leave room for other CPUs.
LEARNING = dataclasses.replace(
    parse(f"--flagfile={os.path.join(FLAGS_DIR, 'digits_wrn10-1_cut_mixmo.flags')}"),
    epochs=8,
    lr_decay_epochs=(7, 8),
)


@pytest.mark.slow
def test_cut_mixmo_learns_digits(tmp_path):
    config = dataclasses.replace(LEARNING, model_dir=str(tmp_path))
    start = time.perf_counter()
    train(config)
    results = evaluate(config)
    print(f"digits Cut-MixMo: {results} in {time.perf_counter() - start:.0f}s")
    assert results["step"] == 400
    assert results["accuracy"] >= 0.6  # chance is 0.1
    for member in range(2):
        assert results[f"member_{member}_accuracy"] >= 0.45


def test_evaluate_writes_results_of_the_last_checkpoint(reference_run):
    config, _ = reference_run
    results = evaluate(config)
    with open(
        os.path.join(config.model_dir, os.path.join(run_folder.EVALUATION, run_folder.RESULTS))
    ) as handle:
        written = json.load(handle)
    assert written == results
    expected_keys = {
        "accuracy",
        "top5",
        "nll",
        "ece",
        "brier",
        "member_0_accuracy",
        "member_1_accuracy",
        "step",
    }
    assert expected_keys <= set(written)
    assert written["step"] == 6

    # Recompute accuracy and NLL from the reloaded final model's predictions.
    model = keras.saving.load_model(os.path.join(config.model_dir, run_folder.FINAL_MODEL))
    images, labels = data.load_split(config.spec, "test")
    count = config.eval_steps * config.eval_batch_size
    batches = data.eval_dataset(
        images, labels, config.spec, config.eval_batch_size, config.eval_steps
    )
    predicted = model.predict(batches, verbose=0)
    ensemble, members = predicted["ensemble"], predicted["members"]
    labels = labels[:count]
    assert ensemble.shape == (count, 10)
    assert written["accuracy"] == pytest.approx(np.mean(ensemble.argmax(-1) == labels))
    for member in range(2):
        assert written[f"member_{member}_accuracy"] == pytest.approx(
            np.mean(members[:, member].argmax(-1) == labels)
        )
    nll = -np.mean(np.log(ensemble[np.arange(count), labels] + 1e-12))
    assert written["nll"] == pytest.approx(nll, rel=1e-4)


@pytest.mark.slow
def test_an_unusable_newest_checkpoint_is_passed_over_by_name(tmp_path, capsys):
    from mixmo_tf.cli import modes
    from mixmo_tf.training import checkpoints

    config = _smoke(tmp_path / "run", epochs=2)
    train(config)
    directory = run_folder.RunFolder(config.model_dir).checkpoints
    kept = list(reversed(checkpoints.all_checkpoints(directory)))
    older, newest = kept[-2:]
    with open(newest + checkpoints.SUFFIX, "r+b") as stream:
        stream.truncate(100)  # a copy or a disk that gave up midway
    capsys.readouterr()

    restored = restore_run(config)
    assert restored.checkpoint == older and 0 < restored.step < config.total_steps
    out, err = capsys.readouterr()
    line = err.strip()
    assert out == ""  # a note, not a result: stderr
    assert line.startswith(f"The checkpoint {newest} is unusable (") and line.endswith(
        f"using {older}."
    )
    model = build_model(config)
    step, used = checkpoints.restore_latest(checkpoints.checkpoint_manager(model, config.model_dir))
    assert (step, used) == (restored.step, older)

    # A NaN in every older one: nothing usable, one line naming each.
    assert checkpoints.unusable_reason(older) is None
    for checkpoint in kept[:-1]:
        with h5py.File(checkpoint + checkpoints.SUFFIX, "r+") as stored:
            names = []
            stored.visit(names.append)
            kernel = next(stored[name] for name in names if getattr(stored[name], "ndim", 0) == 4)
            kernel[0, 0, 0, 0] = np.nan  # in a convolution's weights
        assert checkpoints.unusable_reason(checkpoint).endswith("holds NaN or Inf")
    capsys.readouterr()
    assert modes.export(config.model_dir, None, None) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ERROR: No usable checkpoint in {directory} ({newest}: ")
    assert all(f"; {checkpoint}: " in err for checkpoint in kept[:-1])
    assert "holds NaN or Inf" in err and len(err.splitlines()) == 1


def test_evaluate_without_checkpoint_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint in .*train the run first"):
        evaluate(_smoke(tmp_path))
    assert not os.path.exists(tmp_path / os.path.join(run_folder.EVALUATION, run_folder.RESULTS))


def test_recorded_config_reads_the_recorded_settings(tmp_path):
    config = _smoke(tmp_path / "run", mixing="linear", seed=3, lr_decay_epochs=(2,))
    run_record.record_run_config(config)
    moved = tmp_path / "moved"
    os.rename(tmp_path / "run", moved)
    assert run_record.recorded_config(str(moved)) == dataclasses.replace(
        config, model_dir=str(moved)
    )
    with pytest.raises(FileNotFoundError, match="run_config.json does not exist"):
        run_record.recorded_config(str(tmp_path / "nowhere"))


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"dataset": "digits", ', "is not the JSON training wrote \\(Expecting"),
        ("[1, 2]", "is not the JSON training wrote \\(a list, not an object\\)"),
        ('{"dataset": "digits", "colour": "blue"}', "holds settings this version does not know"),
    ],
)
def test_a_damaged_run_config_is_named_with_its_fix(tmp_path, content, message):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / run_folder.RUN_CONFIG).write_text(content)
    path = re.escape(str(folder / run_folder.RUN_CONFIG))
    with pytest.raises(run_record.RunConfigError, match=f"^{path} {message}"):
        run_record.recorded_config(str(folder))
    if "version" not in message:  # unreadable for a resume too (an unknown field is not)
        with pytest.raises(run_record.RunConfigError, match=f"^{path} "):
            run_record.record_run_config(_smoke(folder))


def test_an_unreadable_run_config_is_named_with_its_fix(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    run_record.record_run_config(_smoke(folder))
    real_open = open

    def refusing_open(path, *args, **kwargs):
        if str(path).endswith(run_folder.RUN_CONFIG):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refusing_open)
    with pytest.raises(
        run_record.RunConfigError, match="cannot be read \\(Permission denied\\): give"
    ):
        run_record.recorded_config(str(folder))


def test_run_notes_are_recorded_once_and_never_read_as_settings(tmp_path):
    """speed_choices: the first start's record stays; a run without one (an imported run)
    gets it at its first training start; reading the settings ignores it."""
    config = _smoke(tmp_path / "run")
    run_record.record_run_config(config)  # as an import writes it: no notes
    first = {"precision": {"precision": "float32", "reason": "measured"}}
    run_record.record_run_config(config, notes={"speed_choices": first})
    run_record.record_run_config(config, notes={"speed_choices": {"precision": "other"}})
    with open(os.path.join(config.model_dir, run_folder.RUN_CONFIG)) as stream:
        assert json.load(stream)["speed_choices"] == first
    assert run_record.recorded_config(config.model_dir) == config
