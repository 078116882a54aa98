"""What reading a checkpoint back to check it costs, against restoring it and saving it.

Resume, evaluation, export and prediction from a run check its newest checkpoint before
using it (`mixmo_tf.training.checkpoints.unusable_reason`: every float tensor read back and
tested for NaN or Inf), so a truncated or non-finite one is passed over by name. This times
that check against the two things it sits beside: restoring the same checkpoint into the
model (what a resume does next) and saving it (what a run does every epoch).

For each network: the compiled training model (weights, batch-norm statistics, SGD momentum
slots, as a run checkpoints them) is saved once in a temporary folder, then the check, the
restore and a save are timed in interleaved rounds (`harness.interleaved_medians`). The files
were just written, so they are read from the page cache: a cold read from disk adds the same
I/O to the check and the restore. One JSON line per network, with the check's time as a
share of the restore's.

Example: python bench/checkpoint_check.py --networks=28-10,16-4
"""

from __future__ import annotations

import glob
import os
import tempfile

import harness
from absl import flags

from mixmo_tf.models.build import build_model
from mixmo_tf.training import checkpoints

_MIB = 2**20


def define_flags(values: flags.FlagValues) -> None:
    """Defines this script's flags on `values`."""
    flags.DEFINE_list(
        "networks",
        ["28-10", "16-4"],
        "WRNs as depth-width (M=2, CIFAR-100's shapes); 28-10 is the paper's.",
        flag_values=values,
    )
    flags.DEFINE_integer("rounds", 5, "Timed rounds; medians are reported.", flag_values=values)
    flags.DEFINE_integer("warmup_rounds", 1, "Untimed rounds first.", flag_values=values)


def measure(network: str, rounds: int, warmup_rounds: int, folder: str) -> dict:
    """The line of one network: its checkpoint's size and the three medians."""
    config = harness.bench_config(network, members=2, precision="float32")
    model = build_model(config)
    manager = checkpoints.checkpoint_manager(model, folder)
    path = checkpoints.save(manager, 1)

    def check() -> None:
        assert checkpoints.unusable_reason(path) is None

    def restore() -> None:
        checkpoints.load_checkpoint(model, path, with_optimizer=True)

    def save() -> None:
        checkpoints.save(manager, 1)

    timings = harness.interleaved_medians(
        {"check": check, "restore": restore, "save": save}, warmup_rounds, rounds
    )
    size = sum(os.path.getsize(name) for name in glob.glob(f"{path}.*"))
    return {
        "bench": "checkpoint_check",
        "network": harness.network_name(network),
        "members": config.num_members,
        "checkpoint_mib": round(size / _MIB, 1),
        **{f"{name}_median_s": timing["median_s"] for name, timing in timings.items()},
        "check_over_restore": timings["check"]["median_s"] / timings["restore"]["median_s"],
        "check_over_save": timings["check"]["median_s"] / timings["save"]["median_s"],
        "rounds": rounds,
    }


def run(values: flags.FlagValues) -> None:
    """One line per network of --networks."""
    for network in values.networks:
        with tempfile.TemporaryDirectory(prefix="checkpoint_check_") as folder:
            harness.emit(measure(network, values.rounds, values.warmup_rounds, folder))


if __name__ == "__main__":
    harness.run_script(define_flags, run)
