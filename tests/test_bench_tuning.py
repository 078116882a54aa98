"""bench/auto_tuning.py: what the start-up choices cost, measured as main.py makes them."""

from __future__ import annotations

import os

import auto_tuning
from test_bench import run_script

from mixmo_tf.tuning import machine, onednn


def test_auto_tuning_line_times_the_choices_and_restores_the_environment(capsys, monkeypatch):
    children = []

    def time_in_children(config, precisions):
        children.append((config.batch_size, precisions))
        return {False: {name: 2.0 for name in precisions}, True: {name: 1.0 for name in precisions}}

    monkeypatch.setattr(onednn, "time_in_children", time_in_children)
    monkeypatch.setenv(machine.ONEDNN_VARIABLE, "1")
    (line,) = run_script(
        auto_tuning, capsys, "--networks=10-1", "--batch_size=8", "--batch_repetitions=2",
        "--time_both",
    )  # fmt: skip
    assert os.environ[machine.ONEDNN_VARIABLE] == "1"
    assert (line["network"], line["batch_size"], line["batch_repetitions"]) == ("WRN-10-1", 8, 2)
    assert line["precisions_timed"] == ["float32", "mixed_bfloat16"]
    assert sorted(line["precision_step_s"]) == line["precisions_timed"]
    assert all(seconds > 0 for seconds in line["precision_step_s"].values())
    assert line["precision_timing_s"] > max(line["precision_step_s"].values())
    # CIFAR-100 at B=8, b=2: 12,500 steps of the float32 step per epoch.
    assert line["epoch_s_float32"] == 12500 * line["precision_step_s"]["float32"]
    facts = machine.this_machine()
    assert line["auto_times_precisions"] == facts.has_bfloat16_instructions
    paid = line["precision_timing_s"] if facts.has_bfloat16_instructions else 0.0
    assert line["auto_cost_s"] == line["onednn_choice_s"] + paid
    assert line["cost_over_epoch"] == line["auto_cost_s"] / line["epoch_s_float32"]
    # Where TensorFlow leaves oneDNN off the choice is timed (here by the stand-in children).
    if facts.onednn_on_by_default:
        assert line["onednn_choice"]["reason"] == "TensorFlow's default" and not children
    else:
        timed = ("float32", "mixed_bfloat16") if facts.has_bfloat16_instructions else ("float32",)
        assert children == [(8, timed)]
        assert line["onednn_choice"] == {
            "enabled": True,
            "reason": "measured",
            "seconds": {"off": 2.0, "on": 1.0},
        }
