"""Parses main.py's flags in-process, on fresh FlagValues, into a Config."""

from __future__ import annotations

from absl import flags

from mixmo_tf.cli import flags as mixmo_flags
from mixmo_tf.config import Config


def parse(*args: str) -> Config:
    """Config from command-line args, as main.py would build it."""
    values = flags.FlagValues()
    mixmo_flags.define_flags(values)
    values(["main.py", *args])
    return mixmo_flags.config_from_flags(values)
