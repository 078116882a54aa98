"""Running the bench/ scripts in-process in a test: flags parsed on fresh FlagValues (so the
scripts never share absl's global FLAGS), JSON lines read back and checked."""

from __future__ import annotations

import json
from types import ModuleType

from absl import flags

# Fields of the environment every line of a TensorFlow run holds.
ENVIRONMENT_KEYS = {"tensorflow", "keras", "intra_op_threads", "cores", "cpu_model", "command"}
# A bench script's flags for a run of seconds: WRN-10-1, 8 slots, one warm-up step.
TINY_RUN = ("--networks=10-1", "--batch_size=8", "--warmup_steps=1")


def parsed_flags(module: ModuleType, *args: str) -> flags.FlagValues:
    """A bench script's flags, parsed from `args` on fresh FlagValues."""
    values = flags.FlagValues()
    module.define_flags(values)
    values(["bench", *args])
    return values


def run_script(module: ModuleType, capsys, *args: str) -> list[dict]:
    """Runs a bench script's `run` on fresh flags; returns its JSON lines, checked."""
    module.run(parsed_flags(module, *args))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines
    for line in lines:
        assert ENVIRONMENT_KEYS <= line.keys()
        assert line["cores"] >= 1 and line["command"].startswith("python ")
    return lines
