"""`main.py --help` lists the MixMo flags grouped by topic (model, method, data, ...)."""

from __future__ import annotations

import re
import sys

import pytest
from absl import flags

from mixmo_tf.cli import app
from mixmo_tf.cli import flags as mixmo_flags
from mixmo_tf.config.ranges import TEMPERATURE
from mixmo_tf.config.settings import recorded_fields, valid_range


def test_grouped_help_lists_every_flag_once_under_its_topic():
    values = flags.FlagValues()
    mixmo_flags.define_flags(values)
    text = mixmo_flags.grouped_help(values)
    listed = re.findall(r"^  --(\w+)$", text, flags=re.MULTILINE)
    # Every flag main.py defines: one per Config field, the modes' own flags.
    assert sorted(listed) == sorted(values)
    assert {field.name for field in recorded_fields()} <= set(listed)
    assert "dataset_spec" not in listed  # read from the data, not chosen
    topics = re.findall(r"^(\w+):$", text, flags=re.MULTILINE)
    assert topics == [
        "model",
        "method",
        "data",
        "optimisation",
        "run",
        "evaluation",
        "serving",
        "import",
    ]
    model_section = text.split("\nmethod:")[0]
    assert "--backbone" in model_section and "preact_resnet" in model_section
    assert "(default: 'wrn')" in model_section


def test_main_help_prints_the_groups(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["main.py", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        app.run()
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--helpfull lists every flag" in out and "\noptimisation:\n" in out


def test_help_shows_the_range_of_every_number():
    values = flags.FlagValues()
    mixmo_flags.define_flags(values)
    text = " ".join(mixmo_flags.grouped_help(values).split())
    for field in recorded_fields():
        valid = valid_range(field.name)
        if valid is not None:
            assert f"Range: {valid}. (default:" in text.split(f"--{field.name} ", 1)[1], field.name
    assert f"Range: {TEMPERATURE}." in text.split("--temperature ", 1)[1]
    assert (
        "--depth WRN depth, 6n+4 up to 202 (28 in the paper); --backbone=wrn only. Range: [1, 1000]"
        in text
    )
