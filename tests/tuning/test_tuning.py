"""Measured defaults (`mixmo_tf.tuning`): --precision=auto and oneDNN for training.

- The machine facts: CPU model and flags from /proc/cpuinfo-style files, TensorFlow's oneDNN
  default rule (checked against TensorFlow itself on this machine), TF_ENABLE_ONEDNN_OPTS.
- The cache: per machine, oneDNN setting and network; damaged or unwritable files do not
  stop a run.
- The rules: bfloat16 or oneDNN only when clearly (>= 10%) faster; what is timed when.
- The measurement: the run's real step in each precision, in-process and in child processes
  with oneDNN off and on (TensorFlow honours the setting there).
- The choices: measured once, then read from the cache; given and recorded precisions are
  never measured; the device rule for GPUs and multi-worker runs.
- A training run: the choices printed and recorded in run_config.json, a resume keeps the
  recorded precision, and measuring first does not change the trained weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import shutil
import subprocess
import sys
import threading
import types

import numpy as np
import pytest
import tensorflow as tf
from helpers.datasets import CLASSES, write_image_folder
from helpers.paths import REPO
from helpers.runs import smoke_config

from mixmo_tf.cli import exit_codes, modes, onednn_start
from mixmo_tf.config import run_folder
from mixmo_tf.training import run, run_guard
from mixmo_tf.training.run import train
from mixmo_tf.tuning import machine, onednn, precision_choice, rules, step_timing, timing
from mixmo_tf.tuning.step_times import StepTimeCache, step_key

AVX2_ONLY = machine.Machine("Test EPYC", ("avx2",), "2.21.0", is_linux_x86=True)
WITH_BF16 = machine.Machine("Test Xeon", ("avx2", "avx512f", "avx512_bf16"), "2.21.0", True)


def _cpu_info(tmp_path, flags: str, model: str = "Test CPU 9000") -> str:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: {model}\nflags\t\t: {flags}\n\n")
    return str(path)


def _config(tmp_path, **overrides):
    return smoke_config(tmp_path / "run", **overrides)


def _write_run_config(config, content: dict) -> None:
    """A run_config.json of `content` (the fields a test needs) in `config`'s run folder."""
    os.makedirs(config.model_dir, exist_ok=True)
    with open(run_folder.RunFolder(config.model_dir).run_config, "w") as stream:
        json.dump(content, stream)


def _no_measurement(*args, **kwargs):
    raise AssertionError("measured")


# ---- machine facts ---------------------------------------------------------------------------


def test_the_machine_is_read_from_the_cpu_info(tmp_path):
    facts = machine.this_machine(_cpu_info(tmp_path, "fpu avx2 avx512f avx512_bf16 amx_tile"))
    assert facts.cpu_model == "Test CPU 9000"
    assert facts.cpu_flags == ("avx2", "avx512f", "avx512_bf16", "amx_tile")
    assert facts.has_bfloat16_instructions
    assert facts.tensorflow == tf.__version__

    avx2 = machine.this_machine(_cpu_info(tmp_path, "fpu avx2 fma"))
    assert avx2.cpu_flags == ("avx2",) and not avx2.has_bfloat16_instructions


@pytest.mark.parametrize(
    "flags, on",
    [
        ("avx2", False),
        ("avx2 avx512f", False),  # Skylake: AVX-512 without VNNI or bfloat16
        ("avx2 avx512f avx512_vnni", True),
        ("avx2 avx512_bf16", True),
        ("avx2 avx_vnni", True),
        ("avx2 amx_tile amx_bf16", True),
    ],
)
def test_the_onednn_default_follows_tensorflows_rule(tmp_path, flags, on):
    facts = machine.this_machine(_cpu_info(tmp_path, flags))
    assert facts.onednn_on_by_default == (on and facts.is_linux_x86)
    assert not dataclasses.replace(facts, is_linux_x86=False).onednn_on_by_default


def test_the_onednn_default_rule_agrees_with_tensorflow_here():
    """TensorFlow itself, started without TF_ENABLE_ONEDNN_OPTS, on this machine's CPU."""
    environment = {k: v for k, v in os.environ.items() if k != machine.ONEDNN_VARIABLE}
    code = "from tensorflow.python.util import _pywrap_util_port as p; print(p.IsMklEnabled())"
    process = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120
    )
    assert process.returncode == 0, process.stderr[-2000:]
    expected = machine.this_machine().onednn_on_by_default
    assert process.stdout.strip().splitlines()[-1] == str(expected)


@pytest.mark.parametrize(
    "value, requested",
    [("1", True), ("true", True), ("TRUE", True), ("0", False), ("false", False), ("yes", None)],
)
def test_the_onednn_variable_is_read_as_tensorflow_reads_it(monkeypatch, value, requested):
    monkeypatch.setenv(machine.ONEDNN_VARIABLE, value)
    assert machine.onednn_requested() is requested
    monkeypatch.delenv(machine.ONEDNN_VARIABLE)
    assert machine.onednn_requested() is None


def test_the_cache_folder_is_the_users_unless_set(monkeypatch, tmp_path):
    monkeypatch.delenv(machine.CACHE_VARIABLE, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert machine.cache_folder() == str(tmp_path / "xdg" / "mixmo_tf")
    # The XDG Base Directory specification: a relative path is ignored.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for ignored in ("relative/cache", ""):
        monkeypatch.setenv("XDG_CACHE_HOME", ignored)
        assert machine.cache_folder() == str(tmp_path / "home" / ".cache" / "mixmo_tf")
    monkeypatch.setenv(machine.CACHE_VARIABLE, str(tmp_path / "mine"))
    assert machine.cache_folder() == str(tmp_path / "mine")


# ---- the cache -------------------------------------------------------------------------------


def test_step_times_are_kept_per_machine_onednn_and_network(tmp_path):
    cache = StepTimeCache(str(tmp_path))
    config = _config(tmp_path)
    key = step_key(config, AVX2_ONLY, onednn=False)
    assert cache.seconds(key) == {}
    cache.add(key, {"float32": 0.5})
    cache.add(key, {"mixed_bfloat16": 0.25})
    assert StepTimeCache(str(tmp_path)).seconds(key) == {"float32": 0.5, "mixed_bfloat16": 0.25}

    others = [
        step_key(config, AVX2_ONLY, onednn=True),
        step_key(config, WITH_BF16, onednn=False),
        step_key(config, dataclasses.replace(AVX2_ONLY, tensorflow="2.22.0"), onednn=False),
        step_key(dataclasses.replace(config, width=2), AVX2_ONLY, onednn=False),
        step_key(dataclasses.replace(config, batch_size=16), AVX2_ONLY, onednn=False),
    ]
    assert len(set(others + [key])) == 6
    assert all(cache.seconds(other) == {} for other in others)
    # What does not change the step (the schedule, the folder) shares the time.
    same = dataclasses.replace(config, lr=0.01, epochs=7, model_dir=str(tmp_path / "elsewhere"))
    assert step_key(same, AVX2_ONLY, onednn=False) == key


_KEY = "a network"


def _entry(seconds) -> bytes:
    return json.dumps({_KEY: {"seconds": seconds}}).encode()


DAMAGED_CACHES = {
    # Entries of another shape or with other types.
    "a list entry": json.dumps({_KEY: [0.5]}).encode(),
    "seconds as a list": _entry([0.5]),
    "no seconds": _entry({}),
    "a nested time": _entry({"float32": {"median": 0.5}}),
    "a string time": _entry({"float32": "0.5"}),
    "a boolean time": _entry({"float32": True}),
    "an unknown precision": _entry({"float33": 0.5}),
    # Times no step takes.
    "Infinity": b'{"a network": {"seconds": {"float32": Infinity}}}',
    "NaN": b'{"a network": {"seconds": {"float32": NaN}}}',
    "1e-300": _entry({"float32": 1e-300}),
    "negative": _entry({"float32": 0.5, "mixed_bfloat16": -1}),
    "a huge integer": _entry({"float32": 10**30}),
    # Files that cannot be read as the cache.
    "not JSON": b'{"truncated": ',
    "not UTF-8": b'{"a network": "\xff\xfe"}',
    "a JSON list": b"[1, 2]",
    "deeply nested": b"[" * 100_000 + b"]" * 100_000,
    "too large": b'{"padding": "' + b"x" * 4_000_000 + b'"}',
}


@pytest.mark.parametrize("case", DAMAGED_CACHES)
def test_a_damaged_cache_entry_counts_as_not_measured_and_is_replaced(tmp_path, capsys, case):
    cache = StepTimeCache(str(tmp_path))
    with open(cache.path, "wb") as stream:
        stream.write(DAMAGED_CACHES[case])
    assert cache.seconds(_KEY) == {}
    cache.add(_KEY, {"float32": 0.25})
    assert cache.seconds(_KEY) == {"float32": 0.25}
    with open(cache.path, encoding="utf-8") as stream:
        assert json.load(stream)[_KEY]["seconds"] == {"float32": 0.25}
    (note,) = capsys.readouterr().err.splitlines()  # one short note, said once
    assert note.startswith(f"Note: ignoring step times in {cache.path} (") and len(note) < 300
    assert note.endswith("); measuring again.")


def test_valid_times_of_other_networks_are_kept_and_invalid_ones_dropped(tmp_path, capsys):
    cache = StepTimeCache(str(tmp_path))
    content = {
        "kept": {"seconds": {"float32": 2.5}, "measured": "2026-12-01T00:00:00+00:00"},
        "dropped": {"seconds": {"float32": "fast"}},
    }
    with open(cache.path, "w") as stream:
        json.dump(content, stream)
    cache.add(_KEY, {"float32": 0.25})
    cache.add(_KEY, {"mixed_bfloat16": 0.5})  # adds to the times measured before
    with open(cache.path) as stream:
        assert sorted(json.load(stream)) == [_KEY, "kept"]
    assert cache.seconds("kept") == {"float32": 2.5}
    assert cache.seconds(_KEY) == {"float32": 0.25, "mixed_bfloat16": 0.5}
    assert capsys.readouterr().err == ""  # no entry read was damaged


def test_runs_saving_at_once_keep_every_time(tmp_path):
    """Each save reads, merges and writes under the cache's lock: no run's times are lost
    and the file is whole at every moment (the writes are atomic renames)."""
    cache = StepTimeCache(str(tmp_path))

    def save(run: int) -> None:
        for network in range(25):
            StepTimeCache(str(tmp_path)).add(f"{run}-{network}", {"float32": 1.0 + network})
            assert cache.seconds(f"{run}-{network}") == {"float32": 1.0 + network}

    threads = [threading.Thread(target=save, args=(run,)) for run in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with open(cache.path) as stream:
        assert len(json.load(stream)) == 75


def test_a_cached_absurd_time_is_measured_again_not_printed(
    tmp_path, on_machine, monkeypatch, capsys
):
    on_machine(WITH_BF16)
    cache = StepTimeCache(str(tmp_path / "cache"))
    config = _config(tmp_path)
    key = step_key(config, WITH_BF16, step_timing.onednn_enabled())
    os.makedirs(os.path.dirname(cache.path))
    with open(cache.path, "w") as stream:
        json.dump({key: {"seconds": {"float32": 1e-300, "mixed_bfloat16": 1e-300}}}, stream)
    monkeypatch.setattr(
        precision_choice,
        "time_training_steps",
        lambda config, precisions: {"float32": 1.0, "mixed_bfloat16": 0.5},
    )
    choice = precision_choice.choose_training_precision(config, cache)
    assert (choice.reason, choice.seconds) == ("measured", {"float32": 1.0, "mixed_bfloat16": 0.5})
    assert (
        "1e-300" not in choice.message() and "Note: ignoring step times" in capsys.readouterr().err
    )
    assert cache.seconds(key) == choice.seconds


def test_an_unwritable_cache_folder_leaves_a_note_not_an_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    cache = StepTimeCache(str(blocker / "cache"))  # a folder under a file cannot exist
    cache.add("key", {"float32": 1.0})
    assert "could not be saved" in capsys.readouterr().err
    assert cache.seconds("key") == {}


# ---- the rules -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "seconds, expected",
    [
        ({"float32": 1.0, "mixed_bfloat16": 0.5}, "mixed_bfloat16"),
        ({"float32": 1.0, "mixed_bfloat16": 0.9}, "mixed_bfloat16"),
        ({"float32": 1.0, "mixed_bfloat16": 0.95}, "float32"),  # not clearly faster
        ({"float32": 1.0, "mixed_bfloat16": 3.0}, "float32"),
        ({"float32": 1.0}, "float32"),
    ],
)
def test_bfloat16_is_taken_only_when_clearly_faster(seconds, expected):
    assert rules.fastest_precision(seconds) == expected


def test_what_is_timed_depends_on_the_flag_the_run_and_the_cpu(tmp_path):
    config = _config(tmp_path)
    assert rules.precisions_to_time(config, WITH_BF16) == ("float32", "mixed_bfloat16")
    assert rules.precisions_to_time(config, AVX2_ONLY) == ("float32",)
    given = dataclasses.replace(config, precision="mixed_bfloat16")
    assert rules.precisions_to_time(given, AVX2_ONLY) == ("mixed_bfloat16",)

    _write_run_config(config, {"precision": "mixed_bfloat16"})
    assert rules.recorded_precision(config.model_dir) == "mixed_bfloat16"
    assert rules.precisions_to_time(config, WITH_BF16) == ("mixed_bfloat16",)


@pytest.mark.parametrize(
    "off, on, enabled, times",
    [
        ({"float32": 1.0}, {"float32": 0.5}, True, (1.0, 0.5)),
        ({"float32": 1.0}, {"float32": 0.95}, False, (1.0, 0.95)),
        ({"float32": 0.5}, {"float32": 1.0}, False, (0.5, 1.0)),
        # Each setting in the precision it would train in: on + bfloat16 beats off + float32.
        ({"float32": 1.0, "mixed_bfloat16": 4.0}, {"float32": 1.0, "mixed_bfloat16": 0.4}, True,
         (1.0, 0.4)),
    ],
)  # fmt: skip
def test_onednn_is_turned_on_only_when_clearly_faster(off, on, enabled, times):
    choice = rules.onednn_from_seconds({False: off, True: on}, "measured")
    assert choice.enabled is enabled
    assert (choice.seconds["off"], choice.seconds["on"]) == times


def test_the_messages_give_both_times_and_the_way_to_the_other_setting():
    precision = rules.PrecisionChoice(
        "mixed_bfloat16", "measured", {"float32": 2.0, "mixed_bfloat16": 1.0}
    )
    assert precision.message() == (
        "Precision: mixed_bfloat16 (auto, measured on this CPU: training step 2 s in float32, "
        "1 s in mixed_bfloat16; --precision=float32 trains in float32)."
    )
    assert (
        "no bfloat16 instructions"
        in rules.PrecisionChoice("float32", "no bfloat16 instructions").message()
    )
    choice = rules.OnednnChoice(True, "cached", {"off": 0.75, "on": 0.25})
    assert (
        "0.25 s with it, 0.75 s without; TF_ENABLE_ONEDNN_OPTS=0 turns it off" in choice.message()
    )
    assert rules.OnednnChoice(False, "TensorFlow's default").message() == (
        "oneDNN: off (TensorFlow's default)."
    )


# ---- measuring -------------------------------------------------------------------------------


def test_rounds_alternate_and_a_clearly_slower_setting_is_not_timed_again():
    calls = []

    def timer(name, seconds):
        def time_once():
            calls.append(name)
            return seconds.pop(0)

        return time_once

    medians = timing.interleaved_medians(
        {
            "a": timer("a", [1.0, 3.0, 2.0]),
            "b": timer("b", [1.2, 1.0, 1.1]),
            "c": timer("c", [1.6]),
        },
        rounds=3,
    )
    assert calls == ["a", "b", "c", "a", "b", "a", "b"]  # c: 1.6 > 1.5 x the fastest
    assert medians == {"a": 2.0, "b": 1.1, "c": 1.6}


@pytest.mark.slow
def test_two_child_processes_time_the_step_with_onednn_off_and_on(tmp_path):
    """TensorFlow honours the setting in each child (checked when the child is ready: a
    child whose oneDNN state differs raises MeasurementError)."""
    config = _config(tmp_path, batch_size=8)
    seconds = onednn.time_in_children(config, ("float32",))
    assert sorted(seconds) == [False, True]
    assert all(list(times) == ["float32"] for times in seconds.values())
    assert all(0 < times["float32"] < 60 for times in seconds.values())


def test_a_failing_child_is_reported_with_its_last_error_line(tmp_path, monkeypatch):
    failing = tmp_path / "python"
    failing.write_text(
        "#!/bin/sh\necho 'Traceback ...' >&2\necho 'MemoryError: 9 GiB' >&2\nexit 3\n"
    )
    failing.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(failing))
    with pytest.raises(onednn.MeasurementError, match="exited with 3: MemoryError: 9 GiB$"):
        onednn.time_in_children(_config(tmp_path), ("float32",))


# ---- choosing --------------------------------------------------------------------------------


@pytest.fixture
def on_machine(monkeypatch):
    """Makes the choices see `facts` as this machine (and forgets a choice applied by the
    test when it ends)."""
    monkeypatch.setattr(onednn, "_applied", [])

    def use(facts: machine.Machine) -> None:
        monkeypatch.setattr(precision_choice, "this_machine", lambda: facts)
        monkeypatch.setattr(onednn, "this_machine", lambda: facts)

    return use


def test_auto_measures_once_then_reads_the_cache(tmp_path, on_machine, monkeypatch, capsys):
    on_machine(WITH_BF16)
    cache = StepTimeCache(str(tmp_path / "cache"))
    config = _config(tmp_path, batch_size=8)
    first = precision_choice.choose_training_precision(config, cache)
    assert first.reason == "measured" and set(first.seconds) == {"float32", "mixed_bfloat16"}
    assert first.precision == rules.fastest_precision(first.seconds)
    assert "Timing the training step in float32 and mixed_bfloat16" in capsys.readouterr().out
    monkeypatch.setattr(precision_choice, "time_training_steps", _no_measurement)
    second = precision_choice.choose_training_precision(config, cache)
    assert (second.reason, second.precision, second.seconds) == (
        "cached",
        first.precision,
        first.seconds,
    )


@pytest.mark.parametrize("bfloat16, expected", [(0.5, "mixed_bfloat16"), (0.95, "float32")])
def test_auto_picks_bfloat16_from_the_cached_times(tmp_path, on_machine, bfloat16, expected):
    on_machine(WITH_BF16)
    cache = StepTimeCache(str(tmp_path))
    config = _config(tmp_path)
    key = step_key(config, WITH_BF16, step_timing.onednn_enabled())
    cache.add(key, {"float32": 1.0, "mixed_bfloat16": bfloat16})
    choice = precision_choice.choose_training_precision(config, cache)
    assert (choice.precision, choice.reason) == (expected, "cached")


def test_given_recorded_and_ruled_precisions_are_not_measured(tmp_path, on_machine, monkeypatch):
    on_machine(WITH_BF16)
    monkeypatch.setattr(precision_choice, "time_training_steps", _no_measurement)
    cache = StepTimeCache(str(tmp_path / "cache"))
    config = _config(tmp_path)
    given = dataclasses.replace(config, precision="mixed_bfloat16")
    assert precision_choice.choose_training_precision(given, cache).reason == "given"
    worker = dataclasses.replace(config, distribution="multi_worker_mirrored")
    assert precision_choice.choose_training_precision(worker, cache).reason == "device rule"

    _write_run_config(config, {"precision": "mixed_bfloat16"})
    recorded = precision_choice.choose_training_precision(config, cache)
    assert (recorded.precision, recorded.reason) == ("mixed_bfloat16", "recorded")

    on_machine(AVX2_ONLY)
    fresh = _config(tmp_path / "other")
    choice = precision_choice.choose_training_precision(fresh, cache)
    assert (choice.precision, choice.reason) == ("float32", "no bfloat16 instructions")


def test_onednn_is_measured_where_tensorflow_leaves_it_off(tmp_path, on_machine, monkeypatch):
    on_machine(AVX2_ONLY)
    monkeypatch.delenv(machine.ONEDNN_VARIABLE, raising=False)
    calls = []

    def children(config, precisions):
        calls.append(precisions)
        return {False: {"float32": 1.0}, True: {"float32": 0.4}}

    monkeypatch.setattr(onednn, "time_in_children", children)
    cache = StepTimeCache(str(tmp_path / "cache"))
    config = _config(tmp_path)
    choice = onednn.choose_onednn(config, cache)
    assert (choice.enabled, choice.reason, choice.seconds) == (
        True,
        "measured",
        {"off": 1.0, "on": 0.4},
    )
    assert calls == [("float32",)]
    again = onednn.choose_onednn(config, cache)
    assert (again.enabled, again.reason, len(calls)) == (True, "cached", 1)

    onednn.apply(again)
    assert os.environ[machine.ONEDNN_VARIABLE] == "1"
    assert onednn.chosen(True) == again
    # A process where oneDNN ended up otherwise reports TensorFlow's decision instead.
    assert onednn.chosen(False).reason == machine.ONEDNN_VARIABLE


def test_a_resumed_run_keeps_the_onednn_setting_its_first_start_measured(
    tmp_path, on_machine, monkeypatch
):
    """So the resumed steps run the same kernels as the first start's."""
    on_machine(AVX2_ONLY)
    monkeypatch.delenv(machine.ONEDNN_VARIABLE, raising=False)
    monkeypatch.setattr(onednn, "time_in_children", None)  # calling it would fail
    config = _config(tmp_path)
    cache = StepTimeCache(str(tmp_path / "cache"))  # empty: the record decides
    for reason, kept in (("measured", True), ("cached", True), ("TensorFlow's default", False)):
        record = {"enabled": True, "reason": reason, "seconds": {"off": 2.0, "on": 1.0}}
        _write_run_config(config, {"precision": "float32", "speed_choices": {"onednn": record}})
        if kept:
            choice = onednn.choose_onednn(config, cache, measure=False)
            assert choice == rules.OnednnChoice(True, "recorded", {"off": 2.0, "on": 1.0})
            assert choice.message() == "oneDNN: on (as the run's first start measured)."
        else:
            assert onednn.choose_onednn(config, cache, measure=False) is None  # to measure
    onednn.apply(rules.OnednnChoice(False, "recorded"))
    assert os.environ[machine.ONEDNN_VARIABLE] == "0"


def test_onednn_is_left_alone_where_set_ruled_or_unmeasurable(tmp_path, on_machine, monkeypatch):
    def children(config, precisions):
        raise onednn.MeasurementError("the timing process exited with 1: MemoryError")

    monkeypatch.setattr(onednn, "time_in_children", children)
    cache = StepTimeCache(str(tmp_path / "cache"))
    config = _config(tmp_path)
    on_machine(AVX2_ONLY)
    monkeypatch.setenv(machine.ONEDNN_VARIABLE, "0")
    assert onednn.choose_onednn(config, cache) == rules.OnednnChoice(False, "TF_ENABLE_ONEDNN_OPTS")

    monkeypatch.delenv(machine.ONEDNN_VARIABLE)
    failed = onednn.choose_onednn(config, cache)
    assert not failed.enabled and failed.reason.endswith(
        "not measured: the timing process exited with 1: MemoryError"
    )
    workers = onednn.choose_onednn(dataclasses.replace(config, distribution="tpu"), cache)
    assert workers.reason.endswith("not measured for --distribution=tpu")

    on_machine(WITH_BF16)  # TensorFlow turns oneDNN on itself
    assert onednn.choose_onednn(config, cache) == rules.OnednnChoice(True, "TensorFlow's default")
    onednn.apply(rules.OnednnChoice(True, "TensorFlow's default"))
    assert machine.ONEDNN_VARIABLE not in os.environ


# ---- a training run --------------------------------------------------------------------------


def _final_weights(config) -> list[np.ndarray]:
    return [v.numpy() for v in train(config).trainable_variables]


@pytest.mark.slow
def test_a_run_records_its_choices_and_measuring_first_changes_nothing(
    tmp_path, on_machine, monkeypatch, capsys
):
    on_machine(WITH_BF16)
    measured_steps = step_timing.time_training_steps

    def measured_then_fixed(config, precisions):
        # A real measurement runs (its side effects are what this test is about); the times
        # returned are fixed so the choice is float32 on any CPU.
        measured_steps(config, ("float32",), rounds=1)
        return {"float32": 1.0, "mixed_bfloat16": 2.0}

    monkeypatch.setattr(precision_choice, "time_training_steps", measured_then_fixed)
    monkeypatch.setenv(machine.CACHE_VARIABLE, str(tmp_path / "cache"))
    auto = _config(tmp_path, epochs=1)
    measured = _final_weights(auto)
    assert "Precision: float32 (auto, measured on this CPU" in capsys.readouterr().out
    given = _final_weights(
        dataclasses.replace(auto, model_dir=str(tmp_path / "given"), precision="float32")
    )
    assert all(np.array_equal(a, b) for a, b in zip(measured, given))

    with open(run_folder.RunFolder(auto.model_dir).run_config) as stream:
        recorded = json.load(stream)
    assert recorded["precision"] == "float32"
    choices = recorded["speed_choices"]
    assert choices["precision"] == {
        "precision": "float32",
        "reason": "measured",
        "seconds": {"float32": 1.0, "mixed_bfloat16": 2.0},
    }
    assert choices["onednn"]["enabled"] == step_timing.onednn_enabled()

    # A resume with auto keeps the recorded precision and the first start's record.
    train(dataclasses.replace(auto, epochs=2))
    assert "Precision: float32 (recorded)" in capsys.readouterr().out
    with open(run_folder.RunFolder(auto.model_dir).run_config) as stream:
        assert json.load(stream)["speed_choices"] == choices


# ---- the command line -----------------------------------------------------------------------


def test_the_command_line_sets_a_cached_choice_before_tensorflow(
    tmp_path, on_machine, monkeypatch, capsys
):
    on_machine(AVX2_ONLY)
    monkeypatch.delenv(machine.ONEDNN_VARIABLE, raising=False)
    monkeypatch.setenv(machine.CACHE_VARIABLE, str(tmp_path / "cache"))
    config = _config(tmp_path)
    assert onednn_start.before_tensorflow(config)  # nothing cached: measure after the start
    assert machine.ONEDNN_VARIABLE not in os.environ

    cache = StepTimeCache()
    cache.add(step_key(config, AVX2_ONLY, False), {"float32": 1.0})
    cache.add(step_key(config, AVX2_ONLY, True), {"float32": 0.25})
    assert not onednn_start.before_tensorflow(config)
    assert os.environ[machine.ONEDNN_VARIABLE] == "1"
    assert "oneDNN: on (cached on this CPU" in capsys.readouterr().out


def test_the_command_line_restarts_with_a_measured_choice(
    tmp_path, on_machine, monkeypatch, capsys
):
    """The suite's TensorFlow runs with oneDNN on: a measurement saying off restarts."""
    on_machine(AVX2_ONLY)
    monkeypatch.delenv(machine.ONEDNN_VARIABLE, raising=False)
    monkeypatch.setenv(onednn_start.QUIET_VARIABLE, "3")
    monkeypatch.setenv(machine.CACHE_VARIABLE, str(tmp_path / "cache"))
    monkeypatch.setattr(
        onednn, "time_in_children", lambda c, p: {False: {"float32": 0.5}, True: {"float32": 1.0}}
    )
    restarts = []

    def execv(path, argv):
        restarts.append((path, argv, dict(os.environ)))

    monkeypatch.setattr(os, "execv", execv)
    monkeypatch.setattr(sys, "argv", ["main.py", "--dataset=digits"])
    onednn_start.measure_and_restart(_config(tmp_path), quiet_tensorflow=True)

    ((path, argv, environment),) = restarts
    assert (path, argv) == (sys.executable, [sys.executable, "main.py", "--dataset=digits"])
    assert environment[machine.ONEDNN_VARIABLE] == "0"
    assert onednn_start.QUIET_VARIABLE not in environment  # decided again by the new command
    out = capsys.readouterr().out
    assert "oneDNN: off (measured" in out and "Restarting with oneDNN off" in out

    # The restarted command takes the choice as made: no line, no measurement.
    monkeypatch.setattr(onednn, "time_in_children", None)
    assert not onednn_start.before_tensorflow(_config(tmp_path))
    assert capsys.readouterr().out == ""
    assert onednn.chosen(False).reason == "measured"


# A CPU where both are measured: oneDNN left off by TensorFlow, bfloat16 instructions.
MEASURES_BOTH = machine.Machine("Test Zen", ("avx2", "avx_ne_convert"), "2.21.0", True)


def _folder_source(tmp_path, classes: int, per_class: int) -> str:
    root = write_image_folder(tmp_path / "images", train_per_class=per_class)
    for split in ("train", "test"):
        for name in CLASSES[classes:]:
            shutil.rmtree(os.path.join(root, split, name))
    return "folder:" + root


def _other_settings(tmp_path, config, monkeypatch):
    _write_run_config(config, {**dataclasses.asdict(config), "width": 2, "precision": "float32"})
    return config


def _corrupt_run_config(tmp_path, config, monkeypatch):
    os.makedirs(config.model_dir)
    with open(run_folder.RunFolder(config.model_dir).run_config, "w") as stream:
        stream.write('{"dataset": "dig')
    return config


def _corrupt_dataset_spec(tmp_path, config, monkeypatch):
    os.makedirs(config.model_dir)
    with open(run_folder.RunFolder(config.model_dir).dataset_spec, "w") as stream:
        stream.write("[1]")
    return dataclasses.replace(config, dataset=_folder_source(tmp_path, 3, 9))


def _unusable_checkpoints(tmp_path, config, monkeypatch):
    folder = run_folder.RunFolder(config.model_dir).checkpoints
    os.makedirs(folder)
    with open(os.path.join(folder, "checkpoint"), "w") as stream:
        stream.write('model_checkpoint_path: "ckpt-3"\nall_model_checkpoint_paths: "ckpt-3"\n')
    return config


def _three_replicas(tmp_path, config, monkeypatch):
    three = types.SimpleNamespace(num_replicas_in_sync=3)
    monkeypatch.setattr(run, "make_strategy", lambda name, tpu: three)
    return config


def _under_a_file(tmp_path, config, monkeypatch):
    (tmp_path / "file").write_text("")
    return dataclasses.replace(config, model_dir=str(tmp_path / "file" / "run"))


REFUSED_BEFORE_MEASURING = {
    "missing data": (
        lambda tmp_path, config, _: dataclasses.replace(
            config, dataset="folder:" + str(tmp_path / "missing")
        ),
        "missing does not exist: --dataset=folder:PATH needs a folder",
    ),
    "one class": (
        lambda tmp_path, config, _: dataclasses.replace(
            config, dataset=_folder_source(tmp_path, 1, 9)
        ),
        "has 1 class (cat): a classifier needs at least 2.",
    ),
    "too few images": (
        lambda tmp_path, config, _: dataclasses.replace(
            config, dataset=_folder_source(tmp_path, 3, 1)
        ),
        "exceeds the 3 training images",
    ),
    "other settings": (_other_settings, "holds a run with other settings (--width: 2 -> 1)."),
    "corrupt run_config.json": (_corrupt_run_config, "is not the JSON training wrote"),
    "corrupt dataset_spec.json": (_corrupt_dataset_spec, "is not the dataset spec training wrote"),
    "unusable checkpoints": (_unusable_checkpoints, "No usable checkpoint in"),
    "unwritable folder": (_under_a_file, "Not a directory"),
    "locked folder": (lambda tmp_path, config, _: config, "is in use by process"),
    "uneven batch split": (_three_replicas, "does not split evenly over the 3 replicas"),
}


@pytest.mark.parametrize("case", REFUSED_BEFORE_MEASURING)
def test_a_run_that_will_be_refused_is_refused_before_measuring(
    tmp_path, on_machine, monkeypatch, capsys, case
):
    """The command line's path with oneDNN and --precision=auto both to measure: the ERROR
    line comes first (the one a run that measures nothing gives), the cache stays empty."""
    prepare, expected = REFUSED_BEFORE_MEASURING[case]
    on_machine(MEASURES_BOTH)
    monkeypatch.delenv(machine.ONEDNN_VARIABLE, raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv(machine.CACHE_VARIABLE, str(cache))
    monkeypatch.setattr(onednn, "time_in_children", _no_measurement)
    monkeypatch.setattr(precision_choice, "time_training_steps", _no_measurement)
    config = prepare(tmp_path, _config(tmp_path, precision="auto"), monkeypatch)
    locked = case == "locked folder"
    with run_guard.hold_run_folder(config.model_dir) if locked else contextlib.nullcontext():
        assert onednn_start.before_tensorflow(config)  # nothing cached: measured next
        measure = functools.partial(onednn_start.measure_and_restart, config, True)
        assert modes.train(config, first=measure) == exit_codes.ERROR
        refused = capsys.readouterr().err
        # Without any measurement: oneDNN set by the user, a given precision.
        monkeypatch.setenv(machine.ONEDNN_VARIABLE, "1")
        given = dataclasses.replace(config, precision="float32")
        assert modes.train(given) == exit_codes.ERROR
    assert refused.startswith("ERROR: ") and refused.count("\n") == 1 and expected in refused
    assert capsys.readouterr().err == refused
    assert not cache.exists()


@pytest.mark.slow
def test_the_command_line_measures_onednn_once_and_trains_with_it(tmp_path):
    """main.py without TF_ENABLE_ONEDNN_OPTS and with an empty cache, for real.

    Where TensorFlow leaves oneDNN off (avx2-only CPUs) the two children time the step, the
    choice is printed and recorded, and the command restarts once if it turned oneDNN on;
    where TensorFlow turns oneDNN on itself nothing is measured or printed."""
    facts = machine.this_machine()
    model_dir = tmp_path / "run"
    environment = {k: v for k, v in os.environ.items() if k != machine.ONEDNN_VARIABLE}
    environment[machine.CACHE_VARIABLE] = str(tmp_path / "cache")
    process = subprocess.run(
        [sys.executable, "main.py", "--dataset=digits", "--smoke", "--epochs=1",
         f"--model_dir={model_dir}", "--precision=float32"],
        capture_output=True, text=True, env=environment, timeout=600,
        cwd=REPO,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr[-3000:]
    with open(run_folder.RunFolder(f"{model_dir}_smoke").run_config) as stream:
        recorded = json.load(stream)["speed_choices"]["onednn"]
    if facts.onednn_on_by_default:
        assert recorded == {"enabled": True, "reason": "TensorFlow's default", "seconds": {}}
        assert "oneDNN:" not in process.stdout
        return
    state = "on" if recorded["enabled"] else "off"
    assert recorded["reason"] == "measured" and sorted(recorded["seconds"]) == ["off", "on"]
    assert process.stdout.count(f"oneDNN: {state} (measured on this CPU") == 1
    assert process.stdout.count("Restarting with oneDNN on") == int(recorded["enabled"])
    # Trained once, in the restarted command if there was one.
    assert process.stdout.count("Precision: float32 (--precision).") == 1
    assert os.path.exists(run_folder.RunFolder(f"{model_dir}_smoke").final_model)
