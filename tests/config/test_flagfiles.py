"""The flagfiles of flags/ read without absl give the settings absl gives main.py."""

from __future__ import annotations

import glob
import os

import pytest
from absl import flags
from helpers.paths import FLAGS_DIR

from mixmo_tf.cli import flags as mixmo_flags
from mixmo_tf.config.flagfiles import flagfile_settings
from mixmo_tf.config.settings import Config

FLAGFILES = sorted(glob.glob(os.path.join(FLAGS_DIR, "*.flags")))


def test_there_are_flagfiles_to_check():
    assert len(FLAGFILES) >= 26


@pytest.mark.parametrize("path", FLAGFILES, ids=os.path.basename)
def test_a_flagfile_reads_as_absl_reads_it(path):
    values = flags.FlagValues()
    mixmo_flags.define_flags(values)
    values(["main.py", f"--flagfile={path}"])
    settings = flagfile_settings(path)
    assert sorted(settings) == sorted(mixmo_flags.given_fields(values))
    assert Config(**settings) == mixmo_flags.config_from_flags(values)


def test_booleans_integers_and_lists_take_absls_forms(tmp_path):
    path = tmp_path / "all.flags"
    path.write_text("# a comment\n\n--nojit_compile\n--lr_decay_epochs=101,201\n--seed=3\n")
    assert flagfile_settings(str(path)) == {
        "jit_compile": False,
        "lr_decay_epochs": (101, 201),
        "seed": 3,
    }


@pytest.mark.parametrize(
    "line", ["--flagfile=other.flags", "--smoke", "dataset=cifar10", "--seed=three", "--seed"]
)
def test_a_line_absl_would_read_otherwise_is_refused(tmp_path, line):
    path = tmp_path / "odd.flags"
    path.write_text(f"--dataset=cifar10\n{line}\n")
    with pytest.raises(ValueError, match=rf"odd.flags:2: '{line}' is not --<Config field>"):
        flagfile_settings(str(path))
